"""Load the bundled tiny models offline, or any transformers model by name or directory.

    >>> from course_utils.models import load_model
    >>> model, tokenizer = load_model("tiny-base")          # bundled, offline, ~0.1 s
    >>> model, tokenizer = load_model("gpt2")               # from the Hugging Face hub, when online

Bundled names resolve to folders under ``course_utils/assets``; anything else goes through transformers'
``from_pretrained`` (a local directory, the local hub cache, or the hub itself when the machine is online).
An unknown name on an offline machine fails at once with a message that lists the bundled models.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any, Iterator

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

BUNDLED_MODELS: dict[str, str] = {
    "tiny-base": "GPT-2 architecture, ~1M parameters, pre-trained on the course world's text only: "
                 "it completes stories, dialogues and reviews but does not follow instructions.",
    "tiny-instruct": "tiny-base after multi-task instruction tuning (FLAN-style): summarize a dialogue, "
                     "classify a review, continue a story, write a review.",
}


class ModelNotFoundError(LookupError):
    """A model name that is neither bundled, nor a local directory, nor reachable on the hub."""


def bundled_model_dir(name: str) -> Path:
    """The folder of a bundled model (raises :class:`ModelNotFoundError` for other names)."""
    if name not in BUNDLED_MODELS:
        raise ModelNotFoundError(_unknown_message(name, "it is not a bundled model"))
    path = ASSETS_DIR / name
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"The bundled model {name!r} is missing from {path}. "
                                 "Re-create it with `make models` (python -m course_utils.train).")
    return path


def _unknown_message(name: str, why: str) -> str:
    listing = "\n".join(f"  - {n}: {d}" for n, d in BUNDLED_MODELS.items())
    return (f"Cannot load model {name!r}: {why}.\nBundled models (work offline):\n{listing}\n"
            "Or pass a local directory saved with save_pretrained(), or a hub name such as 'gpt2' "
            "on a machine with internet access.")


def _hub_reachable(timeout: float = 2.0) -> bool:
    """True when the Hugging Face hub answers a TCP connection within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def _model_class(config: Any):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers' progress bars off for a moment (in Jupyter each one is a widget left in the cell's output)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_model(name: str | os.PathLike = "tiny-base", *, attn_implementation: str | None = None,
               **kwargs: Any) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` in eval mode.

    ``name``: a bundled name (:data:`BUNDLED_MODELS`), a local directory, or a hub name such as ``"gpt2"``
    or ``"google/flan-t5-small"`` (needs internet unless it is already in the local cache).
    ``attn_implementation="eager"`` is needed to get attention maps (``output_attentions=True``) in
    transformers 5, whose default ``sdpa`` attention returns none.
    Extra keyword arguments go to ``from_pretrained``.
    """
    from transformers import AutoConfig, AutoTokenizer

    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    source = str(name)
    local = Path(source).expanduser()
    if isinstance(name, str) and name in BUNDLED_MODELS:
        path = bundled_model_dir(name)
    elif local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{local} is a directory but has no config.json: "
                                     "save a model there with model.save_pretrained(dir) first.")
        path = local
    else:
        path = None

    if path is not None:
        with _no_progress_bar():  # a local model loads in milliseconds: no progress widget in the notebook
            config = AutoConfig.from_pretrained(path)
            model = _model_class(config).from_pretrained(path, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        model, tokenizer = _load_from_hub(source, kwargs)
    model.eval()
    return model, tokenizer


def _load_from_hub(name: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Load from the local hub cache first, then from the hub if it is reachable; fail fast otherwise."""
    from transformers import AutoConfig, AutoTokenizer

    if "/" not in name and (name.startswith(".") or os.sep in name):
        raise ModelNotFoundError(_unknown_message(name, "no such directory"))
    try:  # already downloaded once? then no network is needed
        config = AutoConfig.from_pretrained(name, local_files_only=True)
        model = _model_class(config).from_pretrained(name, local_files_only=True, **kwargs)
        return model, AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    if not _hub_reachable():
        raise ModelNotFoundError(_unknown_message(
            name, "it is not bundled, not a local directory, not in the local cache, and the Hugging Face "
                  "hub cannot be reached from this machine (offline)"))
    try:
        config = AutoConfig.from_pretrained(name)
        model = _model_class(config).from_pretrained(name, **kwargs)
        return model, AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise ModelNotFoundError(_unknown_message(name, f"the hub answered: {str(err).splitlines()[0]}")) from None


def count_parameters(model: Any) -> int:
    """All parameters of ``model`` (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
