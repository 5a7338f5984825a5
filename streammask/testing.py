"""Random-weight CLIPSeg models for tests and benchmarks.

Real weights cannot be downloaded everywhere (CI has no network to the
Hugging Face hub). :func:`save_random_clipseg` writes a model directory with
the real CLIPSeg geometry (352x352 input, 16x16 patches, so logits are
352x352) and a working CLIP tokenizer, loadable through the same
``from_pretrained`` path as the real weights (``--model PATH``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .model.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["save_random_clipseg", "save_random_sam3_video", "NullSegmenter"]

# CIDAS/clipseg-rd64-refined's preprocessor_config.json uses ImageNet statistics.


def _bytes_to_unicode() -> dict[int, str]:
    # The byte -> printable-character table of GPT-2 / CLIP BPE tokenizers.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _write_tokenizer(path: Path) -> dict[str, int]:
    """A character-level CLIP BPE vocabulary (no merges) covering every byte."""
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    # a few merges so that common words become single tokens
    merges = []
    for word in ("person", "sky", "trees", "car", "face", "road"):
        letters = list(word[:-1]) + [word[-1] + "</w>"]
        while len(letters) > 1:
            a, b = letters[0], letters[1]
            merges.append(f"{a} {b}")
            vocab.setdefault(a + b, len(vocab))
            letters = [a + b] + letters[2:]
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    vocab[bos] = len(vocab)
    vocab[eos] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")
    return {"vocab_size": len(vocab), "bos": vocab[bos], "eos": vocab[eos]}


def _calibrate_logits(model, config, *, std: float = 3.0, mean: float = -0.5) -> None:
    """Rescale the decoder's last layer so logits have a realistic spread.

    Random initialisation gives logits with a standard deviation of ~70, so every
    probability is 0 or 1; real CLIPSeg logits mostly lie within +-10. The last
    layer is linear in its weight and bias, so scaling both scales the logits.
    """

    gen = torch.Generator().manual_seed(1234)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 352), torch.linspace(-1, 1, 352), indexing="ij")
    pixels = torch.stack([xx, yy, xx * yy]).unsqueeze(0) * 2 + 0.3 * torch.randn(1, 3, 352, 352, generator=gen)
    cond = torch.randn(1, config.projection_dim, generator=gen)
    with torch.no_grad():
        logits = model(pixel_values=pixels, conditional_embeddings=cond).logits
        last = [m for m in model.decoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
        scale = std / float(logits.std())
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        last.bias.add_(mean - float(logits.mean()) * scale)


def save_random_clipseg(
    path: str | Path,
    *,
    full_size: bool = False,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 3,
    extract_layers: list[int] | None = None,
) -> Path:
    """Build a random-weight CLIPSeg with the real input geometry and save it.

    Args:
        path: directory to write (created).
        full_size: use the rd64-refined architecture (ViT-B/16, 512-d text,
            reduce_dim 64, complex transposed convolution) instead of tiny widths.
        seed: torch seed for the random weights.
        hidden_size: vision/text width of the tiny model.
        layers: vision/text depth of the tiny model.
        extract_layers: vision layers the tiny model's decoder reads (default
            ``1 .. layers - 1``, so that every layer is read; the real rd64 model reads
            ``[3, 6, 9]`` of 12).

    Returns:
        The directory, loadable with ``streammask.load_clipseg(path)``.
    """
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _write_tokenizer(path)
    text = dict(vocab_size=tok["vocab_size"], bos_token_id=tok["bos"], eos_token_id=tok["eos"], pad_token_id=tok["eos"],
                max_position_embeddings=77)
    vision = dict(image_size=352, patch_size=16)
    if full_size:
        config = CLIPSegConfig(
            text_config=dict(text, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
            vision_config=dict(vision, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
            projection_dim=512, extract_layers=[3, 6, 9], reduce_dim=64, decoder_num_attention_heads=4,
            decoder_intermediate_size=2048, use_complex_transposed_convolution=True,
        )
    else:
        config = CLIPSegConfig(
            text_config=dict(text, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                             num_attention_heads=2),
            vision_config=dict(vision, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                               num_hidden_layers=layers, num_attention_heads=2),
            projection_dim=32,
            extract_layers=list(extract_layers) if extract_layers is not None else list(range(1, layers)), reduce_dim=16, decoder_num_attention_heads=2,
            decoder_intermediate_size=32, use_complex_transposed_convolution=True,
        )
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config).eval()
    _calibrate_logits(model, config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=77)
    from transformers import ViTImageProcessor

    try:  # transformers >= 5 names the PIL-based processor explicitly
        from transformers import ViTImageProcessorPil as _PilProcessor
    except ImportError:  # transformers 4.x: the "slow" processor is the PIL one
        _PilProcessor = ViTImageProcessor
    image_processor = _PilProcessor(do_resize=True, size={"height": 352, "width": 352}, resample=2, do_rescale=True,
                                    rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    # The hub repositories hold preprocessor_config.json + tokenizer files side by side.
    image_processor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class NullSegmenter:
    """A :class:`~streammask.pipeline.Segmenter` with (almost) no cost: fixed logits of the right shape.

    With it the pipeline is bound by decode, post-processing and the encoders, as it is behind a
    fast GPU model. The logits are a soft disc (so the mask has edges for the encoders to code,
    unlike a constant), built once per ``(prompts, size)`` on the frames' device and expanded
    (no copy) to the batch.

    Args:
        device: where the logits live (the frames' device).
        size: the model side the pipeline asks for by default (352, CLIPSeg's).
    """

    dtype = torch.float32

    def __init__(self, *, device: str | torch.device = "cpu", size: int = 352) -> None:
        self.device = torch.device(device)
        self.size = size
        self.calls = 0
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def segment(self, frames: torch.Tensor, prompts, *, preprocess: str = "pil", size: int | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 frames -> ``(B, P, S, S)`` float32 logits (a disc, the same for every frame)."""
        side = int(size or self.size)
        key = (len(prompts), side, str(frames.device))
        base = self._cache.get(key)
        if base is None:
            r = torch.linspace(-1.0, 1.0, side, device=frames.device)
            dist = torch.sqrt(r[None, :] ** 2 + r[:, None] ** 2)
            base = ((0.6 - dist) * 12.0).expand(len(prompts), side, side).contiguous()
            self._cache[key] = base
        self.calls += 1
        return base.unsqueeze(0).expand(frames.shape[0], -1, -1, -1)


def save_random_sam3_video(path: str | Path, *, seed: int = 0, image_size: int = 224, hidden_size: int = 32,
                           max_num_objects: int = 8, num_queries: int = 16, full_size: bool = False,
                           **config_overrides) -> Path:
    """Build a random-weight SAM 3 video model with tiny widths and save it (safetensors, tokenizer, processor config).

    The architecture is transformers' ``Sam3VideoModel`` (detector: ViT + DETR + mask decoder; tracker:
    memory attention + memory encoder) with tiny widths, a ``image_size`` input (224 by default instead of
    1008, so a frame takes a few hundred milliseconds on a CPU) and its geometry derived from it
    (patch 14: a 16x16 token grid, feature maps 64/32/16, 64x64 mask logits). The memory encoder keeps 64
    output channels (the tracker's pointer split needs it). The weights are random, then calibrated so the
    model behaves like a detector-tracker: the detector's query scores get a spread of ~3 logits (a few of
    its ``num_queries`` queries pass the 0.5 / 0.7 thresholds per frame), its presence score is near 1, the
    mask logits of detector and tracker get a spread of ~4, and the tracker's object score is positive (a
    tracked object stays). Which objects it finds is noise: tests check the machinery (ids, memory,
    outputs), not what is segmented.

    With ``full_size`` the architecture is transformers' ``Sam3VideoConfig()`` defaults, ``facebook/sam3``'s
    (~860 M parameters, 1008x1008 input, 288x288 mask logits, 200 queries), random and not calibrated (for speed
    and memory measurements: ``benchmarks/sam3_bench.py``); the width arguments are then ignored.

    Args:
        path: directory to write (created).
        seed: torch seed for the random weights.
        image_size: the model's square input (a multiple of 14 whose token grid is even).
        hidden_size: width of the vision and text towers.
        max_num_objects: the model's cap on objects tracked at once.
        num_queries: the detector's object queries.
        config_overrides: further ``Sam3VideoConfig`` fields (``hotstart_delay``, ``recondition_every_nth_frame``...).

    Returns:
        The directory, loadable with ``streammask.model.sam3.load_sam3(path)`` or ``--model PATH``.
    """
    from transformers import Sam3VideoConfig, Sam3VideoModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _write_tokenizer(path)
    if full_size:
        config = Sam3VideoConfig(**config_overrides)
        torch.manual_seed(seed)
        Sam3VideoModel(config).eval().save_pretrained(path, safe_serialization=True)
        _save_sam3_processing(path, config.image_size, config.low_res_mask_size)
        return path
    h, patch = hidden_size, 14
    grid = image_size // patch
    vit = dict(model_type="sam3_vit_model", hidden_size=h, intermediate_size=2 * h, num_hidden_layers=2,
               num_attention_heads=2, image_size=image_size, patch_size=patch, window_size=grid // 2,
               global_attn_indexes=[1], pretrain_image_size=image_size)
    sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    # the tracker's width (fpn_hidden_size) must be a multiple of the memory encoder's 64 output channels, and
    # above it: transformers' object pointers only come out in the right shape when they are split into 64s
    width = 128
    vision = dict(model_type="sam3_vision_model", backbone_config=vit, fpn_hidden_size=width, backbone_feature_sizes=sizes)
    small = dict(hidden_size=width, num_attention_heads=2, intermediate_size=2 * width)
    detector = dict(
        vision_config=vision,
        text_config=dict(vocab_size=tok["vocab_size"], bos_token_id=tok["bos"], eos_token_id=tok["eos"],
                         pad_token_id=tok["eos"], hidden_size=h, intermediate_size=2 * h, projection_dim=h,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32),
        geometry_encoder_config=dict(small, num_layers=1), detr_encoder_config=dict(small, num_layers=1),
        detr_decoder_config=dict(small, num_layers=1, num_queries=num_queries),
        mask_decoder_config=dict(hidden_size=width, num_attention_heads=2))
    tracker = dict(
        vision_config=vision, image_size=image_size,
        prompt_encoder_config=dict(hidden_size=width, image_size=image_size),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=2 * width, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=width, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * width, memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=width, memory_encoder_output_channels=64, mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=2 * width)
    # a random tracker's masks do not follow its objects, so a detection is matched to a track at a low IoU
    # (real SAM 3: 0.1); otherwise every frame's detections would all be new objects
    config_overrides.setdefault("assoc_iou_thresh", 0.02)
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker, max_num_objects=max_num_objects,
                             low_res_mask_size=4 * grid, **config_overrides)
    torch.manual_seed(seed)
    model = Sam3VideoModel(config).eval()
    _calibrate_sam3(model, config, image_size, tok)
    model.save_pretrained(path, safe_serialization=True)
    _save_sam3_processing(path, image_size, 4 * grid)
    return path


def _save_sam3_processing(path: Path, image_size: int, mask_size: int) -> None:
    """The tokenizer (padded to 32 positions) and the processor config of a SAM 3 model directory."""
    from transformers import CLIPTokenizer

    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=32).save_pretrained(path)
    # what Sam3VideoProcessor(Sam3ImageProcessor, Sam2VideoVideoProcessor, tokenizer).save_pretrained writes in
    # transformers 5 (building them needs torchvision; the file is plain JSON): Sam3VideoProcessor.from_pretrained
    # loads it (tests/model/test_sam3_references.py)
    size = {"height": image_size, "width": image_size}
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True, "resample": 2,
              "rescale_factor": 1 / 255, "size": size}
    processor = {
        "image_processor": {**common, "image_processor_type": "Sam3ImageProcessor", "image_mean": [0.5, 0.5, 0.5],
                            "image_std": [0.5, 0.5, 0.5], "mask_size": {"height": mask_size, "width": mask_size}},
        "processor_class": "Sam3VideoProcessor", "target_size": image_size,
        "video_processor": {**common, "video_processor_type": "Sam2VideoVideoProcessor", "return_metadata": False,
                            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    }
    (path / "processor_config.json").write_text(json.dumps(processor, indent=2), encoding="utf-8")


def _calibrate_sam3(model, config, image_size: int, tok: dict[str, int]) -> None:
    """Give the random SAM 3 realistic output ranges (see :func:`save_random_sam3_video`): every change scales
    or shifts a last linear layer, so the outputs stay deterministic functions of the input."""
    from transformers.models.sam3_video import modeling_sam3_video
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    from .model.sam3_kernels import install_local_kernels

    install_local_kernels(modeling_sam3_video)  # never fetch a kernel from the hub

    gen = torch.Generator().manual_seed(4321)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
    pixels = torch.stack([xx, yy, xx * yy]).unsqueeze(0) + 0.3 * torch.randn(1, 3, image_size, image_size,
                                                                             generator=gen)
    ids = torch.full((1, 32), tok["eos"], dtype=torch.long)
    ids[0, 0], ids[0, 1], ids[0, 2] = tok["bos"], 5, tok["eos"]
    mask = torch.zeros(1, 32, dtype=torch.long)
    mask[0, :3] = 1
    det = model.detector_model
    scoring = det.dot_product_scoring
    with torch.no_grad():
        det.detr_decoder.presence_head.layer3.bias.fill_(8.0)  # the prompt is present: scores = query scores
        vision = det.get_vision_features(pixel_values=pixels)
        text = det.get_text_features(input_ids=ids, attention_mask=mask, return_dict=True)
        out = det(vision_embeds=vision, text_embeds=text, attention_mask=mask)
        k = 2.0 / float(out.pred_logits.std())
        scoring.query_proj.weight.mul_(k)
        scoring.query_proj.bias.mul_(k)
        # and a mean of -1.5 (channel 0 of the query . text product becomes a constant): ~1 in 8 queries pass 0.7
        for layer, value in ((scoring.query_proj, 1.0), (scoring.text_proj, -1.5 / scoring.scale)):
            layer.weight[0].zero_()
            layer.bias[0] = value
        last = det.mask_decoder.mask_embedder.layers[-1]
        k = 4.0 / float(out.pred_masks.std())
        last.weight.mul_(k)
        last.bias.mul_(k)
        # masks cover ~12 % of the frame, not half: channel 0 of the dot product becomes a constant -4.7
        projection = det.mask_decoder.instance_projection
        projection.weight[0].zero_()
        projection.bias[0] = -1.0
        last.weight[0].zero_()
        last.bias[0] = 4.7
        decoder = model.tracker_model.mask_decoder
        decoder.pred_obj_score_head.proj_out.bias.fill_(4.0)
        seen: list[torch.Tensor] = []
        hook = decoder.register_forward_hook(lambda mod, args, result: seen.append(result[0].detach()))
        try:
            session = Sam3VideoInferenceSession(dtype=torch.float32)
            pid = session.add_prompt("probe")
            session.prompt_input_ids[pid], session.prompt_attention_masks[pid] = ids, mask
            for i in range(2):
                model(inference_session=session, frame=pixels[0].roll(4 * i, dims=-1), frame_idx=i)
        finally:
            hook.remove()
        if seen:
            k = 4.0 / float(torch.cat([s.flatten() for s in seen]).std())
            for mlp in decoder.output_hypernetworks_mlps:
                mlp.proj_out.weight.mul_(k)
                mlp.proj_out.bias.mul_(k)
