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

__all__ = ["save_random_clipseg", "NullSegmenter"]

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
