"""SAM 3 backend (streammask.model.sam3): loading, the Segmenter interface, session pruning, caps, hand-over.

The model is a tiny random-weight SAM 3 video model (tests/conftest.py: ``tiny_sam3_dir``) saved with
save_pretrained and loaded through ``--model PATH``'s code. Random weights: these tests check the machinery
(shapes, ids, memory, exactness of the pruning), not what is segmented.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import numpy as np
import pytest
import torch

from streammask import ModelLoadError, ParameterError, SourceNotFoundError
from streammask.model.clipseg import load_from_settings
from streammask.model.sam3 import (NO_OBJECT_LOGIT, Sam3Segmenter, is_sam3_model, load_sam3, prune_session,
                                   sam3_preprocess, session_tensor_bytes)
from streammask.model.sam3_kernels import LocalCvUtils

PROMPTS = ["person", "car"]
pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(n: int, *, seed: int = 0, size=(48, 64)) -> list[torch.Tensor]:
    """``n`` consecutive (1, 3, H, W) uint8 frames: a random texture sliding to the right."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.rand(1, 3, *size, generator=g) * 255).to(torch.uint8)
    return [base.roll(2 * i, dims=-1) for i in range(n)]


def _run(stream, frames, prompts=PROMPTS):
    out = []
    for f in frames:
        logits = stream.segment(f, prompts).clone()
        inst = stream.last_instances[0]
        out.append((logits, list(inst.ids), inst.logits.clone()))
    return out


# -- loading --------------------------------------------------------------------------------------------------------

