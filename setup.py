"""Build hook (the project's metadata is in pyproject.toml).

The wheel carries the student notebooks, the committed release in ``notebooks/``, as
``course_utils/student_notebooks/`` so that ``course start`` can copy them into a learner's folder. Only the
release is packaged: ``solutions/`` and hidden tests never are, and a notebook under ``notebooks/`` that still
holds a solution or a hidden test stops the build. An editable install (``pip install -e .``, ``make setup``)
reads ``notebooks/`` from the clone instead (``course_utils.learner.shipped_dir``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
RELEASE = HERE / "notebooks"
TARGET = "course_utils/student_notebooks"
FORBIDDEN = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
SKIP = {".ipynb_checkpoints", "__pycache__"}


def release_files() -> list[Path]:
    """Every file of the student release, checkpoints and hidden files left out."""
    if not RELEASE.is_dir():
        raise SystemExit(f"cannot build llm-foundations: no {RELEASE} (the student release); run `course release`")
    files = [p for p in sorted(RELEASE.rglob("*")) if p.is_file()
             and not any(part in SKIP or part.startswith(".") for part in p.relative_to(RELEASE).parts)]
    for path in files:
        if path.suffix == ".ipynb":
            text = path.read_text(encoding="utf-8")
            leaked = [marker for marker in FORBIDDEN if marker in text]
            if leaked:
                raise SystemExit(f"refusing to package {path}: it contains {leaked[0]!r} (a solution or hidden test); "
                                 "regenerate the release with `course release`")
    if not any(p.suffix == ".ipynb" for p in files):
        raise SystemExit(f"cannot build llm-foundations: no notebook under {RELEASE}")
    return files


class BuildPyWithNotebooks(build_py):
    """``build_py`` that also copies the student release into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        out = Path(self.build_lib) / TARGET
        if out.exists():
            shutil.rmtree(out)  # nothing left over from an earlier build
        for path in release_files():
            dest = out / path.relative_to(RELEASE)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


setup(cmdclass={"build_py": BuildPyWithNotebooks})
