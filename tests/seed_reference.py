"""Reference implementations of the three seed ComfyUI nodes (test helpers).

Each function is the seed node's code from ``../shared/seeds/`` with only the
changes needed to run it here, every one marked ``# ref:`` in the code:

* mixlab "CLIPSeg" (seed 000) -> :func:`mixlab_segment_image`
* essentials "Apply CLIPSeg+" (seed 001) -> :func:`essentials_apply_clipseg`
* masquerade "Mask By Text" (seed 003) -> :func:`masquerade_get_mask`

They take ComfyUI ``IMAGE`` batches (``(B, H, W, 3)`` float32 in ``[0, 1]``) and
return what the node returns. They run the same (random-weight) Hugging Face
CLIPSeg as streammask, but the way each seed runs it: through
``CLIPSegProcessor``'s PIL path one frame at a time with the text re-encoded
per frame (mixlab, essentials), or through the seed's own float preprocessing
(masquerade). Post-processing uses the libraries the seeds used: numpy,
scipy.ndimage, OpenCV, matplotlib, PIL, and pure-torch copies of torchvision's
tensor ``gaussian_blur`` (v2, which essentials imports) and of the v1 ``Normalize`` /
``Resize`` masquerade uses: torchvision does not install beside the CPU torch of the
main test run. Each hand-written imitation is checked against the real library call
(``tests/test_references_real.py``; ``tests/test_references_torchvision.py`` where
torchvision is installed). Pass the real functions to run the real library
instead: ``gaussian_blur`` (:func:`essentials_apply_clipseg`), ``transforms``
(:func:`masquerade_get_mask`).

None of this code is imported by streammask: it is the independent oracle.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from matplotlib import cm
from PIL import Image
from scipy.ndimage import gaussian_filter

__all__ = [
    "load_processor_and_model",
    "mixlab_segment_image",
    "essentials_apply_clipseg",
    "masquerade_get_mask",
    "tv_gaussian_blur",
    "expand_mask",
]


# ---------------------------------------------------------------------------
# model loading: the PIL CLIPSegProcessor the seeds were written against
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def load_processor_and_model(model_dir: str | Path):
    """``(CLIPSegProcessor, CLIPSegForImageSegmentation)`` on the CPU, float32, eval.

    The image processor is built explicitly as the PIL one (``ViTImageProcessorPil``
    in transformers >= 5, the "slow" ``ViTImageProcessor`` before): that is the
    processor the seeds ran with (transformers 5 with torchvision installed would
    otherwise pick the torchvision backend, which resizes differently).
    Cached: the seeds reload per call, which only costs time.
    """
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor, CLIPTokenizer

    try:
        from transformers import ViTImageProcessorPil as PilProcessor
    except ImportError:  # transformers 4.x: the slow processor is the PIL one
        from transformers import ViTImageProcessor as PilProcessor

    model_dir = str(model_dir)
    image_processor = PilProcessor.from_pretrained(model_dir)
    tokenizer = CLIPTokenizer.from_pretrained(model_dir)
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model = CLIPSegForImageSegmentation.from_pretrained(model_dir, use_safetensors=True).float().eval()
    return processor, model


# ---------------------------------------------------------------------------
# helpers the seeds import from their packages (not in the seed files)
# ---------------------------------------------------------------------------
def pil2tensor(image: Image.Image) -> torch.Tensor:
    """ComfyUI's usual ``pil2tensor``: ``(1, H, W[, C])`` float32 / 255."""
    return torch.from_numpy(np.array(image).astype(np.float32) / 255.0).unsqueeze(0)


# mixlab's helpers (comfyui-mixlab-nodes, next to the node)
def apply_colormap(mask: torch.Tensor, colormap) -> np.ndarray:
    colormap_mask = colormap(mask.numpy())[:, :, :3]
    return (colormap_mask * 255).astype(np.uint8)


def resize_image(image: np.ndarray, dimensions: Tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, dimensions, interpolation=cv2.INTER_LINEAR)


