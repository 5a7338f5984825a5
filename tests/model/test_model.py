import numpy as np
import pytest
import torch

from streammask import ModelLoadError, ParameterError, SourceNotFoundError, load_clipseg
from streammask.model import resolve_device, resolve_dtype


def test_loads_local_dir_with_real_geometry(tiny_model):
    assert tiny_model.size == 352
    assert tiny_model.device.type == "cpu" and tiny_model.dtype == torch.float32
    frames = torch.randint(0, 256, (2, 3, 60, 80), dtype=torch.uint8)
    logits = tiny_model.segment(frames, ["person"])
    assert logits.shape == (2, 1, 352, 352) and logits.dtype == torch.float32


def test_preprocess_matches_clipseg_processor_pil_path(tiny_model, tiny_model_dir):
    from PIL import Image
    from transformers import CLIPSegProcessor

    processor = CLIPSegProcessor.from_pretrained(tiny_model_dir)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)
    expected = processor(images=Image.fromarray(img), return_tensors="pt")["pixel_values"]
    ours = tiny_model.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], mode="pil")
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_prompt_embedding_reused_and_multi_prompt_fast_path(tiny_model):
    frames = torch.randint(0, 256, (3, 3, 40, 50), dtype=torch.uint8)
    before = tiny_model.text_encode_calls
    both = tiny_model.segment(frames, ["sky", "trees"])
    again = tiny_model.segment(frames, ["trees", "sky"])
    assert tiny_model.text_encode_calls - before <= 2  # each prompt encoded at most once, ever
    assert tiny_model.segment(frames, ["sky"]).shape == (3, 1, 352, 352)
    assert tiny_model.text_encode_calls - before <= 2
    torch.testing.assert_close(both[:, 0], again[:, 1])
    # vision-once / decoder-per-prompt equals one full forward per prompt
    pv = tiny_model.preprocess(frames)
    single = torch.cat([tiny_model.logits(pv, [p]) for p in ("sky", "trees")], dim=1)
    torch.testing.assert_close(both, single, atol=1e-4, rtol=1e-4)


def test_batch_size_does_not_change_logits(tiny_model):
    frames = torch.randint(0, 256, (4, 3, 36, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = tiny_model.segment(frames, ["car"])
    parts = torch.cat([tiny_model.segment(frames[i:i + 1], ["car"]) for i in range(4)])
    torch.testing.assert_close(whole, parts, atol=1e-4, rtol=1e-4)


def test_missing_local_model_dir(tmp_path):
    with pytest.raises(SourceNotFoundError, match="no such model directory"):
        load_clipseg(tmp_path / "nope", device="cpu")


def test_pickle_only_checkpoint_is_refused(tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_clipseg(d, device="cpu")


def test_hub_id_offline_gives_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_clipseg("CIDAS/clipseg-rd64-refined", device="cpu")
    text = str(info.value)
    assert "--model PATH" in text and "\n" not in text
    assert isinstance(info.value, OSError)


@pytest.mark.parametrize("bad", ["gpu", "tpu:0", "cuda:x"])
def test_bad_device(bad):
    with pytest.raises(ParameterError, match="device"):
        resolve_device(bad)


def test_dtype_auto_and_bad():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ParameterError, match="dtype='half'"):
        resolve_dtype("half", torch.device("cpu"))


@pytest.mark.needs_cuda
def test_cuda_half_close_to_cpu(tiny_model_dir):
    cpu = load_clipseg(tiny_model_dir, device="cpu")
    gpu = load_clipseg(tiny_model_dir, device="cuda", dtype="float16")
    frames = torch.randint(0, 256, (2, 3, 144, 176), dtype=torch.uint8)
    a = torch.sigmoid(cpu.segment(frames, ["person"]))
    b = torch.sigmoid(gpu.segment(frames.cuda(), ["person"])).cpu()
    assert (a - b).abs().max() < 0.05


# -- vision layers nothing reads -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def partial_read_dir(tmp_path_factory):
    """A tiny random CLIPSeg whose decoder reads vision layers 1 and 2 of 4, as rd64 reads 3, 6, 9 of 12."""
    from streammask.testing import save_random_clipseg

    return save_random_clipseg(tmp_path_factory.mktemp("clipseg") / "partial", layers=4, extract_layers=[1, 2])


def test_unused_vision_layers_are_dropped_without_changing_logits(partial_read_dir):
    from PIL import Image
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    seg = load_clipseg(partial_read_dir, device="cpu")
    assert seg.vision_layers == (3, 4)
    assert len(seg.model.clip.vision_model.encoder.layers) == 3
    # the checkpoint as the seed nodes run it: every layer, processor per frame, text through input_ids
    full = CLIPSegForImageSegmentation.from_pretrained(partial_read_dir).eval()
    processor = CLIPSegProcessor.from_pretrained(partial_read_dir)
    assert len(full.clip.vision_model.encoder.layers) == 4
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (144, 176, 3), dtype=np.uint8) for _ in range(3)]
    with torch.inference_mode():
        inputs = processor(text=["person"] * 3, images=[Image.fromarray(i) for i in images], padding=True,
                           return_tensors="pt")
        expected = full(**inputs).logits
    frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    ours = seg.segment(frames, ["person"])[:, 0]
    # same pixels and text embedding into both: the trimmed tower gives the very same logits
    pv = seg.preprocess(frames)
    with torch.inference_mode():
        same_input = full(pixel_values=pv, conditional_embeddings=seg.text_embeddings(["person"]).expand(3, -1)).logits
    assert torch.equal(ours, same_input)
    # and the seed-style call (processor pixels, input_ids) agrees to float rounding of the preprocessing
    torch.testing.assert_close(ours, expected, atol=1e-3, rtol=0)
    # several prompts take the vision-once path through the trimmed tower: same logits per prompt
    both = seg.segment(frames, ["person", "car"])
    torch.testing.assert_close(both[:, 0], ours, atol=1e-4, rtol=0)


def test_every_layer_kept_when_all_are_read(tiny_model):
    assert tiny_model.vision_layers == (3, 3)


def test_layers_kept_when_the_output_depends_on_them(partial_read_dir):
    """A transformers whose segmentation output reads the last hidden state: the check keeps every layer."""
    from transformers import CLIPSegForImageSegmentation

    from streammask.model import drop_unused_vision_layers

    net = CLIPSegForImageSegmentation.from_pretrained(partial_read_dir).eval()
    forward = net.forward

    def reads_last_layer(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits + out.vision_model_output.last_hidden_state.mean()
        return out

    net.forward = reads_last_layer
    assert drop_unused_vision_layers(net) == 0
    assert len(net.clip.vision_model.encoder.layers) == 4
    net.forward = forward
    assert drop_unused_vision_layers(net) == 1
    assert len(net.clip.vision_model.encoder.layers) == 3
