"""CLIPSeg loading and batched inference.

The model is loaded once (:func:`load_clipseg`), each prompt's text embedding is
computed once and cached (:meth:`ClipSeg.text_embeddings`), frames are
preprocessed on the model's device and run under ``torch.inference_mode()``.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import ModelLoadError, ParameterError
from .hub import from_pretrained, loading, model_source
from .options import ATTN_IMPLEMENTATIONS, DTYPES, model_speed_options, resolve_device, resolve_dtype
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, image_config, pil_resize_bilinear, pil_resize_cpu
from .prompts import check_prompt_tokens, prompt_token_limit
from .sam3 import is_sam3_model, load_sam3, sam3_options

__all__ = ["DEFAULT_MODEL", "ClipSeg", "load_clipseg", "load_from_settings", "resolve_device", "resolve_dtype", "Preprocess",
           "ATTN_IMPLEMENTATIONS", "DTYPES"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "CIDAS/clipseg-rd64-refined"
Preprocess = Literal["pil", "imagenet_float"]


def load_clipseg(
    model: str | os.PathLike = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    local_files_only: bool | None = None,
    attn_implementation: str = "auto",
    channels_last: bool = False,
    compile: bool = False,
) -> "ClipSeg":
    """Load CLIPSeg weights, tokenizer and preprocessing settings once.

    Args:
        model: a Hugging Face model id (default ``CIDAS/clipseg-rd64-refined``)
            or a local directory holding ``config.json``, ``model.safetensors``,
            the tokenizer files and ``preprocessor_config.json``.
        revision: branch, tag or commit of a hub model (pin it for reproducibility).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        dtype: ``auto`` (float16 on CUDA, float32 on CPU) | ``float32`` | ``float16`` | ``bfloat16``
            | ``int8`` (CPU only: the vision tower's linear layers, > 95 % of the model's
            work, quantized to int8 with ``torch.ao``'s dynamic quantization, about
            2x faster on an x86 CPU; tolerance in ``benchmarks/RESULTS.md``).
        local_files_only: never touch the network (default: only when
            ``HF_HUB_OFFLINE`` is set or ``model`` is a local directory).
        attn_implementation: ``auto`` (transformers' default: SDPA for CLIPSeg in
            transformers >= 4.4x), ``sdpa`` (asked for explicitly; falls back to the
            default, with a debug log, where this transformers' CLIPSeg lacks it) or
            ``eager`` (the reference attention).
        channels_last: convert the convolution weights and the model input to
            ``torch.channels_last`` (off by default: it does not help CLIPSeg on a CPU,
            see ``benchmarks/RESULTS.md``; GPU effect not measured).
        compile: ``torch.compile`` the vision encoder and the decoder (the text encoder
            runs once per prompt and stays eager). The first batch of each new shape
            pays the compilation (tens of seconds on a CPU).

    Raises:
        SourceNotFoundError: ``model`` is a path that does not exist.
        ModelLoadError: the weights cannot be fetched or are not safetensors.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPSegForImageSegmentation

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if dtype == "int8" and compile:
        raise ParameterError("compile", compile, "False with dtype 'int8' (torch.compile of dynamically quantized "
                             "layers is not supported here)")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ParameterError("attn_implementation", attn_implementation,
                             "one of " + ", ".join(repr(a) for a in ATTN_IMPLEMENTATIONS))
    src = model_source(model, revision, local_files_only=local_files_only)
    name = src.name
    kwargs = dict(revision=revision, local_files_only=src.offline)
    with loading(src, revision, what="CLIPSeg"):
        net = from_pretrained(CLIPSegForImageSegmentation, name, attn_implementation, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        processor = AutoImageProcessor.from_pretrained(name, **kwargs)
    net = net.to(device=dev, dtype=dt).eval()
    dropped = drop_unused_vision_layers(net)
    if dtype == "int8":
        _quantize_int8(net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        _compile(net)
    seg = ClipSeg(net, tokenizer, processor, device=dev, dtype=dt, name=name)
    seg.channels_last, seg.compiled = bool(channels_last), bool(compile)
    seg.quantized = "int8" if dtype == "int8" else None
    seg.vision_layers = (len(net.clip.vision_model.encoder.layers), len(net.clip.vision_model.encoder.layers) + dropped)
    return seg


def load_from_settings(settings: Mapping[str, Any]):
    """:func:`load_clipseg` with the model keys of a settings mapping (``model``, ``revision``, ``device``,
    ``dtype`` and :data:`~streammask.model.options.MODEL_SPEED_PARAMS`; defaults where missing or ``None``),
    or :func:`~streammask.model.sam3.load_sam3` when the model is a SAM 3 video model (its ``config.json``;
    then :data:`~streammask.model.sam3.SAM3_PARAMS` apply too)."""
    if is_sam3_model(settings.get("model"), settings.get("revision")):
        return load_sam3(settings["model"], revision=settings.get("revision"), device=settings.get("device") or "auto",
                         dtype=settings.get("dtype") or "auto", **model_speed_options(settings), **sam3_options(settings))
    return load_clipseg(settings.get("model") or DEFAULT_MODEL, revision=settings.get("revision"),
                        device=settings.get("device") or "auto", dtype=settings.get("dtype") or "auto",
                        **model_speed_options(settings))


def drop_unused_vision_layers(net, *, check: bool = True) -> int:
    """Remove the vision encoder layers whose output nothing reads; exact.

    CLIPSeg's decoder reads the hidden states of ``config.extract_layers`` only
    (``[3, 6, 9]`` of 12 for rd64-refined); the layers after the deepest one feed
    nothing but the pooled CLIP image embedding, which text-prompted segmentation
    never uses. transformers still runs them, so dropping them saves 2 of 12 layers
    (~1.2x model speed) without changing a single logit.

    With ``check`` (default), the trimmed and the full model are run once on a fixed
    random input (batch 1) and the layers are kept if the logits differ (a
    transformers version whose decoder reads more of the tower).

    Args:
        net: a loaded ``CLIPSegForImageSegmentation`` (changed in place).
        check: verify on one input before committing to the trimmed tower.

    Returns:
        The number of layers dropped (0 when every layer is read).
    """
    encoder = net.clip.vision_model.encoder
    layers = encoder.layers
    extract = list(getattr(net, "extract_layers", None) or [])
    if not extract:
        return 0
    keep = max(extract) + 1
    if keep >= len(layers):
        return 0
    trimmed = layers[:keep]
    if check:
        param = next(net.parameters())
        side = net.config.vision_config.image_size
        gen = torch.Generator().manual_seed(0)
        pixels = torch.randn(1, 3, side, side, generator=gen).to(param.device, param.dtype)
        cond = torch.randn(1, net.config.projection_dim, generator=gen).to(param.device, param.dtype)
        with torch.inference_mode():
            full = net(pixel_values=pixels, conditional_embeddings=cond).logits.float()
            encoder.layers = trimmed
            try:
                short = net(pixel_values=pixels, conditional_embeddings=cond).logits.float()
            finally:
                encoder.layers = layers
        tol = 1e-5 if param.dtype == torch.float32 else 1e-2
        if short.shape != full.shape or not torch.allclose(short, full, atol=tol, rtol=tol):
            log.debug("the decoder reads vision layers beyond extract_layers in this transformers: keeping all %d",
                      len(layers))
            return 0
    encoder.layers = trimmed
    return len(layers) - keep


def _quantize_int8(net) -> None:
    """Dynamic int8 quantization (weights int8 per output channel, activations quantized
    per call) of the vision tower's linear layers, in place; the text tower (run once per
    prompt) and the decoder (~2 % of the work) stay float32."""
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:  # pragma: no cover - depends on the torch build
        raise ModelLoadError("--dtype int8 needs torch.ao.quantization.quantize_dynamic, which this torch build lacks; "
                             "use --dtype float32") from None
    # torch marks torch.ao.quantization as deprecated in favour of torchao (pytorch/ao#2259); torch 2.13's eager
    # dynamic quantization still runs, and is the only int8 CPU path without a new dependency
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        quantize_dynamic(net.clip.vision_model.encoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


def attention_implementation(net) -> str | None:
    """The attention implementation transformers chose for a loaded model (``sdpa``, ``eager``, ...)."""
    config = getattr(net, "config", None)
    return getattr(config, "_attn_implementation", None)


def _compile(net) -> None:
    """``torch.compile`` the per-frame parts in place: the vision tower and the decoder.

    Both the one-call forward and the vision-once / decoder-per-prompt path go through
    these two modules, so both run compiled.
    """
    net.clip.vision_model.compile()
    net.decoder.compile()


class ClipSeg:
    """A loaded CLIPSeg model: prompt embeddings cached, frames in, logits out.

    Build one with :func:`load_clipseg`. Thread-safe for one inference thread.
    """

    def __init__(self, model, tokenizer, processor, *, device: torch.device, dtype: torch.dtype, name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.name = name
        self.image = image_config(processor)
        self.text_encode_calls = 0  # how many prompts were run through the text encoder
        self._embeddings: dict[str, torch.Tensor] = {}
        self._mean_std_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._split = None  # whether the vision-once / decoder-per-prompt fast path is usable
        self.channels_last = False  # feed the model channels_last input (set by load_clipseg)
        self.compiled = False  # vision tower and decoder run through torch.compile
        self.quantized: str | None = None  # "int8": the vision tower's linear layers are dynamically quantized
        self.vision_layers = (0, 0)  # (vision layers run, layers in the checkpoint), set by load_clipseg

    @property
    def size(self) -> int:
        """Side of the model's square input (352 for CLIPSeg)."""
        return self.image.size

    def __repr__(self) -> str:
        dtype = self.quantized or str(self.dtype).removeprefix("torch.")
        return f"ClipSeg(name={self.name!r}, device={self.device}, dtype={dtype}, size={self.size})"

    # -- prompts -------------------------------------------------------------
    @property
    def max_prompt_tokens(self) -> int | None:
        """The longest prompt the text encoder takes, in tokens (77 for CLIP, start and end included)."""
        return prompt_token_limit(self.tokenizer, self.model)

    def check_prompts(self, prompts: Sequence[str | tuple[str, str]]) -> None:
        """Refuse prompts longer than :attr:`max_prompt_tokens` (never truncated silently).

        Args:
            prompts: texts, or ``(label, text)`` pairs where ``label`` names the parameter.

        Raises:
            ParameterError: naming the parameter, the prompt, its token count and the limit.
        """
        pairs = [p if isinstance(p, tuple) else ("prompt", p) for p in prompts]
        check_prompt_tokens(self.tokenizer, pairs, limit=self.max_prompt_tokens)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(P, D)`` conditional embeddings, each prompt encoded once per model.

        Raises:
            ParameterError: a prompt is longer than :attr:`max_prompt_tokens`.
        """
        missing = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if missing:
            self.check_prompts(missing)
            with self._lock, torch.inference_mode():
                tok = self.tokenizer(missing, padding=True, return_tensors="pt")
                ids = tok["input_ids"].to(self.device)
                mask = tok["attention_mask"].to(self.device)
                emb = self.model.get_conditional_embeddings(batch_size=len(missing), input_ids=ids, attention_mask=mask)
                self.text_encode_calls += len(missing)
                for p, e in zip(missing, emb):
                    self._embeddings[p] = e.clone()
        return torch.stack([self._embeddings[p] for p in prompts])

    # -- pixels --------------------------------------------------------------
    def preprocess(self, frames: torch.Tensor, *, mode: Preprocess = "pil", size: int | None = None) -> torch.Tensor:
        """Frames to model input.

        Args:
            frames: ``(B, 3, H, W)`` uint8 RGB on any device; ``imagenet_float`` also
                takes float frames in ``[0, 1]`` (used as they are, never quantized).
            mode: ``pil`` resizes the uint8 frames exactly as ``CLIPSegProcessor``'s
                PIL path (antialiased bilinear) and normalises with the processor's
                mean/std; ``imagenet_float`` follows the masquerade node: float
                frames normalised with ImageNet statistics, then resized with
                antialiased bilinear interpolation.
            size: square side (default: the processor's, 352).

        Returns:
            ``(B, 3, S, S)`` pixel values in the model's dtype on its device.
        """
        size = size or self.size
        if mode == "pil":
            if frames.device.type == "cpu":
                small = pil_resize_cpu(frames, size)
            else:
                small = pil_resize_bilinear(frames, (size, size))
            x = small.to(self.device).float() * self.image.rescale
            mean, std = self._mean_std("pil")
            return ((x - mean) / std).to(self.dtype)
        if mode == "imagenet_float":
            x = frames.to(self.device).float()
            if frames.dtype == torch.uint8:
                x = x / 255.0
            mean, std = self._mean_std("imagenet_float")
            x = (x - mean) / std
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return x.to(self.dtype)
        raise ParameterError("preprocess", mode, "'pil' or 'imagenet_float'")

    def _mean_std(self, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, 3, 1, 1)`` float32 mean and std of a preprocessing mode, on the device, made once
        (a small copy from pageable memory per batch would make the host wait for the GPU)."""
        cache = self._mean_std_cache
        if mode not in cache:
            mean, std = (self.image.mean, self.image.std) if mode == "pil" else (IMAGENET_MEAN, IMAGENET_STD)
            cache[mode] = tuple(torch.tensor(v, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
                                for v in (mean, std))
        return cache[mode]

    # -- inference -----------------------------------------------------------
    @torch.inference_mode()
    def segment(self, frames: torch.Tensor, prompts: Sequence[str], *, preprocess: Preprocess = "pil",
                 size: int | None = None) -> torch.Tensor:
        """The :class:`~streammask.pipeline.Segmenter` interface: uint8 ``(B, 3, H, W)`` frames to
        ``(B, P, S, S)`` float32 logits."""
        return self.logits(self.preprocess(frames, mode=preprocess, size=size), prompts)


    def logits(self, pixel_values: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Run the model.

        Args:
            pixel_values: ``(B, 3, S, S)`` from :meth:`preprocess`.
            prompts: ``P`` prompt texts.

        Returns:
            ``(B, P, S, S)`` float32 logits.
        """
        emb = self.text_embeddings(prompts).to(self.dtype)
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        b, p = pixel_values.shape[0], emb.shape[0]
        if self._split is None:
            self._split = self._check_split(pixel_values[:1], emb[:1])
        if self._split and p > 1:
            out = self._split_forward(pixel_values, emb)
        else:
            pv = pixel_values.repeat_interleave(p, dim=0) if p > 1 else pixel_values
            ce = emb.repeat(b, 1)
            out = self._forward(pv, ce)
        return out.float().reshape(b, p, *out.shape[-2:])

    def _forward(self, pixel_values: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        size = pixel_values.shape[-1]
        kwargs = {"interpolate_pos_encoding": True} if size != self.model.config.vision_config.image_size else {}
        logits = self.model(pixel_values=pixel_values, conditional_embeddings=cond, **kwargs).logits
        if logits.dim() == 2:  # transformers < 4.39 squeezes a batch of one
            logits = logits.unsqueeze(0)
        return logits

    def _activations(self, pixel_values: torch.Tensor):
        size = pixel_values.shape[-1]
        kwargs = {"interpolate_pos_encoding": True} if size != self.model.config.vision_config.image_size else {}
        out = self.model.clip.vision_model(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states
        return [hidden[i + 1] for i in self.model.extract_layers]

    def _split_forward(self, pixel_values: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Vision encoder once per frame, decoder once per (frame, prompt)."""
        b, p = pixel_values.shape[0], emb.shape[0]
        acts = [a.repeat_interleave(p, dim=0) for a in self._activations(pixel_values)]
        out = self.model.decoder(acts, emb.repeat(b, 1))
        logits = out.logits if hasattr(out, "logits") else out[0]
        if logits.dim() == 2:
            logits = logits.unsqueeze(0)
        return logits

    def _check_split(self, pv: torch.Tensor, emb: torch.Tensor) -> bool:
        try:
            a = self._split_forward(pv, emb).float()
            b = self._forward(pv, emb).float()
        except Exception as exc:  # internal layout of this transformers version differs
            log.debug("vision-once fast path unavailable: %s", exc)
            return False
        return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-3, rtol=1e-3))
