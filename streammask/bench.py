"""Throughput benchmark: model only vs end to end vs a seed-style per-frame loop.

:func:`run_benchmark` measures, on the same clip, the same model and the same
device, in one run:

* ``model_only_fps``: host->device copy + preprocess + model at the chosen batch
  size, on frames decoded beforehand;
* ``end_to_end_fps``: :func:`streammask.process_video` with decode, inference,
  post-processing and all three outputs (mask, heatmap, matte) on their threads;
* ``seed_loop_fps``: a loop in the style of the seed nodes (``CLIPSegProcessor``
  + model per frame, the prompt re-encoded every frame, no outputs written);
* ``stages_s``: seconds per stage, measured one stage at a time on the decoded
  frames (CUDA synchronised around each stage): decode, host->device,
  preprocess, model, post-process, device->host, and each output's encoder;
* peak host RSS, peak GPU memory and GPU utilisation (CUDA only), the device
  and the versions of everything involved.

Without ``model`` it builds the full-size ``CIDAS/clipseg-rd64-refined``
architecture with random weights (same compute as the real model, no network).

With SAM 3 (a SAM 3 ``model``, or ``segmenter="sam3"``: the ``facebook/sam3`` architecture with random
weights that keeps every detection), :func:`run_sam3_benchmark` measures model only and end to end per
object count, with the objects tracked per frame; there is no seed-style loop for it (the report says
why). ``benchmarks/sam3_bench.py`` uses the same measurements (:func:`sam3_model_only`,
:func:`sam3_end_to_end`, :func:`save_random_sam3`).

Command line (wired as ``streammask bench``; also ``python benchmarks/bench.py``)::

    streammask bench INPUT [--frames N] [--batch-size B] [--device D] [--dtype T]
                           [--model M] [--json PATH] [--seed-frames N]
    streammask bench INPUT --segmenter sam3 [--random-size full|tiny] [--sam3-objects 0,1,4]
    streammask bench INPUT --model facebook/sam3 [--sam3-objects 16]
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from . import __version__
from .errors import ParameterError
from .io.video import probe, read_batches
from .io.writers import FORMATS as OUT_FORMATS, make_writer
from .model.batch_size import choose_batch_size
from .model.clipseg import load_clipseg, resolve_device
from .model.sam3 import SAM3_PARAMS, Sam3Segmenter, check_sam3_load_options, is_sam3_model, load_sam3
from .model.threads import torch_threads
from .pipeline.core import MaskPipeline
from .pipeline.run import RunSummary, process_video
from .testing import NullSegmenter, save_random_clipseg, save_random_sam3_video
from .variants import get_variant

__all__ = ["run_benchmark", "run_encoder_benchmark", "run_sam3_benchmark", "format_markdown",
           "format_encoder_markdown", "format_sam3_markdown", "resolve_segmenter", "parse_object_counts",
           "save_random_sam3", "load_sam3_for_objects", "sam3_model_only", "sam3_end_to_end", "STAGES",
           "SEGMENTERS", "RANDOM_SIZES", "SAM3_EVERY_DETECTION", "SAM3_SEED_LOOP_SKIPPED"]

PROMPT = "person"
VARIANT = "soft"
OUTPUTS = ("mask", "heatmap", "matte")
BENCH_FORMATS = {"mask": "mp4", "heatmap": "mp4", "matte": "prores"}
#: keys of ``stages_s``, in pipeline order
STAGES = ("decode", "host_to_device", "preprocess", "model", "postprocess", "device_to_host",
          "encode_mask", "encode_heatmap", "encode_matte")
#: ``segmenter`` choices: ``auto`` = SAM 3 when ``model``'s config says so, else CLIPSeg; ``null``: no model
SEGMENTERS = ("auto", "clipseg", "sam3", "null")
#: ``random_size`` choices (the random-weight model built without ``model``): ``full`` = the real architecture (the
#: real model's compute), ``tiny`` = the tests' model (measures the pipeline around the model, not the model)
RANDOM_SIZES = ("full", "tiny")


# -- measurements ---------------------------------------------------------------------------------------------------

def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``; psutil when installed)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mb = kb / 1024.0 if sys.platform != "darwin" else kb / 2**20  # bytes on macOS
    try:  # psutil is not a dependency; use it when it happens to be there
        import psutil

        info = psutil.Process().memory_info()
        peak = getattr(info, "peak_wset", None)  # Windows
        if peak:
            mb = max(mb, peak / 2**20)
    except Exception:
        pass
    return mb


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs`` 5); ``False`` where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float | None:
    """``VmHWM`` of ``/proc/self/status`` (peak RSS since the last reset), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    import av
    import transformers

    return {
        "streammask": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "av": av.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
    }


