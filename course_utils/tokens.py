"""Tokens as readable labels, for printed tables, plot axes and widgets."""

from __future__ import annotations

from typing import Any, Iterable

import torch


def token_label(piece: str) -> str:
    """A printable label for one decoded token: a leading space becomes ``·``, a newline ``⏎``, a tab ``⇥``."""
    label = piece.replace("\n", "⏎").replace("\t", "⇥")
    if label.startswith(" "):
        label = "·" + label[1:]
    return label if label else "∅"


def token_labels(tokenizer: Any, ids: Iterable[int] | torch.Tensor) -> list[str]:
    """One readable label per token id (each id decoded on its own); ``ids`` is one sequence, shape ``(T,)``."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"token_labels wants one sequence of ids (shape (T,)), got shape {tuple(ids.shape)}; "
                             "pass ids[0] for a batch of one.")
        ids = ids.tolist()
    return [token_label(tokenizer.decode([int(i)])) for i in ids]
