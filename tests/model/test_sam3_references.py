"""SAM 3's preprocessing and post-processing, checked against transformers' own ``Sam3VideoProcessor``.

streammask cannot use ``Sam3VideoProcessor`` in its main environment: it imports torchvision, which does not
install beside the CPU torch of the main run. So :func:`~streammask.model.sam3.sam3_preprocess` resizes and
normalises the frames itself, the tokenisation is the processor's (padded to 32 positions), and the boxes come
from the model's logits as the processor computes them. This file checks all three against the real processor
(built from the tiny model's saved ``processor_config.json`` with ``Sam3VideoProcessor.from_pretrained``). It needs
torchvision: ``.ci/run`` runs it in ``.venv-tv`` (torch 2.14.1 + torchvision 0.29.1) and it is skipped elsewhere.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if os.environ.get("STREAMMASK_REQUIRE_TORCHVISION"):  # .ci/run's torchvision venv: a missing torchvision is a failure
    import torchvision  # noqa: F401

pytest.importorskip("torchvision", reason="torchvision is not installed (it does not install beside the CPU torch of "
                    "the main run); .ci/run runs this file in .venv-tv with torch 2.14.1 + torchvision 0.29.1")

from streammask.model.sam3 import Sam3ImageConfig, sam3_preprocess  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def processor(tiny_sam3_dir):
    from transformers import Sam3VideoProcessor

    return Sam3VideoProcessor.from_pretrained(tiny_sam3_dir)


@pytest.mark.parametrize("hw", [(37, 53), (144, 176), (300, 200), (112, 112), (1, 1)])
def test_preprocess_equals_the_processor(processor, tiny_sam3, hw):
    """Upsampled, downsampled (antialiased), same size, odd sizes: identical float32 pixel values on the CPU."""
    rng = np.random.default_rng(sum(hw))
    img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    # channels_last said explicitly: the processor would take a 1x1x3 image for channels-first
    ref = processor(images=img, return_tensors="pt", input_data_format="channels_last").pixel_values
    ours = sam3_preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], tiny_sam3.image, device=torch.device("cpu"),
                           dtype=torch.float32)
    assert ref.shape == ours.shape == (1, 3, 112, 112)
    assert torch.equal(ref, ours)


def test_preprocess_at_the_real_geometry():
    """facebook/sam3's processor: 1008x1008, mean = std = 0.5 (Sam3ImageProcessor's defaults)."""
    from transformers import Sam3ImageProcessor

    real = Sam3ImageProcessor()
    config = Sam3ImageConfig(real.size["height"], real.size["width"], tuple(real.image_mean), tuple(real.image_std),
                             real.rescale_factor)
    img = np.random.default_rng(7).integers(0, 256, (144, 176, 3), dtype=np.uint8)
    ref = real(images=img, return_tensors="pt").pixel_values
    ours = sam3_preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], config, device=torch.device("cpu"),
                           dtype=torch.float32)
    assert ref.shape == (1, 3, 1008, 1008) and torch.equal(ref, ours)


@pytest.mark.needs_cuda
def test_preprocess_equals_the_processor_on_cuda(processor, tiny_sam3):
    img = np.random.default_rng(3).integers(0, 256, (144, 176, 3), dtype=np.uint8)
    ref = processor(images=img, return_tensors="pt", device="cuda").pixel_values
    ours = sam3_preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], tiny_sam3.image, device=torch.device("cuda"),
                           dtype=torch.float32)
    assert torch.equal(ref.cuda(), ours)


def test_prompt_tokens_equal_the_processor(processor, tiny_sam3):
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    session = Sam3VideoInferenceSession(dtype=torch.float32)
    processor.add_text_prompt(session, "person")
    ours = tiny_sam3.tokenize("person")
    assert torch.equal(session.prompt_input_ids[0], ours["input_ids"])
    assert torch.equal(session.prompt_attention_masks[0], ours["attention_mask"])


def test_instances_equal_the_processors_postprocessing(processor, tiny_sam3):
    """Run transformers' own streaming loop (processor + model, stock session) beside a streammask stream on the same
    frames: the same object ids, scores and boxes in every frame (at the frame size)."""
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    h, w = 48, 64
    g = torch.Generator().manual_seed(0)
    base = (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)
    frames = [base.roll(2 * i, dims=-1) for i in range(8)]
    session = Sam3VideoInferenceSession(dtype=torch.float32)
    processor.add_text_prompt(session, ["person", "car"])
    stream = tiny_sam3.open_stream(prune=False)  # the processor reads the stock session's bookkeeping
    model = tiny_sam3.model
    compared = 0
    for i, frame in enumerate(frames):
        inputs = processor(images=frame.permute(1, 2, 0).numpy(), return_tensors="pt")
        with tiny_sam3.lock:
            model.max_num_objects = tiny_sam3.max_objects
            out = model(inference_session=session, frame=inputs.pixel_values[0], frame_idx=i)
        ref = processor.postprocess_outputs(session, out, original_sizes=[[h, w]])
        stream.segment(frame[None], ["person", "car"])
        inst = stream.last_instances[0]
        boxes = inst.boxes(h, w)
        ours = {obj_id: (s, boxes[k].tolist()) for k, (obj_id, s) in enumerate(zip(inst.ids, inst.scores))
                if boxes[k][0] >= 0}  # the processor keeps objects with pixels at the frame size
        theirs = {int(obj_id): (float(s), [float(v) for v in b])
                  for obj_id, s, b in zip(ref["object_ids"], ref["scores"], ref["boxes"])}
        assert ours.keys() == theirs.keys(), i
        for obj_id in ours:
            assert ours[obj_id][0] == pytest.approx(theirs[obj_id][0])
            assert ours[obj_id][1] == theirs[obj_id][1]
        compared += len(ours)
    assert compared > 0
