"""The course root, the instructor's workspace and nbgrader's configuration; release and registration.

Autograding itself is in :mod:`course_utils.grader.autograde`.

The repository is the nbgrader course root (``solutions/`` = source, ``notebooks/`` = release). Everything the
instructor's grading produces lives in a *workspace* folder (default ``<root>/grading/``, git-ignored)::

    gradebook.db            nbgrader's SQLite gradebook
    release/                the assignments as registered in the gradebook (what the students got)
    submitted/<student>/<assignment>/    copies of the submissions (never modified)
    archive/<student>/<assignment>/<UTC time>/    earlier versions of changed submissions
    autograded/<student>/<assignment>/   the executed notebooks (nbgrader's autograded folder)
    integrity/<student>/<assignment>/<notebook>.json   per-notebook verdicts, flags, sandbox, worker, seconds
    records/<student>/<assignment>.json  per-submission summary (status, score, flags, what was graded)
    feedback/<student>/<assignment>/<notebook>.html   (course feedback)
    grades.csv              (course grades)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from course_utils.grader import pipeline, submissions
from course_utils.grader.pipeline import COURSE_ID


@dataclass(frozen=True)
class Workspace:
    """Paths of one course root and its grading workspace."""

    root: Path
    path: Path

    @classmethod
    def at(cls, root: Path | str, workspace: Path | str | None = None) -> "Workspace":
        root = Path(root).resolve()
        ws = Path(workspace).resolve() if workspace else root / "grading"
        return cls(root, ws)

    @property
    def submitted(self) -> Path:
        return self.path / "submitted"

    @property
    def archive(self) -> Path:
        return self.path / "archive"

    @property
    def autograded(self) -> Path:
        return self.path / "autograded"

    @property
    def feedback(self) -> Path:
        return self.path / "feedback"

    @property
    def release(self) -> Path:
        return self.path / "release"

    @property
    def integrity(self) -> Path:
        return self.path / "integrity"

    @property
    def records(self) -> Path:
        return self.path / "records"

    @property
    def gradebook(self) -> Path:
        return self.path / "gradebook.db"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.gradebook}"

    @property
    def source(self) -> Path:
        return self.root / "solutions"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)  # only the instructor: no sandbox uid can read or write the gradebook
        for sub in ("submitted", "archive", "records"):
            (self.path / sub).mkdir(exist_ok=True)


def find_course_root(start: Path | str = ".") -> Path:
    """The nearest folder at or above ``start`` holding ``solutions/`` or ``nbgrader_config.py``."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "solutions").is_dir() or (folder / "nbgrader_config.py").is_file():
            return folder
    return here


def assignments(root: Path) -> list[str]:
    """Assignment names: folders of ``solutions/`` that hold at least one notebook."""
    source = Path(root) / "solutions"
    return sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))) \
        if source.is_dir() else []


def settings_config(*, timeout: int | None = None, sandbox_mode: str | None = None,
                    memory_mb: int | None = None, disk_mb: int | None = None) -> Config:
    """Command-line overrides of the execution settings, as a traitlets Config."""
    c = Config()
    if timeout is not None:
        c.JudgeExecute.timeout = int(timeout)
    if sandbox_mode is not None:
        c.JudgeExecute.sandbox = sandbox_mode
    if memory_mb is not None:
        c.JudgeExecute.memory_mb = int(memory_mb)
    if disk_mb is not None:
        c.JudgeExecute.disk_mb = int(disk_mb)
    return c


def nbgrader_config(ws: Workspace, overrides: Config | None = None) -> Config:
    """The pipeline's defaults, then the course root's nbgrader_config.py, then ``overrides``; the workspace's
    paths always win."""
    c = pipeline.configure(Config())
    config_file = ws.root / "nbgrader_config.py"
    if config_file.is_file():
        c.merge(PyFileConfigLoader(config_file.name, path=str(ws.root)).load_config())
    if overrides is not None:
        c.merge(overrides)
    c.CourseDirectory.root = str(ws.root)
    c.CourseDirectory.submitted_directory = str(ws.submitted)
    c.CourseDirectory.autograded_directory = str(ws.autograded)
    c.CourseDirectory.feedback_directory = str(ws.feedback)
    c.CourseDirectory.db_url = ws.db_url
    c.IntegrityCheck.release_directory = str(ws.release)
    c.JudgeExecute.source_directory = str(ws.source)
    return c