class TestLoading:
    def test_local_directory_loads_and_is_detected(self, tiny_sam3_dir, tiny_model_dir, tiny_sam3):
        assert is_sam3_model(tiny_sam3_dir)
        assert not is_sam3_model(tiny_model_dir)  # CLIPSeg
        assert isinstance(tiny_sam3, Sam3Segmenter)
        assert (tiny_sam3.size, tiny_sam3.input_size, tiny_sam3.max_prompt_tokens) == (32, 112, 32)
        assert tiny_sam3.stateful and tiny_sam3.supported_variants == ("soft",)
        assert "Sam3Segmenter(" in repr(tiny_sam3)

    def test_hub_ids_are_judged_by_name_when_not_cached(self):
        assert is_sam3_model("facebook/sam3")
        assert not is_sam3_model("CIDAS/clipseg-rd64-refined")
        assert not is_sam3_model(None)

    def test_settings_dispatch_by_config(self, tiny_sam3_dir, tiny_model_dir):
        seg = load_from_settings({"model": str(tiny_sam3_dir), "device": "cpu", "sam3_max_objects": 3,
                                  "sam3_forget_after": 7})
        assert isinstance(seg, Sam3Segmenter) and (seg.max_objects, seg.forget_after) == (3, 7)
        clip = load_from_settings({"model": str(tiny_model_dir), "device": "cpu", "sam3_max_objects": 3})
        assert type(clip).__name__ == "ClipSeg"

    def test_offline_hub_id_is_one_sentence_naming_the_license(self, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(ModelLoadError) as err:
            load_sam3("facebook/sam3", device="cpu")
        text = str(err.value)
        assert "\n" not in text and "SAM License" in text and "facebook/sam3" in text and "--model PATH" in text

    @pytest.mark.parametrize("kwargs, exc, needle", [
        ({"dtype": "int8"}, ParameterError, "int8"),
        ({"compile": True}, ParameterError, "compile"),
        ({"channels_last": True}, ParameterError, "channels_last"),
        ({"sam3_max_objects": 0}, ParameterError, "sam3_max_objects"),
        ({"attn_implementation": "flash"}, ParameterError, "attn_implementation"),
    ])
    def test_bad_options(self, tiny_sam3_dir, kwargs, exc, needle):
        with pytest.raises(exc, match=needle):
            load_sam3(tiny_sam3_dir, device="cpu", **kwargs)

    def test_missing_path_and_pickle_only_directory(self, tmp_path, tiny_sam3_dir):
        with pytest.raises(SourceNotFoundError):
            load_sam3(tmp_path / "nope", device="cpu")
        copy = tmp_path / "pickles"
        shutil.copytree(tiny_sam3_dir, copy)
        for f in copy.glob("*.safetensors"):
            f.unlink()
        with pytest.raises(ModelLoadError, match="safetensors"):
            load_sam3(copy, device="cpu")

    def test_missing_processor_config(self, tmp_path, tiny_sam3_dir):
        copy = tmp_path / "noproc"
        shutil.copytree(tiny_sam3_dir, copy)
        (copy / "processor_config.json").unlink()
        with pytest.raises(ModelLoadError, match="image processor config"):
            load_sam3(copy, device="cpu")

    def test_untested_transformers_is_refused(self, tiny_sam3_dir, monkeypatch):
        import transformers

        monkeypatch.setattr(transformers, "__version__", "5.31.0")
        with pytest.raises(ModelLoadError, match="transformers 5.25"):
            load_sam3(tiny_sam3_dir, device="cpu")

    def test_processor_config_is_read(self, tiny_sam3, tiny_sam3_dir, tmp_path):
        image = tiny_sam3.image
        assert (image.height, image.width, image.mean, image.std) == (112, 112, (0.5,) * 3, (0.5,) * 3)
        assert image.rescale == pytest.approx(1 / 255)
        # the older layout: the image processor alone in preprocessor_config.json
        copy = tmp_path / "older"
        shutil.copytree(tiny_sam3_dir, copy)
        nested = json.loads((copy / "processor_config.json").read_text())
        (copy / "processor_config.json").unlink()
        (copy / "preprocessor_config.json").write_text(json.dumps({**nested["image_processor"], "image_mean": [0.4] * 3}))
        assert load_sam3(copy, device="cpu").image.mean == (0.4,) * 3

    def test_long_prompts_are_refused_not_truncated(self, tiny_sam3):
        stream = tiny_sam3.open_stream()
        with pytest.raises(ParameterError, match="at most 32 tokens"):
            stream.segment(_frames(1)[0], ["x" * 40])


# -- the Segmenter interface ----------------------------------------------------------------------------------------

class TestSegment:
    def test_shapes_and_instances(self, tiny_sam3):
        stream = tiny_sam3.open_stream()
        frames = torch.cat(_frames(3))
        logits = stream.segment(frames, PROMPTS)
        assert logits.shape == (3, 2, 32, 32) and logits.dtype == torch.float32
        assert [inst.frame for inst in stream.last_instances] == [0, 1, 2]
        for b, inst in enumerate(stream.last_instances):
            assert inst.logits.shape == (len(inst.ids), 32, 32)
            assert inst.ids == sorted(inst.ids) and set(inst.prompts) <= set(PROMPTS)
            for j, prompt in enumerate(PROMPTS):
                mine = [i for i, p in enumerate(inst.prompts) if p == prompt]
                if mine:  # the union: the maximum of the prompt's instances (before the non-overlap rule)
                    assert torch.equal(logits[b, j], inst.raw_logits[mine].amax(0))
                else:
                    assert bool((logits[b, j] == NO_OBJECT_LOGIT).all())
        assert any(inst.ids for inst in stream.last_instances), "the calibrated tiny model detects something"

    def test_non_overlap_within_a_prompt(self, tiny_sam3):
        stream = tiny_sam3.open_stream()
        for f in _frames(6):
            stream.segment(f, ["person"])
            inst = stream.last_instances[0]
            if len(inst.ids) > 1:
                claimed = (inst.logits > 0).sum(0)
                assert int(claimed.max()) <= 1  # one object per pixel within a prompt
                return
        pytest.skip("the tiny model showed fewer than two objects of one prompt in 6 frames")

    def test_size_argument_resamples(self, tiny_sam3):
        out = tiny_sam3.open_stream().segment(_frames(1)[0], ["person"], size=48)
        assert out.shape == (1, 1, 48, 48)

    def test_boxes_follow_the_masks(self, tiny_sam3):
        stream = tiny_sam3.open_stream()
        stream.segment(_frames(1)[0], PROMPTS)
        inst = stream.last_instances[0]
        boxes = inst.boxes(48, 64)
        for i in range(len(inst.ids)):
            m = torch.nn.functional.interpolate(inst.raw_logits[i][None, None], size=(48, 64), mode="bilinear",
                                                align_corners=False)[0, 0] > 0
            ys, xs = torch.nonzero(m, as_tuple=True)
            expected = [-1.0] * 4 if len(xs) == 0 else [xs.min(), ys.min(), xs.max(), ys.max()]
            assert boxes[i].tolist() == [float(v) for v in expected]

    def test_preprocess_paths_agree(self):
        """The native uint8 resize (what torchvision does on AVX2 CPUs) and the float + round path (GPUs) differ by
        at most one level; each is checked against the real processor in test_references_torchvision.py."""
        from streammask.model.sam3 import Sam3ImageConfig

        config = Sam3ImageConfig(112, 112, (0.5,) * 3, (0.5,) * 3, 1 / 255)
        frames = _frames(1, size=(37, 53))[0]
        native = sam3_preprocess(frames, config, device=torch.device("cpu"), dtype=torch.float32)
        x = torch.nn.functional.interpolate(frames.float(), size=(112, 112), mode="bilinear", antialias=True,
                                            align_corners=False).round().clamp(0, 255)
        floated = (x - 127.5) / 127.5
        assert native.shape == (1, 3, 112, 112)
        assert float((native - floated).abs().max()) <= 1 / 127.5 + 1e-6


# -- pruning, caps, memory ------------------------------------------------------------------------------------------

class TestPruning:
    def test_pruned_session_gives_bit_identical_outputs(self, tiny_sam3):
        frames = _frames(24)
        stock = _run(tiny_sam3.open_stream(prune=False), frames)
        pruned = _run(tiny_sam3.open_stream(cap_pointers=False), frames)
        for (a, ia, la), (b, ib, lb) in zip(stock, pruned):
            assert ia == ib and torch.equal(a, b) and torch.equal(la, lb)

    def test_held_memory_grows_stock_and_stays_flat_pruned(self, tiny_sam3):
        frames = _frames(40)
        sizes = {}
        for name, opts in (("stock", {"prune": False}), ("pruned", {})):
            stream = tiny_sam3.open_stream(**opts)
            held = []
            for f in frames:
                stream.segment(f, PROMPTS)
                held.append(stream.held_bytes())
            sizes[name] = held
        stock, pruned = sizes["stock"], sizes["pruned"]
        frame_bytes = 3 * 112 * 112 * 4  # one processed frame, float32
        assert stock[39] - stock[19] >= 20 * frame_bytes  # every frame's pixels and outputs stay
        # after the pointer window (15 frames) the pruned session holds a fixed amount (same objects)
        assert pruned[39] <= pruned[19] * 1.10, (pruned[19], pruned[39])
        assert pruned[39] < stock[39] / 3

    def test_pointer_cap_keeps_the_newest_conditioning_frames(self):
        """prune_session on a hand-made session: which outputs stay, which lose their masks, which go."""
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        s = Sam3VideoInferenceSession(dtype=torch.float32)
        s.obj_id_to_idx(0)
        full = lambda: {k: torch.zeros(2) for k in ("object_pointer", "maskmem_features", "maskmem_pos_enc",
                                                    "pred_masks", "high_res_masks", "object_score_logits")}
        out = s.output_dict_per_obj[0]
        out["cond_frame_outputs"].update({t: full() for t in (0, 16, 32, 48, 64, 76, 79)})
        out["non_cond_frame_outputs"].update({t: full() for t in range(50, 80) if t not in (64, 76, 79)})
        s.obj_id_to_tracker_score_frame_wise = defaultdict(dict, {t: {0: 0.5} for t in range(80)})
        s.unmatched_frame_inds[0] = list(range(40))
        exact = {k: {t: dict(v) for t, v in d.items()} for k, d in out.items()}
        prune_session(s, 79, num_maskmem=7, max_pointers=16, max_cond=4, cap_pointers=True, unmatch_keep=8)
        cond, non = out["cond_frame_outputs"], out["non_cond_frame_outputs"]
        # the newest 4 conditioning frames stay (the ones the memory attention selects), the older ones go
        assert sorted(cond) == [48, 64, 76, 79]
        assert all("pred_masks" not in v and "high_res_masks" not in v for v in cond.values())
        assert "maskmem_features" in cond[48]  # selected: its memory features are read
        # non-conditioning: memory window (ages 0..5) full, pointer window (ages 6..14) pointer only, older gone
        assert sorted(non) == [t for t in range(65, 80) if t not in (76, 79)]
        assert set(non[78]) == {"object_pointer", "maskmem_features", "maskmem_pos_enc", "object_score_logits"}
        assert set(non[70]) == {"object_pointer"}
        assert list(s.obj_id_to_tracker_score_frame_wise) == [79]
        assert s.unmatched_frame_inds[0] == list(range(32, 40))
        assert len(s.processed_frames) == 80  # the frame count stays
        # exact mode keeps every conditioning frame's pointer
        s.output_dict_per_obj[0] = {k: {t: dict(v) for t, v in d.items()} for k, d in exact.items()}
        prune_session(s, 79, num_maskmem=7, max_pointers=16, max_cond=4, cap_pointers=False)
        cond = s.output_dict_per_obj[0]["cond_frame_outputs"]
        assert sorted(cond) == [0, 16, 32, 48, 64, 76, 79] and set(cond[0]) == {"object_pointer"}

    def test_cap_binds_only_beyond_max_cond_frames(self, tmp_path_factory):
        """A tiny model that re-conditions every 2nd frame: exact pruning stays bit-identical with stock over many
        conditioning frames; the pointer cap changes the outputs only once an object has more than 4."""
        from streammask.testing import save_random_sam3_video

        path = save_random_sam3_video(tmp_path_factory.mktemp("sam3rc") / "rc", image_size=112,
                                      recondition_every_nth_frame=2, high_iou_thresh=0.0)
        seg = load_sam3(path, device="cpu", sam3_max_objects=3)
        frames = _frames(16)
        stock = _run(seg.open_stream(prune=False), frames)
        exact = _run(seg.open_stream(cap_pointers=False), frames)
        capped_stream = seg.open_stream()
        capped = _run(capped_stream, frames)
        assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(stock, exact))
        cond = [len(o["cond_frame_outputs"]) for o in capped_stream.session.output_dict_per_obj.values()]
        assert max(cond) == 4  # capped
        same = [torch.equal(a[0], b[0]) for a, b in zip(stock, capped)]
        first = same.index(False) if False in same else len(same)
        assert first >= 8  # identical while no object has more than 4 conditioning frames (1 + every 2nd frame)

    def test_objects_are_retired_and_forgotten(self, tiny_sam3_dir):
        seg = load_sam3(tiny_sam3_dir, device="cpu", sam3_max_objects=4, sam3_forget_after=1)
        stream = seg.open_stream()
        retired: list[int] = []
        for f in _frames(12, seed=3):
            stream.segment(f, PROMPTS)
            inst = stream.last_instances[0]
            assert not set(inst.ids) & set(retired)  # a retired id never comes back
            retired += inst.retired
        s = stream.session
        for obj_id in retired:
            assert obj_id not in s.obj_ids and obj_id not in s.obj_id_to_score and obj_id not in s.trk_keep_alive
            assert obj_id not in s.obj_id_to_prompt_id and obj_id not in s.obj_first_frame_idx
        assert len(s.obj_ids) <= 4

    def test_forget_object_purges_bookkeeping_and_tracking_goes_on(self, tiny_sam3):
        from streammask.model.sam3 import _forget_object

        stream = tiny_sam3.open_stream()
        frames = _frames(8)
        for f in frames[:4]:
            stream.segment(f, PROMPTS)
        ids = list(stream.session.obj_ids)
        assert ids, "the tiny model tracks something after 4 frames"
        _forget_object(stream.session, ids[0])
        assert ids[0] not in stream.session.obj_ids and ids[0] not in stream.session.obj_id_to_score
        for f in frames[4:]:
            stream.segment(f, PROMPTS)
            assert ids[0] not in stream.last_instances[0].ids

    def test_tensor_bytes_counts_storages_once(self):
        t = torch.zeros(100)
        assert session_tensor_bytes({"a": t, "b": [t[:10], {"c": t}]}) == 400