class _GpuSampler:
    """Samples ``torch.cuda.utilization`` (needs NVML) in a thread; ``mean``/``max`` are ``None`` without it."""

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self.device = device
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:
            return None

    def __enter__(self) -> "_GpuSampler":
        if self.device.type == "cuda" and self._read() is not None:
            self._thread = threading.Thread(target=self._run, name="streammask-gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None


class _Stages:
    """Accumulates seconds per stage; synchronises CUDA around each timed block."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {k: 0.0 for k in STAGES}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def _validate_int(name: str, value: Any, minimum: int, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(name, value, f"an integer >= {minimum}")
    return value


def _check_random_size(random_size: str, model: str | os.PathLike | None) -> None:
    if random_size not in RANDOM_SIZES:
        raise ParameterError("random_size", random_size, "one of " + ", ".join(repr(r) for r in RANDOM_SIZES))
    if model is not None and random_size != "full":
        raise ParameterError("random_size", random_size, f"'full' (the default) with a model given "
                             f"({os.fspath(model)!r}): the size picks the random-weight model built without one")


def resolve_segmenter(segmenter: str, model: str | os.PathLike | None) -> str:
    """The benchmark to run: ``"clipseg"``, ``"sam3"`` or ``"null"``.

    ``auto`` is SAM 3 when ``model``'s ``config.json`` says so (:func:`~streammask.model.sam3.is_sam3_model`),
    CLIPSeg otherwise (and without ``model``: the random-weight CLIPSeg). An explicit ``clipseg`` / ``sam3`` must
    agree with ``model`` when one is given.

    Raises:
        ParameterError: ``segmenter`` is not one of :data:`SEGMENTERS`, or contradicts ``model``.
    """
    if segmenter not in SEGMENTERS:
        raise ParameterError("segmenter", segmenter, "one of " + ", ".join(repr(s) for s in SEGMENTERS))
    if segmenter == "null":
        return "null"
    if model is None:
        return "clipseg" if segmenter == "auto" else segmenter
    found = "sam3" if is_sam3_model(model) else "clipseg"
    if segmenter not in ("auto", found):
        raise ParameterError("segmenter", segmenter, f"'auto' or {found!r} with --model {os.fspath(model)!r} (its "
                             f"config says it is a {'SAM 3' if found == 'sam3' else 'CLIPSeg'} model)")
    return found


def parse_object_counts(value: str | Sequence[int] | None) -> list[int] | None:
    """SAM 3's object counts from ``"0,1,4"`` (the command line) or a sequence of ints; ``None`` stays ``None``.

    Raises:
        ParameterError: not integers from 0 to the ``sam3_max_objects`` maximum, or empty.
    """
    if value is None:
        return None
    top = SAM3_PARAMS["sam3_max_objects"].max
    allowed = f"a comma-separated list of integers from 0 (the detector alone) to {top}, e.g. '0,1,4'"
    items = value.split(",") if isinstance(value, str) else list(value)
    counts = []
    for item in items:
        try:
            n = int(item.strip()) if isinstance(item, str) else item
        except ValueError:
            raise ParameterError("sam3_objects", value, allowed) from None
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= top:
            raise ParameterError("sam3_objects", value, allowed)
        counts.append(n)
    if not counts:
        raise ParameterError("sam3_objects", value, allowed)
    return counts


def _check_options_for(kind: str, *, segmenter: str, seed_frames: int | None, mask_heatmap: bool,
                       sam3_objects: Sequence[int] | None) -> None:
    """Refuse :func:`run_benchmark`'s options that the resolved ``kind`` of model has no use for."""
    if kind == "null":
        raise ParameterError("segmenter", segmenter, "'auto', 'clipseg' or 'sam3' (the null segmenter's benchmark "
                             "is run_encoder_benchmark)")
    if kind == "sam3" and seed_frames is not None:
        raise ParameterError("seed_frames", seed_frames, "None with SAM 3 (it has no seed-style loop)")
    if kind == "sam3" and mask_heatmap:
        raise ParameterError("mask_heatmap", mask_heatmap, "False with SAM 3 (its end-to-end pass writes all three "
                             "outputs only)")
    if kind == "clipseg" and sam3_objects is not None:
        raise ParameterError("sam3_objects", sam3_objects, "None with CLIPSeg (object counts are SAM 3's: "
                             "--segmenter sam3 or a SAM 3 --model)")


def _clipseg_model(tmp: Path, model: str | os.PathLike | None, random_size: str) -> tuple[str, str]:
    """CLIPSeg's model directory and its label: ``model``, or a random-weight one built in ``tmp``."""
    if model is not None:
        return os.fspath(model), os.fspath(model)
    full = random_size == "full"
    path = str(save_random_clipseg(tmp / f"clipseg-{random_size}-random", full_size=full))
    return path, ("rd64-refined architecture, random weights (full size)" if full else
                  "tiny CLIPSeg, random weights (the tests' model: the pipeline's cost, not the model's)")


# -- the benchmark --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _ClipSegPasses:
    """The model-side passes of :func:`run_benchmark` over frames already decoded: warm-up, the seed-style loop,
    model only, and stage by stage. They share the loaded model, the frames and the ``soft`` variant's
    preprocessing."""

    seg: Any
    pipe: MaskPipeline
    clip: np.ndarray
    pts: list[int]
    batch_size: int
    stages: "_Stages"
    variant: Any
    vparams: dict
    prompts: list[str]
    prep_mode: str
    prep_size: int

    @classmethod
    def build(cls, seg, clip: np.ndarray, pts: list[int], batch_size: int, stages: "_Stages") -> "_ClipSegPasses":
        variant = get_variant(VARIANT)
        vparams = variant.validate({})
        return cls(seg, MaskPipeline(seg, prompt=PROMPT, variants=(VARIANT,)), clip, pts, batch_size, stages, variant,
                   vparams, list(variant.prompts(PROMPT, vparams)), variant.preprocess,
                   variant.model_size(vparams, tuple(clip.shape[1:3]), seg.size))

    def batches(self) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(0, len(self.clip), self.batch_size):
            yield i, self.clip[i:i + self.batch_size]

    def warm_up(self, cuda: bool) -> None:
        """Text embedding, kernels, split-path check and colormap tables, outside every timing: a whole batch on
        CUDA (kernel selection per shape), one frame on the CPU (nothing to select there)."""
        warm = self.clip[:self.batch_size] if cuda else self.clip[:1]
        x = self.pipe.to_device(warm)
        r = self.pipe.process(x)[VARIANT]
        self.pipe.render(x, r, OUTPUTS, host_frames=warm)
        self.pipe.reset()
        self.stages.sync()

    def seed_loop_seconds(self, model_dir: str | os.PathLike, n_seed: int) -> float:
        """The seed nodes' way, on the first ``n_seed`` frames: the checkpoint as they load it (every vision layer,
        not quantized), processor + model per frame, text encoded per frame, nothing written; one frame of
        warm-up outside the timing."""
        from PIL import Image
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        dev, dtype = self.seg.device, self.seg.dtype
        processor = CLIPSegProcessor.from_pretrained(model_dir)
        net = CLIPSegForImageSegmentation.from_pretrained(model_dir, use_safetensors=True).to(device=dev,
                                                                                             dtype=dtype).eval()

        def step(f: np.ndarray) -> None:
            inputs = processor(text=PROMPT, images=Image.fromarray(f), padding="max_length", return_tensors="pt")
            inputs = {k: v.to(dev) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            torch.sigmoid(net(**inputs).logits).float().cpu().numpy()

        step(self.clip[0])
        self.stages.sync()
        t0 = time.perf_counter()
        for f in self.clip[:n_seed]:
            step(f)
        self.stages.sync()
        return time.perf_counter() - t0

    def model_only_seconds(self) -> tuple[float, "_GpuSampler"]:
        """Host->device + preprocess + model over every batch, no per-stage synchronisation."""
        with _GpuSampler(self.seg.device) as gpu:
            self.stages.sync()
            t0 = time.perf_counter()
            for _, chunk in self.batches():
                x = self.pipe.to_device(chunk)
                self.seg.segment(x, self.prompts, preprocess=self.prep_mode, size=self.prep_size)
            self.stages.sync()
            seconds = time.perf_counter() - t0
        return seconds, gpu

    def time_stages(self, info, tmp: Path, encoder_preset: str) -> None:
        """Stage by stage (into ``self.stages``), each output encoded serially to a temporary file."""
        state: dict = {}
        writers = {kind: make_writer(kind, BENCH_FORMATS[kind], tmp / f"stages.{kind}", width=info.width,
                                     height=info.height, rate=info.frame_rate, time_base=info.time_base,
                                     preset=encoder_preset)
                   for kind in OUTPUTS}
        st = self.stages
        try:
            for i, chunk in self.batches():
                with st.time("host_to_device"):
                    x = self.pipe.to_device(chunk)
                with st.time("preprocess"):
                    pv = self.seg.preprocess(x, mode=self.prep_mode, size=self.prep_size)
                with st.time("model"):
                    logits = self.seg.logits(pv, self.prompts)
                with st.time("postprocess"):
                    res = self.variant.postprocess(logits, x, PROMPT, self.vparams, state)
                with st.time("device_to_host"):
                    rendered = self.pipe.render(x, res, OUTPUTS, host_frames=chunk)
                for kind in OUTPUTS:
                    with st.time(f"encode_{kind}"):
                        writers[kind].write(rendered[kind], self.pts[i:i + self.batch_size])
            for kind in OUTPUTS:
                with st.time(f"encode_{kind}"):
                    writers[kind].close()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise


def run_benchmark(input: str | os.PathLike, *, frames: int = 48, batch_size: int | None = None, device: str = "auto",
                  dtype: str = "auto", model: str | os.PathLike | None = None,
                  seed_frames: int | None = None, mask_heatmap: bool = False,
                  encoder_preset: str = "fast", segmenter: str = "auto", random_size: str = "full",
                  sam3_objects: Sequence[int] | None = None, channels_last: bool = False, compile: bool = False,
                  threads: int | None = None) -> dict[str, Any]:
    """Benchmark streammask on one clip; returns a JSON-ready dict.

    With a SAM 3 model (``segmenter="sam3"``, or ``"auto"`` and a SAM 3 ``model``) this is
    :func:`run_sam3_benchmark`; the rest of this docstring is CLIPSeg's.

    Args:
        input: video file.
        frames: frames to use (the first ``frames`` of the clip, fewer if it is shorter).
        batch_size: model batch size (model-only, stage timing and end to end); ``None``:
            what ``streammask run`` picks (:func:`~streammask.model.batch_size.choose_batch_size`: 1 on a
            CPU, from free memory on CUDA).
        device, dtype: as :func:`~streammask.model.load_clipseg`.
        model: model id or directory; ``None`` builds the full-size rd64-refined
            architecture with random weights in a temporary directory.
        seed_frames: frames for the seed-style per-frame loop (default: all).
        mask_heatmap: also run end to end with the mask and heatmap outputs only
            (``end_to_end_mask_heatmap_fps``; ``None`` when not run).
        encoder_preset: x264 preset of the H.264 mask and heatmap outputs.
        segmenter: one of :data:`SEGMENTERS` but ``null`` (that is :func:`run_encoder_benchmark`).
        random_size: one of :data:`RANDOM_SIZES`: the random-weight model built without ``model``.
        sam3_objects: SAM 3's object counts (:func:`run_sam3_benchmark`); refused with CLIPSeg.
        channels_last, compile: as :func:`~streammask.model.load_clipseg` (streammask's passes; not the seed loop).
        threads: the model's CPU threads in every pass (``None``: torch's count for the model-only and
            seed-style passes, tuned while the end-to-end pass runs, as ``streammask run`` does).

    Returns:
        A dict with at least ``end_to_end_fps``, ``model_only_fps``, ``seed_loop_fps``,
        ``stages_s`` (seconds per stage, keys :data:`STAGES`), ``peak_rss_mb``,
        ``device`` and ``versions``; ``peak_gpu_mem_mb`` and ``gpu_util_*`` are
        ``None`` off CUDA (or without NVML for the utilisation).
    """
    kind = resolve_segmenter(segmenter, model)
    _check_options_for(kind, segmenter=segmenter, seed_frames=seed_frames, mask_heatmap=mask_heatmap,
                       sam3_objects=sam3_objects)
    if kind == "sam3":
        return run_sam3_benchmark(input, frames=frames, batch_size=batch_size, device=device, dtype=dtype,
                                  model=model, random_size=random_size, objects=sam3_objects,
                                  encoder_preset=encoder_preset, channels_last=channels_last, compile=compile,
                                  threads=threads)
    frames = _validate_int("frames", frames, 1)
    batch_size = _validate_int("batch_size", batch_size, 1, nullable=True)
    seed_frames = _validate_int("seed_frames", seed_frames, 1, nullable=True)
    threads = _validate_int("threads", threads, 1, nullable=True)
    _check_random_size(random_size, model)
    info = probe(input)  # raises the usual one-line errors for a missing / invalid file

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streammask-bench-")))
        if threads is not None:
            stack.enter_context(torch_threads(threads))
        model_dir, model_label = _clipseg_model(tmp, model, random_size)
        seg = load_clipseg(model_dir, device=device, dtype=dtype, channels_last=channels_last, compile=compile)
        dev = seg.device
        if batch_size is None:
            batch_size = choose_batch_size(None, device=dev, frame_hw=(info.height, info.width), dtype=seg.dtype)
        cuda = dev.type == "cuda"
        stages = _Stages(dev)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        stack.enter_context(torch.no_grad())  # grad mode is restored on return

        # decode (timed alone, frames kept for the model-side measurements)
        host: list[np.ndarray] = []
        pts: list[int] = []
        with stages.time("decode"):
            for b in read_batches(input, batch_size=batch_size, max_frames=frames):
                host.append(np.asarray(b.frames))
                pts.extend(b.pts)
        clip = np.concatenate(host)
        n = len(clip)

        run = _ClipSegPasses.build(seg, clip, pts, batch_size, stages)
        run.warm_up(cuda)
        n_seed = min(seed_frames or n, n)
        seed_s = run.seed_loop_seconds(model_dir, n_seed)
        model_s, gpu_model = run.model_only_seconds()
        run.time_stages(info, tmp, encoder_preset)
        prep_size = run.prep_size

        # end to end, all three outputs
        hwm_reset = _reset_hwm()
        with _GpuSampler(dev) as gpu_e2e:
            summary = process_video(input, out_dir=tmp / "e2e", prompt=PROMPT, variants=(VARIANT,), outputs=OUTPUTS,
                                    segmenter=seg, batch_size=batch_size, max_frames=n, progress=False,
                                    encoder_preset=encoder_preset, threads=threads,
                                    **{f"{k}_format": v for k, v in BENCH_FORMATS.items()})
        e2e_hwm = _hwm_mb() if hwm_reset else None

        # optionally end to end again with the two H.264 outputs only (the GPU target without the ProRes matte)
        mh_fps = None
        if mask_heatmap:
            mh = process_video(input, out_dir=tmp / "e2e-mask-heatmap", prompt=PROMPT, variants=(VARIANT,),
                               outputs=("mask", "heatmap"), segmenter=seg, batch_size=batch_size, max_frames=n,
                               progress=False, mask_format=BENCH_FORMATS["mask"], heatmap_format=BENCH_FORMATS["heatmap"],
                               encoder_preset=encoder_preset, threads=threads)
            mh_fps = mh.frames / mh.seconds

    seed_fps = n_seed / seed_s
    model_fps = n / model_s
    e2e_fps = summary.frames / summary.seconds
    result: dict[str, Any] = {
        "input": os.fspath(input),
        "resolution": f"{clip.shape[2]}x{clip.shape[1]}",
        "frame_rate": str(info.frame_rate) if info.frame_rate else None,
        "frames": n,
        "seed_frames": n_seed,
        "batch_size": batch_size,
        "prompt": PROMPT,
        "variant": VARIANT,
        "outputs": {k: BENCH_FORMATS[k] for k in OUTPUTS},
        "encoder_preset": encoder_preset,
        "model": model_label,
        "model_input": f"{prep_size}x{prep_size}",
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if cuda else f" ({_cpu_model()})"),
        "dtype": seg.quantized or str(seg.dtype).replace("torch.", ""),
        "seed_loop_dtype": str(seg.dtype).replace("torch.", ""),
        "vision_layers": "{} of {}".format(*seg.vision_layers),
        "channels_last": bool(channels_last),
        "compile": bool(compile),
        "threads": threads,
        "model_only_fps": round(model_fps, 3),
        "end_to_end_fps": round(e2e_fps, 3),
        "seed_loop_fps": round(seed_fps, 3),
        "end_to_end_over_model_only": round(e2e_fps / model_fps, 3),
        "end_to_end_over_seed_loop": round(e2e_fps / seed_fps, 3),
        "end_to_end_mask_heatmap_fps": round(mh_fps, 3) if mh_fps else None,
        "end_to_end_mask_heatmap_over_model_only": round(mh_fps / model_fps, 3) if mh_fps else None,
        "stages_s": {k: round(v, 4) for k, v in stages.seconds.items()},
        "end_to_end_busy_s": {k: round(v, 4) for k, v in summary.stage_seconds.items()},
        "end_to_end_s": round(summary.seconds, 4),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "end_to_end_peak_rss_mb": round(e2e_hwm, 1) if e2e_hwm is not None else None,
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if cuda else None,
        "gpu_util_model_only_pct": gpu_model.mean,
        "gpu_util_end_to_end_pct": gpu_e2e.mean,
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return result


# -- SAM 3: model only and end to end by object count ---------------------------------------------------------------

SAM3_EVERY_DETECTION = dict(score_threshold_detection=0.0, new_det_thresh=0.0, det_nms_thresh=0.0)
"""``Sam3VideoConfig`` overrides that keep every detection: a random SAM 3 built with them tracks exactly
``sam3_max_objects`` objects from the first frame on, so the object count (SAM 3's cost grows with it) is
controlled."""

SAM3_SEED_LOOP_SKIPPED = ("not run: the seed nodes are ComfyUI CLIPSeg nodes and have no SAM 3 counterpart (SAM 3 "
                          "tracks objects across frames, so there is no stateless per-frame call to compare with)")


def save_random_sam3(path: str | os.PathLike, *, size: str = "full") -> Path:
    """A random-weight SAM 3 video model that keeps every detection (:data:`SAM3_EVERY_DETECTION`), saved to ``path``.

    ``size``: ``full`` = ``facebook/sam3``'s architecture (~860 M parameters, 1008x1008 input: the real model's
    compute), ``tiny`` = the tests' geometry (112x112 input, ~3 MB: the pipeline's cost, not the model's).
    """
    _check_random_size(size, None)
    if size == "full":
        return save_random_sam3_video(path, full_size=True, **SAM3_EVERY_DETECTION)
    return save_random_sam3_video(path, image_size=112, max_num_objects=64, **SAM3_EVERY_DETECTION)


def load_sam3_for_objects(model: str | os.PathLike, *, objects: Sequence[int], device: str = "auto",
                          dtype: str = "auto") -> Sam3Segmenter:
    """:func:`~streammask.model.sam3.load_sam3` with the cap at the largest of ``objects`` (0: the detector alone;
    each measurement then sets its own count, :func:`sam3_model_only` / :func:`sam3_end_to_end`: one load for
    every count)."""
    seg = load_sam3(model, device=device, dtype=dtype, sam3_max_objects=max(1, *objects))
    _set_objects(seg, max(objects))
    return seg


def _set_objects(seg: Sam3Segmenter, objects: int) -> None:
    seg.max_objects = objects  # read at every frame; 0 = the detector alone (the setting's floor is 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sam3_model_only(seg: Sam3Segmenter, frames: Sequence[torch.Tensor], *, objects: int,
                    prompt: str = PROMPT) -> dict[str, Any]:
    """SAM 3 model only: preprocess + one stream step per frame, on frames already decoded and on the device.

    One warm-up frame runs on a stream of its own first (outside the timing); the timed stream is new, so its
    first frame creates the objects, as a video's does.

    Args:
        seg: the model (:func:`load_sam3_for_objects`).
        frames: ``(1, 3, H, W)`` uint8 tensors on ``seg.device``, consecutive frames of one video.
        objects: the cap on objects tracked at once for this measurement (0: the detector alone).
        prompt: the text prompt.

    Returns:
        ``objects`` (the cap), ``frames``, ``seconds``, ``fps``, ``s_per_frame`` and the objects the tracker held
        after each frame: ``tracked_per_frame``, ``tracked_mean``, ``tracked_max``.
    """
    _set_objects(seg, objects)
    seg.open_stream().segment(frames[0], [prompt])  # warm-up
    stream = seg.open_stream()
    tracked: list[int] = []
    _sync(seg.device)
    t0 = time.perf_counter()
    for f in frames:
        stream.segment(f, [prompt])
        tracked.append(len(stream.session.obj_ids))
    _sync(seg.device)
    sec = time.perf_counter() - t0
    n = len(frames)
    return {"objects": objects, "frames": n, "seconds": round(sec, 4), "fps": round(n / sec, 4),
            "s_per_frame": round(sec / n, 4), "tracked_per_frame": tracked,
            "tracked_mean": round(sum(tracked) / n, 2), "tracked_max": max(tracked)}


def sam3_end_to_end(seg: Sam3Segmenter, input: str | os.PathLike, out_dir: str | os.PathLike, *, objects: int,
                    frames: int, batch_size: int | None = None, encoder_preset: str = "fast",
                    outputs: Sequence[str] = OUTPUTS, threads: int | None = None, **settings: Any) -> RunSummary:
    """SAM 3 end to end: :func:`~streammask.process_video` (decode, model, post-processing, ``outputs`` on their
    threads; mask and heatmap H.264, matte ProRes) on the first ``frames`` frames, at most ``objects`` tracked."""
    _set_objects(seg, objects)
    return process_video(input, out_dir=out_dir, prompt=PROMPT, variants=(VARIANT,), outputs=tuple(outputs),
                         segmenter=seg, batch_size=batch_size, max_frames=frames, progress=False,
                         encoder_preset=encoder_preset, threads=threads,
                         **{f"{k}_format": BENCH_FORMATS[k] for k in outputs}, **settings)


def _decode_to_device(input: str | os.PathLike, frames: int, device: torch.device) -> list[torch.Tensor]:
    clip: list[torch.Tensor] = []
    for b in read_batches(input, batch_size=8, max_frames=frames):
        for f in np.asarray(b.frames):
            clip.append(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].contiguous().to(device))
    return clip