def overlay_image(background: np.ndarray, foreground: np.ndarray, alpha: float) -> np.ndarray:
    return cv2.addWeighted(background, 1 - alpha, foreground, alpha, 0)


def dilate_mask(mask: torch.Tensor, dilation_factor: float) -> torch.Tensor:
    kernel_size = int(dilation_factor * 2) + 1
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    mask_dilated = cv2.dilate(mask.numpy(), kernel, iterations=1)
    return torch.from_numpy(mask_dilated)


def numpy_to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None,]


# essentials' helper (ComfyUI_essentials, utils.py)
def expand_mask(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    c = 0 if tapered_corners else 1
    kernel = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    mask = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
    out = []
    for m in mask:
        output = m.numpy()
        for _ in range(abs(expand)):
            if expand < 0:
                output = scipy.ndimage.grey_erosion(output, footprint=kernel)
            else:
                output = scipy.ndimage.grey_dilation(output, footprint=kernel)
        out.append(torch.from_numpy(output))
    return torch.stack(out, dim=0)


# torchvision.transforms.v2.functional.gaussian_blur for tensors: the node imports
# ``torchvision.transforms.v2 as T`` (cubiq/ComfyUI_essentials segmentation.py). A pure-torch copy of
# torchvision 0.29.1's transforms/v2/functional/_misc.py (_get_gaussian_kernel1d, _get_gaussian_kernel2d,
# gaussian_blur_image), so the main suite runs without torchvision; tests/test_references_torchvision.py
# checks it against the real call.
def _get_gaussian_kernel1d(kernel_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel_size, dtype=dtype, device=device)
    kernel1d = torch.softmax(x.div(sigma).pow(2).neg(), dim=0)
    return kernel1d


def _get_gaussian_kernel2d(kernel_size, sigma, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    kernel1d_x = _get_gaussian_kernel1d(kernel_size[0], sigma[0], dtype, device)
    kernel1d_y = _get_gaussian_kernel1d(kernel_size[1], sigma[1], dtype, device)
    kernel2d = kernel1d_y.unsqueeze(-1) * kernel1d_x
    return kernel2d


def tv_gaussian_blur(image: torch.Tensor, kernel_size, sigma=None) -> torch.Tensor:
    """``torchvision.transforms.v2.functional.gaussian_blur(image, kernel_size, sigma)`` for a plain tensor.

    A non-floating input (a ``bool`` mask, ``uint8``) is blurred in float32,
    then ``round_()``-ed (half to even) and cast back to its dtype.
    """
    if isinstance(kernel_size, int):
        kernel_size = [kernel_size, kernel_size]
    elif len(kernel_size) != 2:
        raise ValueError(f"If kernel_size is a sequence its length should be 2. Got {len(kernel_size)}")
    for ksize in kernel_size:
        if ksize % 2 == 0 or ksize < 0:
            raise ValueError(f"kernel_size should have odd and positive integers. Got {kernel_size}")

    if sigma is None:
        sigma = [ksize * 0.15 + 0.35 for ksize in kernel_size]
    elif isinstance(sigma, (list, tuple)):
        sigma = [sigma[0], sigma[0]] if len(sigma) == 1 else list(sigma)
    else:
        sigma = [float(sigma), float(sigma)]
    for s in sigma:
        if s <= 0.0:
            raise ValueError(f"sigma should have positive values. Got {sigma}")

    if image.numel() == 0:
        return image

    dtype = image.dtype
    shape = image.shape
    ndim = image.ndim
    if ndim == 3:
        image = image.unsqueeze(dim=0)
    elif ndim > 4:
        image = image.reshape((-1,) + shape[-3:])

    fp = torch.is_floating_point(image)
    kernel = _get_gaussian_kernel2d(kernel_size, sigma, dtype=dtype if fp else torch.float32, device=image.device)
    kernel = kernel.expand(shape[-3], 1, kernel.shape[0], kernel.shape[1])

    output = image if fp else image.to(dtype=torch.float32)

    # padding = (left, right, top, bottom)
    padding = [kernel_size[0] // 2, kernel_size[0] // 2, kernel_size[1] // 2, kernel_size[1] // 2]
    output = F.pad(output, padding, mode="reflect")
    output = F.conv2d(output, kernel, groups=shape[-3])

    if ndim == 3:
        output = output.squeeze(dim=0)
    elif ndim > 4:
        output = output.reshape(shape)

    if not fp:
        output = output.round_().to(dtype=dtype)

    return output


# masquerade's helper (masquerade-nodes-comfyui, MaskNodes.py)
def tensor2rgb(t: torch.Tensor) -> torch.Tensor:
    size = t.size()
    if len(size) < 4:
        return t.unsqueeze(3).repeat(1, 1, 1, 3)
    if size[3] == 1:
        return t.repeat(1, 1, 1, 3)
    if size[3] == 4:
        return t[:, :, :, :3]
    return t


# ---------------------------------------------------------------------------
# seed 000: mixlab "CLIPSeg"
# ---------------------------------------------------------------------------
def _mixlab_model_call(image_np, text, processor, model):
    """The seed's model call on one uint8 frame: ``outputs`` of ``model(**processor(...))``."""
    i = Image.fromarray(image_np, mode="RGB")
    # ref: the seed reloads processor and model from clipseg_model_dir on every call
    prompt = text
    input_prc = processor(text=prompt, images=i, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**input_prc)
    return outputs


def _mixlab_one(image, text, blur, threshold, dilation_factor, processor, model, logits=None):
    """The seed's ``segment_image`` body for a one-frame ``IMAGE`` (the seed's
    ``squeeze()`` + ``Image.fromarray(mode='RGB')`` only accept one frame)."""
    image_np = image.numpy().squeeze()
    image_np = (image_np * 255).astype(np.uint8)
    if logits is None:
        outputs = _mixlab_model_call(image_np, text, processor, model)
    else:  # ref: the same call made beforehand (mixlab_logits)
        outputs = (logits,)
    # ref: transformers < 4.39 returned the logits of a batch of one squeezed to
    # (352, 352); the seed's code (apply_colormap's [:, :, :3], cv2.dilate) is
    # written for that shape and breaks on today's (1, 352, 352).
    tensor = torch.sigmoid(outputs[0].squeeze(0))
    thresh = threshold
    tensor_thresholded = torch.where(tensor > thresh, tensor, torch.tensor(0, dtype=torch.float))
    sigma = blur
    tensor_smoothed = gaussian_filter(tensor_thresholded.numpy(), sigma=sigma)
    tensor_smoothed = torch.from_numpy(tensor_smoothed)
    mask_normalized = (tensor_smoothed - tensor_smoothed.min()) / (tensor_smoothed.max() - tensor_smoothed.min())
    mask_dilated = dilate_mask(mask_normalized, dilation_factor)
    heatmap = apply_colormap(mask_dilated, cm.viridis)
    binary_mask = apply_colormap(mask_dilated, cm.Greys_r)
    dimensions = (image_np.shape[1], image_np.shape[0])
    heatmap_resized = resize_image(heatmap, dimensions)
    binary_mask_resized = resize_image(binary_mask, dimensions)
    alpha_heatmap, alpha_binary = 0.5, 1
    overlay_heatmap = overlay_image(image_np, heatmap_resized, alpha_heatmap)
    overlay_binary = overlay_image(image_np, binary_mask_resized, alpha_binary)
    image_out_heatmap = numpy_to_tensor(overlay_heatmap)
    image_out_binary = numpy_to_tensor(overlay_binary)
    binary_mask_image = Image.fromarray(binary_mask_resized[..., 0])
    tensor_bw = binary_mask_image.convert("L")
    tensor_bw = pil2tensor(tensor_bw)
    return tensor_bw, image_out_heatmap, image_out_binary


def mixlab_logits(image: torch.Tensor, text: str, *, model_dir) -> torch.Tensor:
    """The logits the mixlab node computes for each frame, ``(B, 1, 352, 352)``
    (its processor call: a PIL image, ``padding="max_length"``)."""
    processor, model = load_processor_and_model(str(model_dir))
    out = []
    for b in range(image.shape[0]):
        image_np = (image[b:b + 1].numpy().squeeze() * 255).astype(np.uint8)
        logits = _mixlab_model_call(image_np, text, processor, model)[0]
        out.append(logits.reshape(1, *logits.shape[-2:]))
    return torch.stack(out)


def mixlab_segment_image(image: torch.Tensor, text: str, blur: float = 3.0, threshold: float = 0.3,
                         dilation_factor: int = 4, *, model_dir,
                         logits: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixlab ``CLIPSeg.segment_image``, one frame at a time.

    Args:
        image: ``(B, H, W, 3)`` float32 in ``[0, 1]``.
        model_dir: the CLIPSeg directory (the seed's ``clipseg_model_dir``).
        logits: ``(B, 1, S, S)`` from :func:`mixlab_logits` (the node's model calls,
            made once), so that several parameter sets can share them; default: call the model.

    Returns:
        ``Mask`` ``(B, H, W)``, ``Heatmap Mask`` ``(B, H, W, 3)``, ``BW Mask``
        ``(B, H, W, 3)``, float32 in ``[0, 1]`` (multiples of 1/255).
    """
    processor, model = load_processor_and_model(str(model_dir))
    outs = [_mixlab_one(image[b:b + 1], text, blur, threshold, dilation_factor, processor, model,
                        None if logits is None else logits[b])
            for b in range(image.shape[0])]
    return tuple(torch.cat([o[k] for o in outs], dim=0) for k in range(3))


# ---------------------------------------------------------------------------
# seed 001: essentials "Apply CLIPSeg+"
# ---------------------------------------------------------------------------
def _essentials_model_call(i, prompt, processor, model):
    """The seed's model call on one uint8 frame: ``model(**processor(...)).logits.unsqueeze(1)``."""
    inputs = processor(text=prompt, images=[i], return_tensors="pt")
    with torch.no_grad():  # ref: the seed runs under ComfyUI's inference mode
        out = model(**inputs)
    return out.logits.unsqueeze(1)


def essentials_logits(image: torch.Tensor, clip_seg, prompt: str) -> torch.Tensor:
    """The logits the essentials node computes for each frame, ``(B, 1, 352, 352)``
    (its processor call: the uint8 array, no padding)."""
    processor, model = clip_seg
    imagenp = image.mul(255).clamp(0, 255).byte().cpu().numpy()
    return torch.cat([_essentials_model_call(i, prompt, processor, model)[:1] for i in imagenp])


def essentials_apply_clipseg(image: torch.Tensor, clip_seg, prompt: str, threshold: float = 0.4, smooth: int = 9,
                             dilate: int = 0, blur: int = 0, *, gaussian_blur=None,
                             logits: torch.Tensor | None = None) -> Tuple[torch.Tensor]:
    """essentials ``ApplyCLIPSeg.execute`` (the seed loops the frames itself).

    Args:
        image: ``(B, H, W, 3)`` float32 in ``[0, 1]``.
        clip_seg: ``(processor, model)``, as essentials' "Load CLIPSeg" returns.
        gaussian_blur: the node's ``T.functional.gaussian_blur`` (``T`` is
            ``torchvision.transforms.v2``); default :func:`tv_gaussian_blur`, the copy.
        logits: ``(B, 1, S, S)`` from :func:`essentials_logits` (the node's model calls,
            made once); default: call the model.

    Returns:
        ``(mask,)`` with mask ``(B, H, W)`` float32 (bicubic: may leave ``[0, 1]``).
    """
    processor, model = clip_seg
    gaussian_blur = tv_gaussian_blur if gaussian_blur is None else gaussian_blur  # ref: T.functional.gaussian_blur

    imagenp = image.mul(255).clamp(0, 255).byte().cpu().numpy()

    outputs = []
    for b, i in enumerate(imagenp):
        if logits is None:
            out = _essentials_model_call(i, prompt, processor, model)
        else:  # ref: the same call made beforehand (essentials_logits)
            out = logits[b:b + 1]
        out = torch.sigmoid(out[0][0])
        out = out > threshold
        outputs.append(out)

    del imagenp

    outputs = torch.stack(outputs, dim=0)

    if smooth > 0:
        if smooth % 2 == 0:
            smooth += 1
        outputs = gaussian_blur(outputs, smooth)

    outputs = outputs.float()

    if dilate != 0:
        outputs = expand_mask(outputs, dilate, True)

    if blur > 0:
        if blur % 2 == 0:
            blur += 1
        outputs = gaussian_blur(outputs, blur)

    # resize to original size
    outputs = F.interpolate(outputs.unsqueeze(1), size=(image.shape[1], image.shape[2]), mode="bicubic").squeeze(1)

    return (outputs,)


# ---------------------------------------------------------------------------
# seed 003: masquerade "Mask By Text"
# ---------------------------------------------------------------------------
class HFDensePred:
    """The call the seed makes on timojl's ``CLIPDensePredT`` — ``model(img, prompts)[0]``
    is ``(N, 1, S, S)`` logits — answered by a Hugging Face ``CLIPSegForImageSegmentation``
    (the model streammask runs), text tokenized per call."""

    def __init__(self, processor, model):
        self.tokenizer = processor.tokenizer
        self.model = model

    def __call__(self, img: torch.Tensor, prompts):
        tok = self.tokenizer(list(prompts), padding=True, return_tensors="pt")
        out = self.model(pixel_values=img, input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                         interpolate_pos_encoding=True)
        return (out.logits.reshape(img.shape[0], 1, *out.logits.shape[-2:]),)


def _imagenet_normalize(img: torch.Tensor) -> torch.Tensor:
    """``transforms.Normalize(mean, std)`` on a tensor: ``(img - mean) / std``."""
    mean = torch.as_tensor([0.485, 0.456, 0.406], dtype=img.dtype).view(-1, 1, 1)
    std = torch.as_tensor([0.229, 0.224, 0.225], dtype=img.dtype).view(-1, 1, 1)
    return img.sub(mean).div(std)


def _tv_resize(img: torch.Tensor, size) -> torch.Tensor:
    """``transforms.Resize(size, antialias=True)`` on a float tensor batch."""
    if list(img.shape[-2:]) == list(size):
        return img
    return F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)


def masquerade_get_mask(image: torch.Tensor, prompt: str, negative_prompt: str, precision: float = 0.5,
                        normalize: str = "no", *, clip_seg, used_dim: int | None = None, transforms=None,
                        logits: tuple | None = None, return_logits: bool = False):
    """masquerade ``ClipSegNode.get_mask``.

    Args:
        image: ``(B, H, W, 3)`` float32 in ``[0, 1]``.
        clip_seg: ``(processor, model)``; the model answers for timojl's ``CLIPDensePredT``.
        used_dim: model input side; ``None`` = the seed's ``max(W, H)``.
        transforms: the node's ``torchvision.transforms`` (v1) module; default: the
            pure-torch copies :func:`_imagenet_normalize` and :func:`_tv_resize`.
        logits: ``(preds, negative_preds)`` of an earlier call (``return_logits``): the
            node's model calls, made once; default: call the model.
        return_logits: also return ``(preds, negative_preds)``: ``(P * B, 1, S, S)``
            logits, prompt-major as the seed batches them (``negative_preds`` ``None``
            without negative prompts).

    Returns:
        ``(thresholded_mask, raw_mask)``, each ``(B, H, W)`` float32 (and the logits).
    """
    model = HFDensePred(*clip_seg)  # ref: self.load_model()
    DELIMITER = "|"
    image = tensor2rgb(image)
    B, H, W, _ = image.shape
    used_dim = max(W, H) if used_dim is None else used_dim  # ref: parameterised (the seed: max(W, H))

    if transforms is not None:
        transform = transforms.Compose([
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            transforms.Resize((used_dim, used_dim), antialias=True)])
    else:
        def transform(x):  # ref: transforms.Compose([Normalize(ImageNet), Resize((d, d), antialias=True)])
            return _tv_resize(_imagenet_normalize(x), (used_dim, used_dim))

    prompts = prompt.split(DELIMITER)
    negative_prompts = negative_prompt.split(DELIMITER) if negative_prompt != "" else []
    if logits is None:
        img = transform(image.permute(0, 3, 1, 2))
        with torch.no_grad():
            dup_prompts = [item for item in prompts for _ in range(B)]
            preds = model(img.repeat(len(prompts), 1, 1, 1), dup_prompts)[0]
            dup_neg_prompts = [item for item in negative_prompts for _ in range(B)]
            negative_preds = model(img.repeat(len(negative_prompts), 1, 1, 1), dup_neg_prompts)[0] if len(negative_prompts) > 0 else None
    else:  # ref: the same calls made beforehand
        preds, negative_preds = logits
    model_logits = (preds, negative_preds)

    preds = torch.nn.functional.interpolate(preds, size=(H, W), mode="nearest")
    preds = torch.sigmoid(preds)
    preds = preds.reshape(len(prompts), B, H, W)
    mask = torch.max(preds, dim=0).values

    if len(negative_prompts) > 0:
        negative_preds = torch.nn.functional.interpolate(negative_preds, size=(H, W), mode="nearest")
        negative_preds = torch.sigmoid(negative_preds)
        negative_preds = negative_preds.reshape(len(negative_prompts), B, H, W)
        mask_neg = torch.max(negative_preds, dim=0).values
        mask = torch.min(mask, 1.0 - mask_neg)

    if normalize == "yes":
        mask_min = torch.min(mask)
        mask_max = torch.max(mask)
        mask_range = mask_max - mask_min
        mask = (mask - mask_min) / mask_range
    thresholded = torch.where(mask >= precision, 1.0, 0.0)
    if return_logits:
        return (thresholded.to(device=image.device), mask.to(device=image.device)), model_logits
    return (thresholded.to(device=image.device), mask.to(device=image.device))


# INPUT_TYPES of the seed nodes, verbatim from ../shared/seeds/ (shared by the variant and ComfyUI tests).
SEED_INPUT_TYPES = {
    "mixlab": {  # 000 mixlab CLIPSeg ('text' is the prompt)
        "required": {"image": ("IMAGE",), "text": ("STRING", {"multiline": False, "dynamicPrompts": False})},
        "optional": {
            "blur": ("FLOAT", {"min": 0, "max": 15, "step": 0.1, "default": 3}),
            "threshold": ("FLOAT", {"min": 0, "max": 1, "step": 0.05, "default": 0.3}),
            "dilation_factor": ("INT", {"min": 0, "max": 10, "step": 1, "default": 4}),
        },
    },
    "essentials": {  # 001 essentials Apply CLIPSeg+
        "required": {
            "clip_seg": ("CLIP_SEG",),
            "image": ("IMAGE",),
            "prompt": ("STRING", {"multiline": False, "default": ""}),
            "threshold": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.05}),
            "smooth": ("INT", {"default": 9, "min": 0, "max": 32, "step": 1}),
            "dilate": ("INT", {"default": 0, "min": -32, "max": 32, "step": 1}),
            "blur": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1}),
        },
    },
    "masquerade": {  # 003 masquerade Mask By Text
        "required": {
            "image": ("IMAGE",),
            "prompt": ("STRING", {"multiline": True}),
            "negative_prompt": ("STRING", {"multiline": True}),
            "precision": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            "normalize": (["no", "yes"],),
        },
    },
}
