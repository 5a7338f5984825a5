"""SAM 3's post-processing kernels (mask NMS, connected components), computed here instead of fetched from the hub.

transformers' SAM 3 video model de-duplicates detections (mask NMS) and fills small holes / removes small
specks in its masks with ``kernels-community/cv-utils``, a compiled kernel that the ``kernels`` package
downloads from the Hugging Face hub at the first frame and runs. streammask loads weights as safetensors
only and runs no code from the hub, so :func:`install_local_kernels` gives the model :class:`LocalCvUtils`
instead: the same two calls, in torch (greedy NMS on the model's IoU matrix) and OpenCV (8-connected
components, as ``cc_torch``), on the masks the model hands over (288x288 low-resolution logits).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LocalCvUtils", "install_local_kernels"]


class LocalCvUtils:
    """``generic_nms`` and ``cc_2d`` of ``kernels-community/cv-utils`` in torch + OpenCV."""

    @staticmethod
    def generic_nms(ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                    use_iou_matrix: bool = True) -> torch.Tensor:
        """Greedy non-maximum suppression on a precomputed IoU matrix.

        Args:
            ious: ``(N, N)`` pairwise IoU of the candidates.
            scores: ``(N,)`` their scores.
            iou_threshold: a candidate is dropped when its IoU with a kept, higher-scoring one is above this.

        Returns:
            ``(K,)`` int64 indices of the kept candidates, highest score first.
        """
        order = torch.argsort(scores, descending=True, stable=True)
        over = (ious[order][:, order] > iou_threshold).cpu().numpy()
        keep: list[int] = []
        for i in range(len(order)):
            if not any(over[i, j] for j in keep):
                keep.append(i)
        return order[torch.tensor(keep, dtype=torch.long, device=order.device)]

    @staticmethod
    def cc_2d(mask: torch.Tensor, get_counts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """8-connected components of binary masks.

        Args:
            mask: ``(N, 1, H, W)`` uint8 (0 / 1).

        Returns:
            ``(labels, counts)``, both ``(N, 1, H, W)`` int32: each pixel's component label (0 for background)
            and the pixel count of its component (0 for background).
        """
        import cv2

        arr = mask.to("cpu", torch.uint8).numpy()
        labels = np.zeros(arr.shape, np.int32)
        counts = np.zeros(arr.shape, np.int32)
        for i in range(arr.shape[0]):
            n, lab, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(arr[i, 0]), connectivity=8)
            area = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
            area[0] = 0
            labels[i, 0] = lab
            counts[i, 0] = area[lab]
        return (torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device))


def install_local_kernels(modeling_module) -> None:
    """Give transformers' SAM 3 video module :class:`LocalCvUtils` as its cv-utils kernel, so it never
    fetches ``kernels-community/cv-utils`` from the hub (the module caches the kernel in a global)."""
    if not isinstance(getattr(modeling_module, "cv_utils_kernel", None), LocalCvUtils):
        modeling_module.cv_utils_kernel = LocalCvUtils()
