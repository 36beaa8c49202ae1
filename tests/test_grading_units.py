"""Fast unit tests of the grading pieces: the tamper scan, the import rules, the sandbox's view, feedback scrubbing,
the pipeline's definition, old import paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from course_utils.grader import codescan, feedback, pipeline, sandbox, submissions
from course_utils.grader import workspace as grading

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = codescan.imported_names(["import torch\nimport importlib, course_utils.checks as checks",
                                   "from course_utils.checks import expect_close"])


@pytest.mark.parametrize("source, reason", [
    ("get_ipython().input_transformers_post.append(lambda lines: [])", "input transformer"),
    ("ip = get_ipython()\nip.ast_transformers.append(T())", "AST transformer"),
    ("get_ipython().events.register('pre_run_cell', f)", "event callback"),
    ("checks.expect_close = lambda *a, **k: None", "patches checks.expect_close"),
    ("import importlib\nimportlib.reload = lambda m: m", "patches importlib.reload"),
    ("expect_close = print", "rebinds expect_close"),
    ("def expect_close(*a, **k):\n    pass", "redefines expect_close"),
    ("torch.allclose = lambda *a, **k: True", "patches torch.allclose"),
    ("torch.Tensor.tolist = lambda self: [1]", "patches torch.Tensor.tolist"),
    ("import sys\nsys.modules['course_utils.checks'] = fake", "sys.modules"),
    ("import os\nos._exit(0)", "os._exit"),
    ("class A:\n    def __eq__(self, other):\n        return True", "__eq__"),
    ("import builtins\nbuiltins.isinstance = lambda *a: True", "patches builtins.isinstance"),
    ("exec(open('x.py').read())", "dynamic code"),
    ("open('../../gradebook.db', 'rb')", "gradebook"),
    ("src = open('/srv/course/solutions/01/01.ipynb').read()", "solutions"),
    ("x = 1\n### BEGIN HIDDEN TESTS\nassert True", "markers"),
    ("import numpy as checks", "rebinds checks with an import"),
    ("import sys\nsys.settrace(tracer)", "trace function"),
])
def test_scan_flags_tampering(source: str, reason: str):
    found = codescan.scan(source, IMPORTS)
    assert any(reason.lower() in f.lower() for f in found), f"{reason!r} not in {found}"


@pytest.mark.parametrize("source", [
    "def softmax(x, dim=-1):\n    e = (x - x.max(dim, keepdim=True).values).exp()\n    return e / e.sum(dim, keepdim=True)",
    "import torch\nimport torch.nn.functional as F\ntorch.manual_seed(0)\ntorch.backends.cudnn.deterministic = True",
    "import os\nos.environ['TOKENIZERS_PARALLELISM'] = 'false'",
    "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])",
    "from IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>'))",
    "class Head(torch.nn.Module):\n    def __init__(self, d):\n        super().__init__()\n        self.q = torch.nn.Linear(d, d)",
    "import sys\nprint(sys.version)\nsys.exit('done')",
])
def test_scan_leaves_ordinary_code_alone(source: str):
    assert codescan.scan(source, IMPORTS) == []


def test_import_copies_keeps_every_version_and_skips_links(tmp_path: Path):
    src = tmp_path / "in" / "alice" / "01_x"
    src.mkdir(parents=True)
    (src / "01_x.ipynb").write_text("v1")
    (src / "data.txt").write_text("data")
    os.symlink("/etc/passwd", src / "passwd")
    ws_sub, archive = tmp_path / "ws" / "submitted", tmp_path / "ws" / "archive"

    first = submissions.import_submission(src, "alice", "01_x", ws_sub, archive)
    assert first.changed and first.archived is None and sorted(first.manifest) == ["01_x.ipynb", "data.txt"]
    assert any("passwd" in item and "link" in item for item in first.left_out)
    assert not (ws_sub / "alice" / "01_x" / "passwd").exists()
    again = submissions.import_submission(src, "alice", "01_x", ws_sub, archive)
    assert not again.changed and not list(archive.glob("*/*/*"))

    (src / "01_x.ipynb").write_text("v2")
    third = submissions.import_submission(src, "alice", "01_x", ws_sub, archive)
    assert third.changed and third.archived is not None
    assert (third.archived / "01_x.ipynb").read_text() == "v1"
    assert (ws_sub / "alice" / "01_x" / "01_x.ipynb").read_text() == "v2"
    assert (src / "01_x.ipynb").read_text() == "v2", "the submission folder itself is only read"


def test_discover_skips_what_it_cannot_grade(tmp_path: Path):
    (tmp_path / "bob" / "01_x").mkdir(parents=True)
    (tmp_path / "mallory\n" / "01_x").mkdir(parents=True)      # not "mallory": the rule is the whole name
    (tmp_path / "bob" / "99_unknown").mkdir(parents=True)
    (tmp_path / "bad name!" / "01_x").mkdir(parents=True)
    (tmp_path / "stray.ipynb").write_text("{}")
    found, warnings = submissions.discover(tmp_path, {"01_x"})
    assert [(s, a) for s, a, _ in found] == [("bob", "01_x")]
    assert len(warnings) == 4 and any("unknown assignment" in w for w in warnings)
    assert any("'mallory\\n'" in w for w in warnings), warnings


def test_feedback_hides_hidden_tests_and_test_tracebacks():
    cell = nbformat.v4.new_code_cell('"""checks."""\nexpect(1)\n### BEGIN HIDDEN TESTS\nsecret_case(42)\n'
                                     "### END HIDDEN TESTS")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "t", "points": 1}
    cell.outputs = [nbformat.v4.new_output("error", ename="CheckFailure", evalue="Check failed: x",
                                           traceback=["----> 4 secret_case(42)", "CheckFailure: Check failed: x"])]
    out, _ = feedback.HideHiddenTests().preprocess_cell(cell, {}, 0)
    assert "secret_case" not in out.source and "hidden tests: not shown" in out.source
    assert out.outputs[0].traceback == ["CheckFailure: Check failed: x"]


def test_repo_nbgrader_config_matches_the_course_defaults():
    from traitlets.config.loader import PyFileConfigLoader

    repo = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert repo.CourseDirectory.source_directory == "solutions"
    assert repo.CourseDirectory.release_directory == "notebooks"
    assert repo.OverwriteCells.add_missing_cells is True
    ws = grading.Workspace.at(ROOT, "/tmp/nowhere")
    merged = grading.nbgrader_config(ws)
    assert merged.CourseDirectory.db_url == "sqlite:////tmp/nowhere/gradebook.db", "workspace paths always win"
    assert merged.Autograde.autograde_preprocessors == [pipeline.EXECUTE, *pipeline.FINISH]
    assert merged.Autograde.sanitize_preprocessors == pipeline.SANITIZE
    assert "nbgrader.preprocessors.Execute" not in merged.Autograde.autograde_preprocessors
    assert merged.HTMLExporter.sanitize_html is True, "formgrader must not render a student's HTML raw"


def test_old_import_paths_still_work_or_say_where_things_went(monkeypatch):
    import importlib
    import sys
    import warnings

    for old in ("course_utils.grading", "course_utils.executor"):
        monkeypatch.delitem(sys.modules, old, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("course_utils.grading")
        from course_utils.executor import SandboxedExecute
    assert old is grading and SandboxedExecute.__name__ == "JudgeExecute"
    assert any("course_utils.grader.workspace" in str(w.message) for w in caught)
    with pytest.raises(ImportError, match="judge"):
        importlib.import_module("course_utils.probe")


@pytest.mark.skipif(sandbox.detect_mode("auto") not in sandbox.ISOLATING_MODES,
                    reason="bubblewrap isolation is not available here (Debian package 'bubblewrap')")
def test_sandbox_sees_nothing_of_the_course_and_has_no_network(tmp_path: Path):
    code = f"""