def ensure_gradebook(db_path: Path, course_id: str = COURSE_ID) -> None:
    """Create nbgrader's SQLite gradebook in-process (nbgrader itself shells out to ``alembic`` for this)."""
    db_path = Path(db_path)
    if db_path.exists() and db_path.stat().st_size > 0:
        return
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - slow imports, only when needed
    from nbgrader.api import Base
    from nbgrader.dbutil import ALEMBIC_DIR
    from sqlalchemy import create_engine, text

    db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{db_path}", future=True)
    Base.metadata.create_all(bind=engine)
    head = ScriptDirectory(ALEMBIC_DIR).get_current_head()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})
    engine.dispose()


def coursedir_for(config: Config, **ids: str):
    from nbgrader.coursedir import CourseDirectory  # noqa: PLC0415

    coursedir = CourseDirectory(config=config)
    for key, value in ids.items():
        setattr(coursedir, key, value)
    return coursedir


class LogCapture(logging.Handler):
    """Collects warnings and errors that nbgrader logs while converting (they explain failures)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip().splitlines()[-1][:300] if record.getMessage() else "")

    def __enter__(self) -> "LogCapture":
        for name in ("traitlets", "nbgrader"):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("traitlets", "nbgrader"):
            logging.getLogger(name).removeHandler(self)


def release(root: Path | str, names: list[str] | None = None, out: Path | str | None = None,
            force: bool = False) -> list[Path]:
    """``solutions/NAME`` -> ``notebooks/NAME`` (or ``out/NAME``) for each assignment; returns the notebooks written.

    Deterministic (same source, same bytes) and leaves nothing behind: the gradebook it needs is a temporary one.
    A release notebook that somebody has worked in (it has outputs) is not overwritten unless ``force``.
    """
    root = Path(root).resolve()
    names = names or assignments(root)
    unknown = [n for n in names if n not in assignments(root)]
    if unknown:
        raise ValueError(f"no assignment {unknown} in {root / 'solutions'}; known: {', '.join(assignments(root))}")
    out = Path(out).resolve() if out else root / "notebooks"
    worked = [p for name in names for p in sorted((out / name).glob("*.ipynb")) if _has_outputs(p)]
    if worked and not force:
        raise ValueError(f"{', '.join(str(p) for p in worked)}: somebody worked in it (it has outputs); releasing "
                         "would overwrite it. Copy it elsewhere first, or release again with --force")
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="course-release-") as tmp:
        ws = Workspace(root, Path(tmp))
        ensure_gradebook(ws.gradebook)
        for name in names:
            _generate(ws, name, out)
            written += sorted((out / name).glob("*.ipynb"))
    return written


def _has_outputs(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return True  # unreadable: do not touch it without --force
    return any(cell.get("outputs") or cell.get("execution_count") for cell in data.get("cells", []))


def _generate(ws: Workspace, name: str, out: Path) -> None:
    from nbgrader.converters import GenerateAssignment  # noqa: PLC0415

    config = nbgrader_config(ws)
    config.CourseDirectory.release_directory = str(out)
    config.GenerateAssignment.force = True
    with LogCapture() as logs:
        try:
            GenerateAssignment(coursedir=coursedir_for(config, assignment_id=name), config=config).start()
        except Exception as err:  # noqa: BLE001 - say what nbgrader said
            raise RuntimeError(f"nbgrader could not release {name}: {err}; " + " / ".join(logs.messages[-5:])) \
                from err


def tree_hash(folder: Path) -> str:
    files, _ = submissions.manifest(folder, float("inf"))
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def register(ws: Workspace, name: str) -> None:
    """Put assignment ``name`` (its notebooks, test cells and points) into the workspace gradebook, if changed."""
    stamp_file = ws.release / f".{name}.source-sha256"
    digest = tree_hash(ws.source / name)
    if stamp_file.is_file() and stamp_file.read_text() == digest and (ws.release / name).is_dir():
        return
    ensure_gradebook(ws.gradebook)
    ws.release.mkdir(parents=True, exist_ok=True)
    _generate(ws, name, ws.release)
    stamp_file.write_text(digest)


def python_bin_on_path() -> None:
    """nbgrader shells out to ``alembic`` (database upgrades): make this interpreter's scripts findable."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def fill_in_solutions(release_nb, source_nb):  # noqa: ANN001, ANN201 - nbformat notebooks
    """The release with every answer cell replaced by the source's answer (markers removed): a perfect submission.

    Used by the tests and the benchmark to grade "the solutions" the way a student would hand them in.
    """
    import copy as _copy  # noqa: PLC0415
    import re  # noqa: PLC0415

    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source_nb.cells
               if c.metadata.get("nbgrader", {}).get("solution") and c.metadata["nbgrader"].get("grade_id")}
    marker = re.compile(r"^\s*#+\s*(BEGIN|END) SOLUTION\s*$")
    nb = _copy.deepcopy(release_nb)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = "\n".join(line for line in answers[grade_id].split("\n") if not marker.match(line))
    return nb
