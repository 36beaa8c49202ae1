"""Old import paths of modules that moved into a wing of the package keep working, with a warning.

``import course_utils.grading`` (an instructor's script, an older ``nbgrader_config.py``) gets
``course_utils.grader.workspace`` and a ``DeprecationWarning`` naming the new path; a module that is gone raises an
``ImportError`` that says what replaced it. :func:`install` puts the finder on ``sys.meta_path`` (the package's
``__init__`` does it once).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "course_utils.grading": "course_utils.grader.workspace",
    "course_utils.autograde": "course_utils.grader.autograde",
    "course_utils.executor": "course_utils.grader.executor",
    "course_utils.integrity": "course_utils.grader.integrity",
    "course_utils.feedback": "course_utils.grader.feedback",
    "course_utils.sandbox": "course_utils.grader.sandbox",
    "course_utils.sandbox_launch": "course_utils.grader.sandbox_launch",
    "course_utils.submissions": "course_utils.grader.submissions",
    "course_utils.codescan": "course_utils.grader.codescan",
    "course_utils.cards": "course_utils.review.cards",
    "course_utils.srs": "course_utils.review.srs",
    "course_utils.flashcards": "course_utils.review.flashcards",
    "course_utils.progress": "course_utils.review.progress",
    "course_utils.validate": "course_utils.review.validate",
    "course_utils.selfcheck": "course_utils.review.selfcheck",
    "course_utils.rlhf_sweep": "course_utils.sweeps.rlhf",
    "course_utils.finetuning_sweep": "course_utils.sweeps.finetuning",
}
GONE = {
    "course_utils.probe": "the in-kernel hook probe is gone: tests now run in the trusted judge "
                          "(course_utils.grader.judge), so nothing in the student's kernel can change a score",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}: import that instead", DeprecationWarning, stacklevel=3)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname in GONE:
            raise ImportError(f"{fullname} no longer exists: {GONE[fullname]}", name=fullname)
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, _Alias(MOVED[fullname]))
        return None


def install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
