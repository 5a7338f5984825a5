"""Prompts and CLIP's text encoder: how many prompts a text holds, and the token limit (never truncated)."""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import ParameterError

__all__ = ["prompt_token_limit", "check_prompt_tokens", "count_prompts"]


def prompt_token_limit(tokenizer: Any, model: Any = None) -> int | None:
    """The longest token sequence the text encoder takes (CLIP: 77, start and end tokens included).

    The smaller of the tokenizer's ``model_max_length`` (ignored when it is the "unlimited"
    sentinel) and the text encoder's ``max_position_embeddings``; ``None`` when neither is known.
    """
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None)
    pos = getattr(text_config, "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        limits.append(pos)
    return min(limits) if limits else None


def check_prompt_tokens(tokenizer: Any, prompts: Iterable[tuple[str, str]], *, limit: int | None) -> None:
    """Refuse prompts that do not fit the text encoder (no silent truncation).

    Args:
        tokenizer: the model's tokenizer (a callable returning ``input_ids``).
        prompts: ``(label, text)`` pairs; ``label`` names the parameter in the error.
        limit: the token limit (see :func:`prompt_token_limit`); ``None`` checks nothing.

    Raises:
        ParameterError: naming the parameter, the prompt, its token count and the limit.
    """
    if limit is None:
        return
    for label, text in prompts:
        # verbose=False: transformers' "Token indices sequence length is longer ..." warning would precede
        # the one-line refusal below, which says the same in the parameter's own words
        n = len(tokenizer(text, verbose=False)["input_ids"])
        if n > limit:
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise ParameterError(label, shown, f"at most {limit} tokens for CLIP's text encoder, start and end tokens "
                                 f"included (this prompt is {n} tokens): shorten it, or split it into several "
                                 "prompts with '|'")


def count_prompts(prompt: str) -> int:
    """Prompts per frame for the estimate: the ``|``-separated count (an upper bound for every variant)."""
    return max(1, len([p for p in prompt.split("|") if p.strip()]))
