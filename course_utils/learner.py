"""The learner's working folder: ``course start [DIR]``, ``course start --update [DIR]`` and ``course lab [DIR]``.

``course start`` copies the student notebooks that came with the installed package (the committed release,
``notebooks/`` of the repository) into a folder of the learner's own, ``./llm-foundations/`` by default, and
writes a small record of what it copied (``.llm-foundations.json``: each file's SHA-256 as shipped).

Nothing the learner made is ever overwritten or deleted:

* ``course start`` into a folder that already holds one of the files it would write refuses, naming them;
  into a folder it started before, it copies nothing and says how to update.
* ``course start --update`` adds notebooks that are new in this version, replaces a notebook only when the
  learner never changed it (its bytes are still exactly what was copied), and writes the new version of an
  edited notebook *beside* it (``01_attention.v0.2.0.ipynb``), saying which.

Every write goes to a temporary file first and is moved into place (a file that appears meanwhile is not
replaced: new files are created exclusively).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import course_utils

DEFAULT_DIR = "llm-foundations"
RECORD = ".llm-foundations.json"
_SKIP = {".ipynb_checkpoints", "__pycache__"}
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class StartError(ValueError):
    """A problem the learner can fix; the message says what and how."""


# ----------------------------------------------------------------------------------------------
# What ships


def shipped_dir() -> Path:
    """The student notebooks of the installed package (a wheel), or ``notebooks/`` of a clone (editable install)."""
    packaged = Path(course_utils.__file__).resolve().parent / "student_notebooks"
    if packaged.is_dir():
        return packaged
    clone = Path(course_utils.__file__).resolve().parents[1] / "notebooks"
    if clone.is_dir():
        return clone
    raise StartError(f"this installation of llm-foundations has no student notebooks (looked in {packaged} and "
                     f"{clone}); reinstall it: pip install --force-reinstall llm-foundations")


def shipped_files(source: Path | None = None) -> dict[str, Path]:
    """``{relative path: file}`` of everything that ships, e.g. ``01_attention/01_attention.ipynb``."""
    source = source or shipped_dir()
    files = {}
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_file() and not any(part in _SKIP or part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = path
    if not any(rel.endswith(".ipynb") for rel in files):
        raise StartError(f"no notebooks under {source}: the installation is incomplete; reinstall llm-foundations")
    return files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# The record of what was copied


def _read_record(folder: Path) -> dict | None:
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
            raise ValueError("no 'files' table")
        return record
    except (OSError, ValueError) as err:
        raise StartError(f"{path} is damaged ({err}); move it away and run course start --update {folder} again "
                         "(your notebooks are kept either way)") from None


def _write_record(folder: Path, files: dict[str, str]) -> None:
    record = {"package": "llm-foundations", "version": course_utils.__version__,
              "note": "written by `course start`: the SHA-256 of each file as it was copied here",
              "files": dict(sorted(files.items()))}
    _atomic_write(folder / RECORD, (json.dumps(record, indent=1) + "\n").encode(), replace=True)


def _atomic_write(target: Path, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``target`` through a temporary file; never replaces an existing file unless ``replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; an ordinary file of the learner's instead
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails with FileExistsError if the target appeared meanwhile
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: create exclusively, then fill
                with open(target, "xb") as out:
                    out.write(data)
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------
# course start / course start --update


@dataclass
class StartReport:
    folder: Path
    added: list[str] = field(default_factory=list)             # copied (new here)
    replaced: list[str] = field(default_factory=list)          # unchanged by the learner, new version copied
    beside: list[tuple[str, str]] = field(default_factory=list)  # (edited file kept, new version written beside it)
    kept: list[str] = field(default_factory=list)              # edited by the learner, no new version
    unchanged: list[str] = field(default_factory=list)         # already the shipped version
    retired: list[str] = field(default_factory=list)           # copied earlier, no longer shipped (kept)
    already_started: bool = False

    def lines(self) -> list[str]:
        out = [f"  added     {p}" for p in self.added]
        out += [f"  updated   {p} (you had not changed it)" for p in self.replaced]
        out += [f"  kept      {p} (you edited it); the new version is beside it: {new}" for p, new in self.beside]
        out += [f"  kept      {p} (you edited it; it has no new version)" for p in self.kept]
        out += [f"  kept      {p} (no longer part of the course)" for p in self.retired]
        if self.unchanged:
            out.append(f"  unchanged {len(self.unchanged)} file(s), already the current version")
        return out


def _beside_name(rel: str, version: str, n: int) -> str:
    path = Path(rel)
    suffix = f".v{version}" + (f"-{n}" if n > 1 else "")
    return (path.parent / f"{path.stem}{suffix}{path.suffix}").as_posix()


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise StartError(f"{folder} is a file, not a folder: give a folder for the notebooks, "
                         f"e.g. course start ./{DEFAULT_DIR}")


def start(folder: Path | str = DEFAULT_DIR, *, source: Path | None = None) -> StartReport:
    """Copy the shipped notebooks into ``folder`` (created if needed). Refuses to overwrite anything."""
    folder = Path(folder).expanduser().resolve()
    _check_folder(folder)
    files = shipped_files(source)
    report = StartReport(folder)
    if _read_record(folder) is not None:
        report.already_started = True
        return report
    clashes = [rel for rel in files if (folder / rel).exists()]
    if clashes:
        shown = ", ".join(clashes[:4]) + (f" and {len(clashes) - 4} more" if len(clashes) > 4 else "")
        raise StartError(f"{folder} already has {shown}, and course start never overwrites a file: "
                         f"pick another folder (course start PATH), or run course start --update {folder} to add "
                         "what is missing and put new versions beside your files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StartError(f"cannot create {folder}: {err.strerror}; pick a folder you can write to, "
                         "e.g. course start ~/llm-foundations") from None
    copied: dict[str, str] = {}
    for rel, path in files.items():
        _atomic_write(folder / rel, path.read_bytes(), replace=False)
        copied[rel] = sha256(path)
        report.added.append(rel)
    _write_record(folder, copied)
    return report


def update(folder: Path | str = DEFAULT_DIR, *, source: Path | None = None) -> StartReport:
    """Bring ``folder`` up to the installed version without touching anything the learner changed."""
    folder = Path(folder).expanduser().resolve()
    _check_folder(folder)
    if not folder.is_dir():
        raise StartError(f"no course folder at {folder}: run course start {folder} first "
                         "(or give the folder you started: course start --update PATH)")
    record = _read_record(folder)
    if record is None and not any(folder.iterdir()):
        raise StartError(f"{folder} is empty: run course start {folder} to copy the notebooks there")
    recorded: dict[str, str] = dict((record or {}).get("files", {}))
    files = shipped_files(source)
    version = course_utils.__version__
    report = StartReport(folder)
    for rel, path in files.items():
        new_hash = sha256(path)
        target = folder / rel
        if not target.exists():
            _atomic_write(target, path.read_bytes(), replace=False)
            recorded[rel] = new_hash
            report.added.append(rel)
            continue
        current = sha256(target)
        if current == new_hash:
            recorded[rel] = new_hash
            report.unchanged.append(rel)
        elif rel in recorded and current == recorded[rel]:  # the learner never changed it: safe to replace
            _atomic_write(target, path.read_bytes(), replace=True)
            recorded[rel] = new_hash
            report.replaced.append(rel)
        elif recorded.get(rel) == new_hash:  # edited by the learner; this version is the one they started from
            report.kept.append(rel)
        else:  # edited (or unknown origin) and a different version ships: put it beside, never over
            report.beside.append((rel, _place_beside(folder, rel, path, version)))
    report.retired = [rel for rel in sorted(recorded) if rel not in files and (folder / rel).exists()]
    _write_record(folder, recorded)
    return report


def _place_beside(folder: Path, rel: str, path: Path, version: str) -> str:
    """Write the shipped ``path`` next to the learner's ``rel`` under a free name (or find it already there)."""
    data = path.read_bytes()
    for n in range(1, 1000):
        name = _beside_name(rel, version, n)
        candidate = folder / name
        if candidate.exists():
            if candidate.read_bytes() == data:
                return name
            continue
        try:
            _atomic_write(candidate, data, replace=False)
            return name
        except FileExistsError:
            continue
    raise StartError(f"could not find a free name beside {folder / rel}: tidy up the old versions there")


