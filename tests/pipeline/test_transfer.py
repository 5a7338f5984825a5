"""Host <-> device copies (streammask.pipeline.transfer) and their use in process_video."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from streammask import MaskPipeline, process_video
import streammask.pipeline.outputs as outputs_mod
import streammask.pipeline.run as pipeline_mod
from streammask.pipeline.run import _stack_rows
from streammask.pipeline.transfer import DeviceFrames, HostCopy, PendingHost, copy_stream, upload, upload_batches
from streammask.io.video import FrameBatch


def _frames(n=3, h=10, w=14, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _decode(path, fmt):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(video=0)]


# -- upload ----------------------------------------------------------------------------------------------------------

def test_upload_on_cpu_is_the_channels_first_copy():
    frames = _frames()
    up = upload(frames, torch.device("cpu"))
    assert isinstance(up, DeviceFrames) and up.ready is None
    x = up.get()
    assert x.shape == (3, 3, 10, 14) and x.dtype == torch.uint8 and x.is_contiguous()
    assert torch.equal(x, torch.from_numpy(frames).permute(0, 3, 1, 2))


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8),
                                 np.zeros((2, 4, 4, 4), np.uint8)])
def test_upload_refuses_what_is_not_uint8_rgb_batches(bad):
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\) uint8"):
        upload(bad, torch.device("cpu"))


def test_upload_batches_on_cpu_leaves_the_frames_to_the_consumer():
    batches = [FrameBatch(_frames(2, seed=i), (2 * i, 2 * i + 1), 2 * i, Fraction(1, 25)) for i in range(3)]
    out = list(upload_batches(iter(batches), torch.device("cpu")))
    assert [b for b, _ in out] == batches and all(d is None for _, d in out)
    assert copy_stream(torch.device("cpu"), "upload") is None


# -- device -> host --------------------------------------------------------------------------------------------------

def test_host_copy_on_cpu_gives_the_arrays_in_add_order():
    a = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4, 1)
    b = torch.ones(1, 2, 2, 3, dtype=torch.int16)
    fetch = HostCopy(torch.device("cpu"))
    ia, ib = fetch.add(a.permute(0, 2, 1, 3)), fetch.add(b)
    arrays = fetch.wait()
    assert (ia, ib) == (0, 1)
    np.testing.assert_array_equal(arrays[0], a.permute(0, 2, 1, 3).numpy())
    assert arrays[1].dtype == np.int16 and arrays[1].shape == (1, 2, 2, 3)
    with pytest.raises(RuntimeError, match="after wait"):
        fetch.add(a)


def test_pending_host_finishes_once():
    calls = []
    pending = PendingHost(lambda: calls.append(1) or {"mask": 1})
    assert calls == []
    assert pending.result() == {"mask": 1} and pending.result() is pending.result()
    assert calls == [1]


@pytest.mark.parametrize("bits", [{}, {"mask": 16, "matte": 16}])
@pytest.mark.parametrize("with_host", [True, False])
def test_render_deferred_equals_render_now(tiny_model, bits, with_host):
    frames = _frames(2, 48, 64)
    pipe = MaskPipeline(tiny_model, prompt="person", variants=["soft"])
    x = pipe.to_device(frames)
    res = pipe.process(x)["soft"]
    kw = dict(host_frames=frames if with_host else None, bits=bits)
    now = pipe.render(x, res, ("mask", "heatmap", "matte"), **kw)
    later = pipe.render(x, res, ("mask", "heatmap", "matte"), defer_copy=True, **kw)
    assert isinstance(later, PendingHost)
    later = later.result()
    assert set(now) == set(later) == {"mask", "heatmap", "matte"}
    for kind in now:
        assert now[kind].dtype == later[kind].dtype, kind
        np.testing.assert_array_equal(now[kind], later[kind], err_msg=kind)
    assert now["mask"].dtype == (np.uint16 if bits else np.uint8)
    if not bits:  # the matte's colour is the frame's own (from the host copy or fetched from the device)
        np.testing.assert_array_equal(now["matte"][..., :3], frames)


# -- the host frames of a batch --------------------------------------------------------------------------------------

def test_stack_rows_is_a_view_for_consecutive_rows_of_one_batch():
    batch = _frames(5)
    rows = [batch[i] for i in range(1, 4)]
    out = _stack_rows(rows)
    assert np.shares_memory(out, batch)
    np.testing.assert_array_equal(out, batch[1:4])


@pytest.mark.parametrize("pick", [
    lambda b, o: [b[2], b[1]],               # out of order
    lambda b, o: [b[0], b[2]],               # a gap
    lambda b, o: [b[3], o[0]],               # two batches (a look-ahead smoother across batches)
    lambda b, o: [b[0, ::2][None][0]],       # a strided view
    lambda b, o: [np.array(b[0]), b[1]],     # a copy
])
def test_stack_rows_copies_everything_else(pick):
    batch, other = _frames(5, seed=1), _frames(5, seed=2)
    rows = pick(batch, other)
    out = _stack_rows(rows)
    assert not np.shares_memory(out, batch) and not np.shares_memory(out, other)
    np.testing.assert_array_equal(out, np.stack(rows))


# -- process_video with a batch in flight ----------------------------------------------------------------------------

class BrightnessSegmenter:
    """Logits from each frame's own brightness, with elementwise ops only: bit-identical from run to run
    (a matmul's last bits can change with its buffers' alignment, and H.264 turns a 1e-7 change of the
    heatmap's input into visibly different frames), and a mask that follows the frame it belongs to."""

    device = torch.device("cpu")
    dtype = torch.float32
    size = 352

    def segment(self, frames, prompts, *, preprocess="pil", size=None):
        side = size or self.size
        grey = frames[:, :1].float() / 255.0
        grey = torch.nn.functional.interpolate(grey, size=(side, side), mode="nearest")
        return ((grey - 0.5) * 8.0).expand(-1, len(prompts), -1, -1).contiguous()


@pytest.mark.parametrize("temporal,options", [("none", {}), ("median", {"window": 5})])
def test_process_video_with_a_batch_in_flight_hands_the_encoders_the_same_frames(synthetic_clip, tmp_path, monkeypatch,
                                                                                 temporal, options):
    """What CUDA does (outputs handed to the encoders one batch late), run on the CPU: every encoder gets the
    same arrays with the same pts, and the lossless outputs are byte-identical."""
    from streammask.io.matte import MatteBatch

    real_make_writer = outputs_mod.make_writer
    received: dict[str, list] = {}

    def recording_make_writer(kind, *args, **kwargs):
        writer = real_make_writer(kind, *args, **kwargs)
        real_write = writer.write

        def write(frames, pts):
            arr = frames.compose() if isinstance(frames, MatteBatch) else np.array(frames)
            received[run].append((kind, arr, list(pts)))
            real_write(frames, pts)

        writer.write = write
        return writer

    monkeypatch.setattr(outputs_mod, "make_writer", recording_make_writer)
    kw = dict(prompt="person", segmenter=BrightnessSegmenter(), batch_size=5, outputs=["mask", "heatmap", "matte"],
              mask_format="ffv1", matte_format="png", progress=False, temporal=temporal, **options)
    summaries = {}
    for run, ahead in (("now", 0), ("late", 1)):
        received[run] = []
        monkeypatch.setattr(pipeline_mod, "_copy_ahead", lambda device, ahead=ahead: ahead)
        summaries[run] = process_video(synthetic_clip, out_dir=tmp_path / run, **kw)
    now, late = summaries["now"], summaries["late"]
    assert now.frames == late.frames == 12
    assert "device -> host wait" in late.stage_seconds and "device -> host wait" not in now.stage_seconds
    for kind in ("mask", "heatmap", "matte"):
        got = {run: [(arr, pts) for k, arr, pts in received[run] if k == kind] for run in received}
        pts = {run: [p for _, ps in got[run] for p in ps] for run in got}
        assert pts["now"] == pts["late"] and len(pts["now"]) == 12, kind
        a, b = (np.concatenate([arr for arr, _ in got[run]]) for run in ("now", "late"))
        assert len({f.tobytes() for f in a}) > 6, kind  # the frames differ from each other
        np.testing.assert_array_equal(a, b, err_msg=kind)
    masks = [_decode(s.outputs["soft.mask"], "gray") for s in (now, late)]  # lossless FFV1
    assert len(masks[0]) == len(masks[1]) == 12
    for fa, fb in zip(*masks):
        np.testing.assert_array_equal(fa, fb)
    assert len(_decode(late.outputs["soft.heatmap"], "rgb24")) == 12  # H.264: every frame, not compared bit for bit
    pngs = [sorted(s.outputs["soft.matte"].glob("*.png")) for s in (now, late)]
    assert [p.name for p in pngs[0]] == [p.name for p in pngs[1]] and len(pngs[0]) == 12
    for pa, pb in zip(*pngs):
        assert pa.read_bytes() == pb.read_bytes()


def test_cancel_with_keep_partial_still_writes_the_batch_in_flight(synthetic_clip, tmp_path, tiny_model, monkeypatch):
    class Cancel(Exception):
        pass

    def stop_at_second(done, total):
        if done >= 8:
            raise Cancel

    counts = []
    for ahead in (0, 1):
        monkeypatch.setattr(pipeline_mod, "_copy_ahead", lambda device, ahead=ahead: ahead)
        out = tmp_path / f"ahead{ahead}"
        with pytest.raises(Cancel):
            process_video(synthetic_clip, out_dir=out, prompt="person", segmenter=tiny_model, batch_size=4,
                          outputs="mask", mask_format="ffv1", progress=False, keep_partial=True,
                          on_batch=stop_at_second)
        counts.append(len(_decode(next(out.glob("*.mask.*")), "gray")))
    assert counts == [8, 8]


# -- CUDA --------------------------------------------------------------------------------------------------------------

@pytest.mark.needs_cuda
def test_cuda_upload_and_host_copy_round_trip():
    frames = _frames(4, 72, 96)
    up = upload(frames, torch.device("cuda"))
    assert up.ready is not None and up.frames.is_cuda
    x = up.get()
    assert torch.equal(x.cpu(), torch.from_numpy(frames).permute(0, 3, 1, 2))
    fetch = HostCopy(torch.device("cuda"))
    i = fetch.add((x.float() * 0.5).to(torch.uint8).permute(0, 2, 3, 1))
    j = fetch.add(x[:, :1].permute(0, 2, 3, 1).to(torch.int16))
    arrays = fetch.wait()
    np.testing.assert_array_equal(arrays[i], (frames.astype(np.float32) * 0.5).astype(np.uint8))
    np.testing.assert_array_equal(arrays[j], frames[..., :1].astype(np.int16))


@pytest.mark.needs_cuda
def test_cuda_process_video_matches_the_cpu_run(synthetic_clip, tmp_path, tiny_model_dir):
    """The whole overlapped path (upload stream, download stream, a batch in flight) against the CPU's."""
    kw = dict(prompt="person", batch_size=5, outputs=["mask", "heatmap"], mask_format="ffv1", progress=False)
    cpu = process_video(synthetic_clip, out_dir=tmp_path / "cpu", model=tiny_model_dir, device="cpu", **kw)
    gpu = process_video(synthetic_clip, out_dir=tmp_path / "gpu", model=tiny_model_dir, device="cuda",
                        dtype="float32", **kw)
    assert cpu.frames == gpu.frames == 12
    a, b = (_decode(s.outputs["soft.mask"], "gray") for s in (cpu, gpu))
    assert len(a) == len(b) == 12
    for fa, fb in zip(a, b):  # float32 on both: kernels differ, a grey level or two on a few pixels
        diff = np.abs(fa.astype(int) - fb.astype(int))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    a, b = (_decode(s.outputs["soft.heatmap"], "rgb24") for s in (cpu, gpu))
    assert len(a) == len(b) == 12
    assert np.mean([np.abs(fa.astype(int) - fb.astype(int)).mean() for fa, fb in zip(a, b)]) < 1.0  # H.264 of both
