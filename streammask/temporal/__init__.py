"""Time: temporal smoothing of masks, motion between frames, and running the model on key frames only.

* :mod:`.smoothers` — one explicit state object per smoothing method (:func:`make_temporal`);
* :mod:`.flow` — optical flow, warping and scene cuts, shared by the ``flow`` smoother and the reducer;
* :mod:`.keyframes` — ``--stride`` / ``--skip-static``: the model on key frames, masks carried between.
"""

from .flow import DEFAULT_CUT_THRESHOLD, FLOW_ALGORITHMS, OpticalFlow, SceneCutDetector, small_frames, thumbnails, warp
from .keyframes import REDUCE_PARAMS, WorkReducer, psnr
from .smoothers import LOGIT_EPS, METHOD_PARAMS, TEMPORAL_METHODS, TEMPORAL_PARAMS, EmaSmoother, FlowSmoother, HysteresisSmoother, IdentitySmoother, MeanSmoother, MedianSmoother, TemporalSmoother, make_temporal, smoother_for

__all__ = ["TEMPORAL_METHODS", "TEMPORAL_PARAMS", "METHOD_PARAMS", "LOGIT_EPS", "make_temporal", "smoother_for",
           "TemporalSmoother", "IdentitySmoother", "EmaSmoother", "MedianSmoother", "MeanSmoother",
           "HysteresisSmoother", "FlowSmoother", "SceneCutDetector", "OpticalFlow", "small_frames", "thumbnails", "warp",
           "FLOW_ALGORITHMS", "DEFAULT_CUT_THRESHOLD", "REDUCE_PARAMS", "WorkReducer", "psnr"]
