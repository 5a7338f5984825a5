"""Where weights come from: the Hugging Face hub or a local directory, safetensors only.

The loading policy: a local directory is used as it is (never the network); a hub id
uses the cache, and the network only when the hub answers, so an offline machine gets
one sentence instead of minutes of retries.
"""

from __future__ import annotations

import logging
import os

__all__ = ["from_pretrained", "offline_message", "in_cache", "hub_reachable"]

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
