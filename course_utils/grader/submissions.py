"""Copying submissions into the grading workspace: never modified, never lost, never silently overwritten.

Layout read by ``course autograde DIR`` (nbgrader's own "submitted" layout)::

    DIR/<student_id>/<assignment>/<assignment>.ipynb     (plus any other files the student hands in)

Each ``DIR/<student>/<assignment>/`` is copied to ``<workspace>/submitted/<student>/<assignment>/``:

* regular files only: symbolic links, devices and files over ``max_file_mb`` are left out (and reported);
  ``.ipynb_checkpoints`` and ``__pycache__`` are skipped;
* an unchanged submission (same files, same bytes) is not copied again;
* a changed one replaces the current copy, and the previous copy is moved to
  ``<workspace>/archive/<student>/<assignment>/<UTC time>/`` first: every version ever imported is kept;
* ``DIR`` itself is only read.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")    # the whole name (fullmatch): no newline, no /
_SKIP_DIRS = {".ipynb_checkpoints", "__pycache__", ".git"}


@dataclass
class Imported:
    """What importing one student's assignment folder did."""

    student: str
    assignment: str
    path: Path                      # the copy in the workspace
    changed: bool                   # False: identical to the copy already there
    archived: Path | None = None    # where the previous copy went
    left_out: list[str] = field(default_factory=list)
    manifest: dict[str, str] = field(default_factory=dict)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(folder: Path, max_file_mb: float = 50.0) -> tuple[dict[str, str], list[str]]:
    """{relative path: sha256} of the regular files under ``folder``, and the entries left out (with why)."""
    files: dict[str, str] = {}
    left_out: list[str] = []
    if not folder.is_dir():
        return files, left_out
    for path in _walk(folder, left_out):
        rel = path.relative_to(folder)
        if any(part in _SKIP_DIRS for part in rel.parts):
            continue
        try:
            mode = path.lstat().st_mode
        except OSError as err:
            left_out.append(f"{_short(rel)} (cannot be read: {err.strerror or err})")
            continue
        if stat.S_ISDIR(mode):
            continue
        if stat.S_ISLNK(mode):
            left_out.append(f"{rel} (a symbolic link)")
        elif not stat.S_ISREG(mode):
            left_out.append(f"{rel} (not a regular file)")
        elif path.lstat().st_size > max_file_mb * 1024 * 1024:
            left_out.append(f"{rel} (larger than {max_file_mb:g} MB)")
        else:
            try:
                files[rel.as_posix()] = sha256(path)
            except OSError as err:
                left_out.append(f"{_short(rel)} (cannot be read: {err.strerror or err})")
    return files, left_out


def _walk(folder: Path, problems: list[str]) -> list[Path]:
    """Every entry under ``folder`` (links not followed); folders that cannot be listed (a path too long, no
    permission) are reported in ``problems`` instead of stopping the walk."""
    found: list[Path] = []

    def onerror(err: OSError) -> None:
        where = Path(err.filename).relative_to(folder) if err.filename and str(err.filename).startswith(
            str(folder)) else Path(str(err.filename or "?"))
        problems.append(f"{_short(where)} (cannot be read: {err.strerror or err})")

    for top, dirs, names in os.walk(folder, onerror=onerror):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        base = Path(top)
        found += [base / name for name in sorted(names)]
        for name in list(dirs):
            try:
                if (base / name).is_symlink():     # os.walk does not follow it: report it as a link
                    found.append(base / name)
            except OSError as err:
                dirs.remove(name)
                problems.append(f"{_short((base / name).relative_to(folder))} (cannot be read: "
                                f"{err.strerror or err})")
    return sorted(found)


def _short(rel: Path) -> str:
    text = rel.as_posix()
    return text if len(text) <= 120 else f"{text[:60]}...{text[-50:]}"


def discover(source: Path, assignments: set[str]) -> tuple[list[tuple[str, str, Path]], list[str]]:
    """The ``(student, assignment, folder)`` triples under ``source``, and warnings about what was skipped."""
    found: list[tuple[str, str, Path]] = []
    warnings: list[str] = []
    if not source.is_dir():
        raise FileNotFoundError(f"submissions folder {source} does not exist; expected "
                                f"{source}/<student_id>/<assignment>/<assignment>.ipynb")
    for student_dir in sorted(source.iterdir()):
        if student_dir.name.startswith(".") or student_dir.name in _SKIP_DIRS:
            continue
        if student_dir.is_symlink() or not student_dir.is_dir():
            warnings.append(f"{student_dir.name}: not a student folder (expected <student_id>/<assignment>/): skipped")
            continue
        if not SAFE_NAME.fullmatch(student_dir.name):
            warnings.append(f"{student_dir.name!r}: student ids may use letters, digits and _ . @ + - only: skipped")
            continue
        for assignment_dir in sorted(student_dir.iterdir()):
            name = assignment_dir.name
            if name.startswith(".") or name in _SKIP_DIRS:
                continue
            if assignment_dir.is_symlink() or not assignment_dir.is_dir():
                warnings.append(f"{student_dir.name}/{name}: not an assignment folder: skipped")
            elif name not in assignments:
                warnings.append(f"{student_dir.name}/{name}: unknown assignment (known: "
                                f"{', '.join(sorted(assignments)) or 'none'}): skipped")
            else:
                found.append((student_dir.name, name, assignment_dir))
    return found, warnings


def import_submission(source: Path, student: str, assignment: str, submitted_root: Path, archive_root: Path,
                      max_file_mb: float = 50.0) -> Imported:
    """Copy one submission folder into the workspace (see the module docstring for the rules)."""
    files, left_out = manifest(source, max_file_mb)
    dest = submitted_root / student / assignment
    current, _ = manifest(dest, float("inf"))
    result = Imported(student, assignment, dest, changed=files != current or not dest.is_dir(),
                      left_out=left_out, manifest=files)
    if not result.changed:
        return result
    if dest.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        archived = archive_root / student / assignment / stamp
        archived.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dest), str(archived))
        result.archived = archived
    staging = dest.with_name(f".{assignment}.importing")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for rel in files:
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target, follow_symlinks=False)
    copied, _ = manifest(staging, float("inf"))
    if copied != files:  # the student's folder changed while we copied it: keep what we have, say so
        result.left_out.append("the folder changed while it was being copied: re-run autograde")
        result.manifest = copied
    staging.rename(dest)
    return result
