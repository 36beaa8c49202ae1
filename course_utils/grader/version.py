"""The grader's version: one hash of everything that can change a grade, for re-grading and for workers.

It covers every file of the ``course_utils`` package (the grader, the check helpers, the topic modules that tests
and locked cells call, the bundled models and decks) and the versions of the libraries that run the notebooks.
A change to any of them (a tolerance in ``checks.py``, a retrained model) changes the version, so
``course autograde`` grades every submission again, and a Dask worker with another version refuses its tasks.
"""

from __future__ import annotations

import hashlib
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "nbgrader", "nbclient", "ipykernel", "numpy")
_SKIP = {"__pycache__", ".ipynb_checkpoints"}


@lru_cache(maxsize=1)
def grader_version() -> str:
    """sha256 over the package's files (path and content) and the libraries' versions."""
    digest = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.is_file() and not _SKIP & set(p.parts)
                       and p.suffix not in (".pyc", ".pyo")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for name in LIBRARIES:
        try:
            digest.update(f"{name}=={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}: none\0".encode())
    digest.update(f"python {sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()
