"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch

from course_utils.models import ModelNotFoundError, load_model


@pytest.fixture(scope="module")
def base():
    """``(model, tokenizer)`` of the bundled tiny-base, on one thread (skips if the models are missing)."""
    torch.set_num_threads(1)
    try:
        return load_model("tiny-base")
    except ModelNotFoundError as err:  # pragma: no cover - the models are committed
        pytest.skip(f"bundled model missing: {err}")
