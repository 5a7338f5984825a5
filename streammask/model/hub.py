"""Where weights come from: the Hugging Face hub or a local directory, safetensors only.

The loading policy: a local directory is used as it is (never the network); a hub id
uses the cache, and the network only when the hub answers, so an offline machine gets
one sentence instead of minutes of retries.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ModelLoadError, SourceNotFoundError

__all__ = ["from_pretrained", "offline_message", "in_cache", "hub_reachable", "ModelSource", "model_source",
           "quiet_loading", "loading"]

log = logging.getLogger("streammask.model")


def from_pretrained(cls, name: str, attn_implementation: str, **kwargs):
    """``from_pretrained`` with the requested attention; ``sdpa`` where unsupported falls back to the default."""
    if attn_implementation == "auto":
        return cls.from_pretrained(name, use_safetensors=True, **kwargs)
    try:
        return cls.from_pretrained(name, use_safetensors=True, attn_implementation=attn_implementation, **kwargs)
    except (ValueError, ImportError, TypeError) as exc:
        text = str(exc).lower()
        if attn_implementation != "sdpa" or not any(word in text for word in ("attention", "attn", "sdpa")):
            raise
        log.debug("attn_implementation='sdpa' is not supported by this transformers' CLIPSeg (%s); "
                  "using its default attention", exc)
        return cls.from_pretrained(name, use_safetensors=True, **kwargs)


def offline_message(name: str, detail: str = "") -> str:
    if detail and "offline" not in detail.lower() and "connect" not in detail.lower() and "resolve" not in detail.lower():
        return f"Cannot load the CLIPSeg weights {name!r}: {detail.splitlines()[0]}"
    return (f"Cannot download the CLIPSeg weights {name!r} (the Hugging Face hub is unreachable and there is no cached "
            f"copy): run `hf download {name}` once where there is network, or pass --model PATH pointing at a local copy.")


def in_cache(name: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
        return isinstance(found, str)
    except Exception:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub (or ``HF_ENDPOINT``), so that an offline
    machine gets one clear sentence instead of minutes of retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files come from: ``name`` (a hub id, or the local directory as given), whether it is a
    local directory, and whether loading must stay off the network (``offline``)."""

    name: str
    is_local: bool
    offline: bool


def model_source(model: str | os.PathLike, revision: str | None = None, *, local_files_only: bool | None = None,
                 unreachable: Callable[[str], str] = offline_message) -> ModelSource:
    """Decide where ``model`` loads from, before anything is loaded.

    A path is taken literally (no ``~`` or ``$VAR`` expansion: the shell expands flags) and must be a directory
    holding ``*.safetensors`` weights; anything else is a hub id, used from the cache or, when the hub answers,
    downloaded (``HF_HUB_OFFLINE`` or ``local_files_only`` keep it off the network).

    Raises:
        SourceNotFoundError: ``model`` looks like a path and is not a directory.
        ModelLoadError: a local directory without safetensors weights (naming the pickle checkpoints it holds,
            which streammask does not load: they can run code), or a hub id neither cached nor reachable
            (``unreachable(name)``, default :func:`offline_message`).
    """
    name = os.fspath(model)
    local = Path(name)
    is_local = local.is_dir()
    if not is_local and (name.startswith((".", "/", "~")) or local.exists()):
        raise SourceNotFoundError(f"--model {name!r}: no such model directory")
    if is_local and not any(local.glob("*.safetensors")):
        pickles = [p.name for p in local.glob("*.bin")] + [p.name for p in local.glob("*.pt*")]
        detail = f" (it holds {', '.join(pickles)}, pickle checkpoints that can run code when loaded)" if pickles else ""
        raise ModelLoadError(f"--model {name!r} has no .safetensors weights{detail}; streammask loads safetensors "
                             "only: convert the checkpoint with transformers' save_pretrained(..., "
                             "safe_serialization=True).")
    offline = bool(local_files_only) or is_local or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not offline and not in_cache(name, revision) and not hub_reachable():
        raise ModelLoadError(unreachable(name))
    return ModelSource(str(local) if is_local else name, is_local, offline)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' warnings and progress bars and huggingface_hub's log off while a model loads (the user
    gets streammask's own one-line errors), restored afterwards."""
    from transformers.utils import logging as hf_logging

    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hub_logger.setLevel(hub_level)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def loading(src: ModelSource, revision: str | None, *, what: str,
            unreachable: Callable[[str, str], str] = offline_message) -> Iterator[None]:
    """Load ``src``'s files inside the block: quietly (:func:`quiet_loading`), and transformers' ``OSError`` /
    ``ValueError`` turned into one :class:`ModelLoadError` sentence: no safetensors at that revision, an incomplete
    local ``what`` directory (``"CLIPSeg"``, ``"SAM 3"``), else ``unreachable(name, detail)``."""
    name = src.name
    try:
        with quiet_loading():
            yield
    except (OSError, ValueError) as exc:
        text = str(exc)
        if "safetensors" in text and ".bin" in text:
            raise ModelLoadError(
                f"--model {name!r} offers no safetensors weights at revision {revision or 'main'}; streammask loads "
                "safetensors only: pass --revision of a commit that has model.safetensors, or a local converted copy."
            ) from None
        if src.is_local:
            raise ModelLoadError(f"--model {name!r} is not a complete {what} directory: {text.splitlines()[0]}") \
                from None
        raise ModelLoadError(unreachable(name, text)) from None