import json, os, socket
seen = {{}}
for path in [{str(ROOT / 'solutions')!r}, {str(ROOT / 'grading')!r}, {str(ROOT / 'README.md')!r}, {str(tmp_path)!r},
             '/home', '/etc/shadow']:
    try:
        seen[path] = 'listed' if os.path.isdir(path) and os.listdir(path) is not None else open(path).read(1) and 'read'
    except Exception as err:
        seen[path] = type(err).__name__
try:
    socket.create_connection(('1.1.1.1', 53), timeout=2)
    seen['network'] = 'open'
except OSError as err:
    seen['network'] = type(err).__name__
for path in ['/usr/lib/x', {str(sandbox.course_package_dir() / 'x')!r}]:
    try:
        open(path, 'w').close()
        seen['write ' + path] = 'ok'
    except OSError as err:
        seen['write ' + path] = type(err).__name__
seen['uid'] = os.getuid()
print(json.dumps(seen))
"""
    mode = sandbox.detect_mode("auto")
    proc = sandbox.run_python(code, mode)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert all(v in ("FileNotFoundError", "PermissionError") for k, v in seen.items()
               if k.startswith("/")), seen
    assert seen["network"] != "open"
    assert all(v != "ok" for k, v in seen.items() if k.startswith("write")), seen
    if mode == "bwrap":
        assert seen["uid"] >= sandbox.FIRST_UID


def test_the_regrade_key_covers_everything_that_can_change_a_grade(tmp_path: Path, monkeypatch):
    """A tolerance changed in checks.py (or a retrained model, a topic module the tests call) is a new grader
    version, so every submission is graded again (the old key covered only a list of grader files)."""
    import shutil

    from course_utils.grader import autograde, judge, version

    package = tmp_path / "course_utils"
    shutil.copytree(version.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    monkeypatch.setattr(version, "PACKAGE", package)
    version.grader_version.cache_clear()
    ws = grading.Workspace.at(ROOT, tmp_path / "ws")
    settings = judge.Settings()
    before = version.grader_version(), autograde.grading_key(ws, "01_attention", {"a.ipynb": "x"}, settings)
    checks_py = package / "checks.py"
    checks_py.write_text(checks_py.read_text().replace("atol: float = 1e-5", "atol: float = 1e-4"))
    version.grader_version.cache_clear()
    after = version.grader_version(), autograde.grading_key(ws, "01_attention", {"a.ipynb": "x"}, settings)
    assert before[0] != after[0] and before[1] != after[1]
    (package / "rlhf.py").write_text((package / "rlhf.py").read_text() + "\n# a comment is a change too\n")
    version.grader_version.cache_clear()
    assert version.grader_version() != after[0]
    version.grader_version.cache_clear()


def test_implausible_timestamps_are_flagged_with_the_fix_and_never_changed(tmp_path: Path):
    from datetime import datetime, timezone

    from traitlets.config import Config

    from course_utils.grader import timestamps

    c = Config()
    c.SubmissionTimes.released = {"01_x": "2026-01-12T09:00:00+01:00"}
    check = timestamps.TimestampCheck(c, tmp_path)          # (tmp_path is no git repository)
    collected = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
    folder, handed_in = tmp_path / "submitted", tmp_path / "DIR" / "bob" / "01_x"
    folder.mkdir()
    verdicts = {}
    for text in ("2000-01-01", "2026-01-12 07:59:00 UTC", "2026-01-20T10:00:00Z", "2026-02-01 12:05:00 +0000",
                 "2026-02-01T13:00:00Z", "next tuesday", "99999-01-01", ""):
        (folder / "timestamp.txt").write_text(text + "\n")
        verdicts[text] = check.problem(folder, "01_x", collected, handed_in=handed_in)
        assert (folder / "timestamp.txt").read_text() == text + "\n", "the file is never changed"
    assert [t for t, v in verdicts.items() if v is None] == ["2026-01-20T10:00:00Z", "2026-02-01 12:05:00 +0000", ""]
    assert "before 01_x was released (2026-01-12 08:00 UTC" in verdicts["2000-01-01"]
    assert "before" in verdicts["2026-01-12 07:59:00 UTC"]
    assert "after the submission was collected (2026-02-01 12:00 UTC)" in verdicts["2026-02-01T13:00:00Z"]
    for text in ("next tuesday", "99999-01-01"):
        assert f"says {text!r}, which is not a time" in verdicts[text]
        (folder / "timestamp.txt").write_text(text)
        assert timestamps.nbgrader_timestamp(str(folder)) is None, "graded with no submission time, no crash"
    (folder / "timestamp.txt").write_text("2026-01-20T10:00:00+01:00")
    assert timestamps.nbgrader_timestamp(str(folder)) == datetime(2026, 1, 20, 9, 0), "what nbgrader would store"
    for verdict in filter(None, verdicts.values()):
        assert str(handed_in / "timestamp.txt") in verdict and "re-run course autograde" in verdict
    (folder / "timestamp.txt").unlink()
    assert check.problem(folder, "01_x", collected) is None
    assert check.released("02_unknown") is None, "no release time known: no 'before release' check"

    c.SubmissionTimes.released = {"01_x": "the first monday"}
    with pytest.raises(ValueError, match=r"SubmissionTimes.released\['01_x'\]: 'the first monday' is not a time"):
        timestamps.TimestampCheck(c, tmp_path)


def test_release_time_defaults_to_the_first_commit_of_the_release_folder(tmp_path: Path):
    import shutil
    import subprocess

    from traitlets.config import Config

    from course_utils.grader import timestamps

    if not shutil.which("git"):
        pytest.skip("git is not installed")
    (tmp_path / "notebooks" / "01_x").mkdir(parents=True)
    (tmp_path / "notebooks" / "01_x" / "01_x.ipynb").write_text("{}")
    env = {**os.environ, "GIT_COMMITTER_DATE": "2026-01-12T09:00:00+00:00", "GIT_AUTHOR_DATE": "2026-01-12T09:00:00Z",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "release"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, env=env)
    (tmp_path / "notebooks" / "01_x" / "01_x.ipynb").write_text("{ }")          # a later fix of the release
    env["GIT_COMMITTER_DATE"] = "2026-03-01T09:00:00+00:00"
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qam", "fix"], check=True, env=env)
    when, where = timestamps.TimestampCheck(Config(), tmp_path).released("01_x")
    assert (when.isoformat(), where) == ("2026-01-12T09:00:00", "the first commit of notebooks/01_x/")


def test_feedback_folder_gets_only_the_pages(tmp_path: Path):
    from traitlets.config import Config

    autograded = tmp_path / "autograded" / "bob" / "01_x"
    autograded.mkdir(parents=True)
    for name in ("01_x.ipynb", "evil.svg", "evil.html", "timestamp.txt", "data/train.csv"):
        (autograded / name).parent.mkdir(parents=True, exist_ok=True)
        (autograded / name).write_text("x")
    c = Config()
    c.CourseDirectory.root = str(tmp_path)
    c.CourseDirectory.autograded_directory = str(tmp_path / "autograded")
    c.CourseDirectory.feedback_directory = str(tmp_path / "feedback")
    converter = feedback._pages_only_feedback()(coursedir=grading.coursedir_for(c), config=c)
    converter.init_assignment("01_x", "bob")
    assert not (tmp_path / "feedback").exists() or not list((tmp_path / "feedback").rglob("*")), "nothing copied"

    sent = tmp_path / "feedback" / "bob" / "01_x"       # what an older version (or nbgrader itself) left there
    for name in ("01_x.html", "evil.svg", "evil.html", "other.html", "data/train.csv"):
        (sent / name).parent.mkdir(parents=True, exist_ok=True)
        (sent / name).write_text("x")
    (sent / "link.html").symlink_to(autograded / "evil.html")
    assert feedback.keep_only_pages(sent, ["01_x"]) == ["data/", "evil.html", "evil.svg", "link.html", "other.html"]
    assert sorted(p.name for p in sent.rglob("*")) == ["01_x.html"]
    assert len(list(autograded.rglob("*"))) == 6, "autograded/ keeps every file"


def test_the_coordinator_never_imports_torch():
    """The coordinator only prepares, dispatches and records: torch and the judge load on the workers only (it
    cost the coordinator 1.8 s at every start)."""
    import subprocess
    import sys

    code = ("import sys, course_utils.cli, course_utils.grader.autograde, course_utils.grader.workers, "
            "course_utils.grader.cluster, course_utils.grader.executor; "
            "print(sorted(m for m in ('torch', 'transformers', 'course_utils.grader.judge') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the coordinator imported {out.strip()}"


def test_submissions_are_graded_heaviest_assignment_first(tmp_path):
    """Longest jobs first: the assignment with the most code in its source goes first, then by name, student."""
    from course_utils.grader.autograde import heaviest_first

    for name, size in (("a_small", 10), ("b_big", 500), ("c_mid", 100)):
        (tmp_path / name).mkdir()
        cells = [{"cell_type": "code", "source": "x" * size}, {"cell_type": "markdown", "source": "y" * 10_000}]
        (tmp_path / name / f"{name}.ipynb").write_text(json.dumps({"cells": cells}))
    (tmp_path / "c_mid" / "broken.ipynb").write_text("{ not json")        # unreadable: counts as nothing
    found = [(s, a, tmp_path) for s in ("bob", "alice") for a in ("a_small", "b_big", "c_mid")]
    order = [(a, s) for s, a, _ in heaviest_first(tmp_path, found)]
    assert order == [("b_big", "alice"), ("b_big", "bob"), ("c_mid", "alice"), ("c_mid", "bob"),
                     ("a_small", "alice"), ("a_small", "bob")]