def run_sam3_benchmark(input: str | os.PathLike, *, frames: int = 48, batch_size: int | None = None,
                       device: str = "auto", dtype: str = "auto", model: str | os.PathLike | None = None,
                       random_size: str = "full", objects: str | Sequence[int] | None = None,
                       encoder_preset: str = "fast", channels_last: bool = False, compile: bool = False,
                       threads: int | None = None) -> dict[str, Any]:
    """Benchmark SAM 3 on one clip, per object count; returns a JSON-ready dict (``mode = "sam3"``).

    For each count in ``objects``: model only (:func:`sam3_model_only`) and end to end (:func:`sam3_end_to_end`,
    all three outputs) on the first ``frames`` frames of the clip, with the objects tracked per frame. Without
    ``model`` the model is random-weight (:func:`save_random_sam3`) and keeps every detection, so the objects
    tracked equal the count asked ("controlled"); with ``model`` the count is a cap and the objects are what the
    model finds ("found by the model"). There is no seed-style loop for SAM 3 (:data:`SAM3_SEED_LOOP_SKIPPED`).

    Args:
        input: video file.
        frames: frames to use (the first ``frames`` of the clip, fewer if it is shorter).
        batch_size: end to end (frames go through SAM 3 one at a time; a batch groups decode and encode work);
            ``None``: what ``streammask run`` picks (4).
        device, dtype: as :func:`~streammask.model.sam3.load_sam3` (``int8`` is refused).
        model: SAM 3 id or directory; ``None`` builds one with random weights (``random_size``).
        random_size: ``full`` (``facebook/sam3``'s architecture) or ``tiny`` (the tests').
        objects: object counts (caps), e.g. ``[0, 1, 4]`` or ``"0,1,4"``; ``None``: ``[1]`` for a random model,
            the ``sam3_max_objects`` default (16) for ``model``.
        encoder_preset: x264 preset of the H.264 mask and heatmap outputs.
        channels_last, compile: refused (CLIPSeg's), as by ``streammask run``.
        threads: the model's CPU threads in both passes (``None``: torch's current count; fixed, not tuned, so
            the two passes are comparable).

    Raises:
        ParameterError: ``int8`` / ``channels_last`` / ``compile``, a bad count or size (before a model is built).
    """
    check_sam3_load_options(dtype=dtype, channels_last=channels_last, compile=compile)
    frames = _validate_int("frames", frames, 1)
    batch_size = _validate_int("batch_size", batch_size, 1, nullable=True)
    threads = _validate_int("threads", threads if threads is not None else torch.get_num_threads(), 1)
    counts = parse_object_counts(objects) or ([1] if model is None else [SAM3_PARAMS["sam3_max_objects"].default])
    _check_random_size(random_size, model)
    info = probe(input)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streammask-bench-sam3-")))
        stack.enter_context(torch_threads(threads))
        if model is None:
            model_dir = save_random_sam3(tmp / f"sam3-{random_size}", size=random_size)
            label = ("facebook/sam3 architecture, random weights (full size), every detection kept"
                     if random_size == "full" else "tiny SAM 3, random weights (the tests' model: the pipeline's "
                     "cost, not the model's), every detection kept")
        else:
            model_dir, label = model, os.fspath(model)
        seg = load_sam3_for_objects(model_dir, objects=counts, device=device, dtype=dtype)
        dev = seg.device
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        clip = _decode_to_device(input, frames, dev)
        rows = [_sam3_row(seg, input, clip, tmp / f"e2e-{i}", objects=n, batch_size=batch_size,
                          encoder_preset=encoder_preset, threads=threads)
                for i, n in enumerate(counts)]
    return {
        "mode": "sam3",
        "input": os.fspath(input),
        "resolution": f"{info.width}x{info.height}",
        "frame_rate": str(info.frame_rate) if info.frame_rate else None,
        "frames": len(clip),
        "batch_size": rows[0]["end_to_end_batch_size"],
        "prompt": PROMPT,
        "variant": VARIANT,
        "outputs": {k: BENCH_FORMATS[k] for k in OUTPUTS},
        "encoder_preset": encoder_preset,
        "model": label,
        "model_input": f"{seg.input_size}x{seg.input_size}",
        "mask_size": f"{seg.size}x{seg.size}",
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f" ({_cpu_model()})"),
        "dtype": str(seg.dtype).replace("torch.", ""),
        "threads": threads,
        "objects_source": ("controlled: random weights with every detection kept, the objects tracked are the count "
                           "asked" if model is None else
                           "found by the model: each count is a cap (sam3_max_objects), the objects tracked are what "
                           "the model finds in these frames, at most the cap"),
        "sam3": rows,
        "seed_loop_fps": None,
        "seed_loop_skipped": SAM3_SEED_LOOP_SKIPPED,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
        "load_avg": _load_avg(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _sam3_row(seg: Sam3Segmenter, input, clip: list[torch.Tensor], out_dir: Path, *, objects: int,
              batch_size: int | None, encoder_preset: str, threads: int) -> dict[str, Any]:
    """One object count: model only, then end to end (the objects tracked are counted in the model-only pass;
    the end-to-end pass runs the same frames with the same cap)."""
    with torch.no_grad(), _GpuSampler(seg.device) as gpu_model:
        mo = sam3_model_only(seg, clip, objects=objects)
    hwm_reset = _reset_hwm()
    with _GpuSampler(seg.device) as gpu_e2e:
        summary = sam3_end_to_end(seg, input, out_dir, objects=objects, frames=len(clip), batch_size=batch_size,
                                  encoder_preset=encoder_preset, threads=threads)
    hwm = _hwm_mb() if hwm_reset else None
    e2e_fps = summary.frames / summary.seconds
    return {
        "objects": objects,
        "tracked_mean": mo["tracked_mean"],
        "tracked_max": mo["tracked_max"],
        "tracked_per_frame": mo["tracked_per_frame"],
        "model_only_fps": round(mo["fps"], 4),
        "model_only_s_per_frame": mo["s_per_frame"],
        "end_to_end_fps": round(e2e_fps, 4),
        "end_to_end_s_per_frame": round(summary.seconds / summary.frames, 4),
        "end_to_end_over_model_only": round(e2e_fps / mo["fps"], 3),
        "end_to_end_frames": summary.frames,
        "end_to_end_batch_size": summary.batch_size,
        "end_to_end_busy_s": {k: round(v, 4) for k, v in summary.stage_seconds.items()},
        "end_to_end_s": round(summary.seconds, 4),
        "end_to_end_peak_rss_mb": round(hwm, 1) if hwm is not None else None,
        "gpu_util_model_only_pct": gpu_model.mean,
        "gpu_util_end_to_end_pct": gpu_e2e.mean,
    }


def format_sam3_markdown(r: dict[str, Any]) -> str:
    """The SAM 3 result (:func:`run_sam3_benchmark`) as markdown tables."""
    v = r["versions"]
    lines = [
        f"Clip `{r['input']}` ({r['resolution']}, {r['frames']} frames), model {r['model']}; input {r['model_input']}, "
        f"masks {r['mask_size']}, {r['device']}, {r['dtype']}, {r['threads']} threads, prompt {r['prompt']!r}, "
        f"end-to-end batch {r['batch_size']}, x264 preset {r['encoder_preset']}",
        "",
        "| objects (cap) | objects tracked per frame, mean / max | model only (preprocess + one stream step per "
        "frame), frames/s | s / frame | end to end (decode + model + post + mask, heatmap, matte), frames/s "
        "| s / frame | end to end / model only |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["sam3"]:
        lines.append(f"| {row['objects']} | {row['tracked_mean']:g} / {row['tracked_max']} | "
                     f"{_num(row['model_only_fps'], '{:.4f}')} | {_num(row['model_only_s_per_frame'])} | "
                     f"{_num(row['end_to_end_fps'], '{:.4f}')} | {_num(row['end_to_end_s_per_frame'])} | "
                     f"{_num(row['end_to_end_over_model_only'])} |")
    lines += [
        "",
        f"Objects: {r['objects_source']}.",
        f"Seed-style per-frame loop: {r['seed_loop_skipped']}.",
        "",
        "| memory / GPU | value |",
        "|---|---|",
        f"| peak host RSS (whole benchmark) | {_num(r['peak_rss_mb'], '{:.1f}')} MB |",
        "| peak host RSS (end-to-end runs) | "
        + " / ".join(_num(row["end_to_end_peak_rss_mb"], "{:.1f}") for row in r["sam3"]) + " MB |",
        f"| peak GPU memory allocated | {_num(r['peak_gpu_mem_mb'], '{:.1f} MB')} |",
        "",
        f"load average at the end: {r['load_avg']}" if r.get("load_avg") else "load average: n/a",
        "",
        f"streammask {v['streammask']}, Python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, "
        f"PyAV {v['av']}, CPU {v['cpu']} x{v['cpu_count']}" + (f", CUDA {v['cuda']}" if v.get("cuda") else ""),
    ]
    return "\n".join(lines)


# -- encoder-bound mode: a null segmenter ---------------------------------------------------------------------------


def _pipeline_only(input, tmp: Path, seg: NullSegmenter, outputs: tuple[str, ...], *, frames: int,
                   batch_size: int, name: str, encoder_preset: str = "fast"):
    return process_video(input, out_dir=tmp / name, prompt=PROMPT, variants=(VARIANT,), outputs=outputs,
                         segmenter=seg, batch_size=batch_size, max_frames=frames, progress=False, audio=False,
                         encoder_preset=encoder_preset, **{f"{k}_format": BENCH_FORMATS[k] for k in outputs})


def run_encoder_benchmark(input: str | os.PathLike, *, frames: int = 48, batch_size: int | None = 8,
                          device: str = "auto", encoder_preset: str = "fast") -> dict[str, Any]:
    """Encoder-bound benchmark: the pipeline with a :class:`NullSegmenter` vs each encoder alone.

    Measures, on the same clip:

    * ``decode_fps``: decoding to RGB alone;
    * ``pipeline_only_fps``: :func:`~streammask.process_video` with decode, post-processing and
      all three outputs (mask, heatmap: H.264; matte: ProRes 4444) on their threads, no model cost;
      ``pipeline_only_fps_mask_heatmap``: the same with mask and heatmap only;
    * ``encoder_standalone_fps``: ``{kind: fps}``, each output's writer (same size and format) fed
      frames rendered (and, for the matte, composed) beforehand, in a tight loop on one thread;
      only ``write`` + ``close`` are timed (colour conversion + encode + mux);
    * ``encoder_bound_ratio``: ``pipeline_only_fps / min(encoder_standalone_fps)`` (issue 7's
      target on a GPU: >= 0.9 with the ProRes matte), and ``encoder_bound_ratio_mask_heatmap``.

    Args:
        input: video file.
        frames: frames to use (the first ``frames`` of the clip).
        batch_size: frames per batch in the pipeline (``None``: 8).
        device: where frames are post-processed (``auto``: CUDA when available).
        encoder_preset: x264 preset of the H.264 mask and heatmap (pipeline and standalone alike).

    Returns:
        A JSON-ready dict (keys above, plus ``end_to_end_busy_s`` per configuration, the device,
        ``load_avg`` before / after and ``versions``).
    """
    frames = _validate_int("frames", frames, 1)
    batch_size = _validate_int("batch_size", 8 if batch_size is None else batch_size, 1)
    info = probe(input)
    dev = resolve_device(device)
    seg = NullSegmenter(device=dev)
    load_before = _load_avg()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streammask-bench-null-")))
        stack.enter_context(torch.no_grad())

        t0 = time.perf_counter()
        n = 0
        for b in read_batches(input, batch_size=batch_size, max_frames=frames):
            n += len(b.frames)
        decode_s = time.perf_counter() - t0

        _pipeline_only(input, tmp, seg, ("mask",), frames=min(n, batch_size), batch_size=batch_size, name="warm")
        runs = {}
        for label, outs in (("mask_heatmap", ("mask", "heatmap")), ("all", OUTPUTS)):
            runs[label] = _pipeline_only(input, tmp, seg, outs, frames=n, batch_size=batch_size, name=label,
                                         encoder_preset=encoder_preset)

        # each encoder alone: render (and compose) frames first, then time only the writer
        pipe = MaskPipeline(seg, prompt=PROMPT, variants=(VARIANT,))
        bits = {k: OUT_FORMATS[k][BENCH_FORMATS[k]].bits for k in OUTPUTS}
        standalone: dict[str, float] = {}
        for kind in OUTPUTS:
            rendered: list[tuple[np.ndarray, list[int]]] = []
            for b in read_batches(input, batch_size=batch_size, max_frames=n):
                host = np.asarray(b.frames)
                x = pipe.to_device(host)
                res = pipe.process(x)[VARIANT]
                rendered.append((np.ascontiguousarray(pipe.render(x, res, (kind,), host_frames=host, bits=bits)[kind]),
                                 list(b.pts)))
            pipe.reset()
            writer = make_writer(kind, BENCH_FORMATS[kind], tmp / f"standalone.{kind}", width=info.width,
                                 height=info.height, rate=info.frame_rate, time_base=info.time_base,
                                 preset=encoder_preset)
            try:
                t0 = time.perf_counter()
                for arr, pts in rendered:
                    writer.write(arr, pts)
                writer.close()
                standalone[kind] = n / (time.perf_counter() - t0)
            except BaseException:
                writer.abort()
                raise
            del rendered
    load_after = _load_avg()

    fps = {label: s.frames / s.seconds for label, s in runs.items()}
    slowest_all = min(standalone.values())
    slowest_mh = min(standalone[k] for k in ("mask", "heatmap"))
    return {
        "mode": "null_segmenter",
        "input": os.fspath(input),
        "resolution": f"{info.width}x{info.height}",
        "frame_rate": str(info.frame_rate) if info.frame_rate else None,
        "frames": n,
        "batch_size": batch_size,
        "variant": VARIANT,
        "outputs": {k: BENCH_FORMATS[k] for k in OUTPUTS},
        "encoder_preset": encoder_preset,
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f" ({_cpu_model()})"),
        "decode_fps": round(n / decode_s, 3),
        "pipeline_only_fps": round(fps["all"], 3),
        "pipeline_only_fps_mask_heatmap": round(fps["mask_heatmap"], 3),
        "encoder_standalone_fps": {k: round(v, 3) for k, v in standalone.items()},
        "slowest_encoder": min(standalone, key=standalone.get),
        "encoder_bound_ratio": round(fps["all"] / slowest_all, 3),
        "encoder_bound_ratio_mask_heatmap": round(fps["mask_heatmap"] / slowest_mh, 3),
        "end_to_end_busy_s": {label: {k: round(v, 4) for k, v in s.stage_seconds.items()} for label, s in runs.items()},
        "end_to_end_s": {label: round(s.seconds, 4) for label, s in runs.items()},
        "segmenter_calls": seg.calls,
        "load_avg": {"before": load_before, "after": load_after},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def format_encoder_markdown(r: dict[str, Any]) -> str:
    """The encoder-bound (null segmenter) result as markdown tables."""
    v = r["versions"]
    lines = [
        f"Clip `{r['input']}` ({r['resolution']}, {r['frames']} frames), batch {r['batch_size']}, null segmenter "
        f"(no model cost), {r['device']}, x264 preset {r.get('encoder_preset', 'fast')}",
        "",
        "| measurement | frames/s |",
        "|---|---|",
        f"| decode alone | {_num(r['decode_fps'])} |",
    ]
    for kind, fps in r["encoder_standalone_fps"].items():
        lines.append(f"| {kind} encoder alone ({r['outputs'][kind]}, one calling thread, pre-rendered frames) | {_num(fps)} |")
    lines += [
        f"| pipeline only, mask + heatmap | {_num(r['pipeline_only_fps_mask_heatmap'])} |",
        f"| pipeline only, mask + heatmap + matte | {_num(r['pipeline_only_fps'])} |",
        f"| ratio, mask + heatmap / slowest of their encoders | {_num(r['encoder_bound_ratio_mask_heatmap'])} |",
        f"| ratio, all three / slowest encoder ({r['slowest_encoder']}) | {_num(r['encoder_bound_ratio'])} |",
        "",
        f"load average before / after: {r['load_avg']['before']} / {r['load_avg']['after']}" if r.get("load_avg") and
        r["load_avg"]["before"] is not None else "load average: n/a",
        "",
        f"streammask {v['streammask']}, Python {v['python']}, torch {v['torch']}, PyAV {v['av']}, "
        f"CPU {v['cpu']} x{v['cpu_count']}",
    ]
    return "\n".join(lines)


# -- report ---------------------------------------------------------------------------------------------------------

def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def format_markdown(r: dict[str, Any]) -> str:
    """The benchmark result as markdown tables (throughput, stages, memory, environment)."""
    if r.get("mode") == "null_segmenter":
        return format_encoder_markdown(r)
    if r.get("mode") == "sam3":
        return format_sam3_markdown(r)
    v = r["versions"]
    n = r["frames"]
    lines = [
        f"Clip `{r['input']}` ({r['resolution']}, {n} frames), batch {r['batch_size']}, model {r['model']} "
        f"at {r['model_input']}, {r['device']}, {r['dtype']}, vision layers run: {r['vision_layers']}, "
        f"x264 preset {r.get('encoder_preset', 'fast')}",
        "",
        "| measurement | frames/s |",
        "|---|---|",
        f"| seed-style per-frame loop ({r['seed_frames']} frames, no outputs, every layer, {r['seed_loop_dtype']}) "
        f"| {_num(r['seed_loop_fps'])} |",
        f"| end to end (decode + model + post + mask, heatmap, matte) | {_num(r['end_to_end_fps'])} |",
        f"| model only (host->device + preprocess + model) | {_num(r['model_only_fps'])} |",
        f"| end to end / model only | {_num(r['end_to_end_over_model_only'])} |",
        f"| end to end / seed loop | {_num(r['end_to_end_over_seed_loop'])} |",
    ]
    if r.get("end_to_end_mask_heatmap_fps"):
        lines += [f"| end to end, mask + heatmap only | {_num(r['end_to_end_mask_heatmap_fps'])} |",
                  f"| end to end (mask + heatmap) / model only | {_num(r['end_to_end_mask_heatmap_over_model_only'])} |"]
    lines += [
        "",
        "| stage (one at a time) | seconds | frames/s |",
        "|---|---|---|",
    ]
    for k, s in r["stages_s"].items():
        lines.append(f"| {k} | {s:.3f} | {(n / s if s > 0 else float('inf')):.1f} |")
    lines += [
        "",
        "| memory / GPU | value |",
        "|---|---|",
        f"| peak host RSS (whole benchmark) | {_num(r['peak_rss_mb'], '{:.1f}')} MB |",
        f"| peak host RSS (end-to-end run) | {_num(r['end_to_end_peak_rss_mb'], '{:.1f}')} MB |",
        f"| peak GPU memory allocated | {_num(r['peak_gpu_mem_mb'], '{:.1f}')} MB |",
        f"| GPU utilisation model only / end to end | {_num(r['gpu_util_model_only_pct'], '{:.0f}')} % / "
        f"{_num(r['gpu_util_end_to_end_pct'], '{:.0f}')} % |",
        "",
        f"streammask {v['streammask']}, Python {v['python']}, torch {v['torch']} ({v['torch_threads']} threads), "
        f"transformers {v['transformers']}, PyAV {v['av']}, CPU {v['cpu']} x{v['cpu_count']}"
        + (f", CUDA {v['cuda']}" if v.get("cuda") else ""),
    ]
    return "\n".join(lines)