# ----------------------------------------------------------------------------------------------
# course lab


def find_course_folder(folder: str | None) -> Path:
    """The folder to open: ``folder`` if given; else the current folder if it was started, else ./llm-foundations."""
    if folder is not None:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise StartError(f"no folder {path}: run course start {folder} first, or give an existing folder")
        return path
    here = Path.cwd()
    if (here / RECORD).is_file():
        return here
    if (here / DEFAULT_DIR).is_dir():
        return here / DEFAULT_DIR
    raise StartError(f"no course folder here ({here} has no {DEFAULT_DIR}/): run course start first, "
                     "or give the folder: course lab PATH")


def lab_command(folder: Path, *, port: int | None = None, no_browser: bool = False) -> list[str]:
    """The JupyterLab command line for ``folder`` (this interpreter's jupyter, so the course's kernel is used)."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}"]
    if port is not None:
        cmd.append(f"--port={port}")
    if no_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers often run as root; Jupyter refuses without it
    return cmd


def lab(folder: str | None, *, port: int | None = None, no_browser: bool = False) -> int:
    path = find_course_folder(folder)
    if shutil.which("jupyter-lab") is None and not _has_module("jupyterlab"):
        raise StartError("JupyterLab is not installed in this environment: pip install jupyterlab")
    print(f"Opening JupyterLab in {path} (Ctrl+C to stop it)")
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return subprocess.call(lab_command(path, port=port, no_browser=no_browser), cwd=path, env=env)
    except KeyboardInterrupt:
        return 130


def _has_module(name: str) -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec(name) is not None