# -- hand-over ------------------------------------------------------------------------------------------------------

class TestHandOver:
    def test_state_dict_continues_with_the_same_ids(self, tiny_sam3):
        frames = _frames(12)
        one = _run(tiny_sam3.open_stream(), frames)
        first = tiny_sam3.open_stream()
        head = _run(first, frames[:6])
        second = tiny_sam3.open_stream()
        second.load_state_dict(first.state_dict())
        tail = _run(second, frames[6:])
        for (a, ia, _), (b, ib, _) in zip(one, head + tail):
            assert ia == ib and torch.equal(a, b)

    def test_the_state_is_a_copy(self, tiny_sam3):
        stream = tiny_sam3.open_stream()
        _run(stream, _frames(3))
        state = stream.state_dict()
        _run(stream, _frames(3, seed=1))
        assert state["frames_seen"] == 3 and state["session"] is not stream.session


# -- the local kernels ----------------------------------------------------------------------------------------------

class TestLocalKernels:
    def test_nms_greedy_by_score(self):
        ious = torch.tensor([[1.0, 0.5, 0.0, 0.05], [0.5, 1.0, 0.3, 0.0], [0.0, 0.3, 1.0, 0.0], [0.05, 0.0, 0.0, 1.0]])
        scores = torch.tensor([0.6, 0.9, 0.8, 0.7])
        keep = LocalCvUtils.generic_nms(ious, scores, 0.1)
        assert keep.tolist() == [1, 3]  # 1 first; 2 and 0 overlap it; 3 overlaps 0 only at 0.05

    def test_connected_components_match_scipy_8_connectivity(self):
        from scipy import ndimage

        rng = np.random.default_rng(0)
        masks = (rng.random((3, 1, 40, 30)) > 0.6).astype(np.uint8)
        labels, counts = LocalCvUtils.cc_2d(torch.from_numpy(masks))
        for i in range(3):
            ref, n = ndimage.label(masks[i, 0], structure=np.ones((3, 3)))
            sizes = np.bincount(ref.ravel())
            sizes[0] = 0
            assert np.array_equal(counts[i, 0].numpy(), sizes[ref])
            assert np.array_equal(labels[i, 0].numpy() > 0, ref > 0)
