"""The installable package: what the wheel carries, and a learner's path from ``pip install`` to a running notebook.

Fast (a wheel is built from the tracked files, in a few seconds):
* the wheel carries the package, the bundled models and decks, and the student release exactly as committed
  in notebooks/ (as course_utils/student_notebooks/); no solutions folder, no solution or hidden-test text,
  nothing of tests/, benchmarks/ or tools/;
* every dependency has an upper bound, and constraints.txt (the course's machines) bounds each of them too,
  with pins inside the package's own ranges;
* the build refuses a release that leaks a solution.

Slow (marked ``slow``; minutes: a fresh virtual environment each, outside the repository, packages from PyPI,
torch from the machine's local wheel via pip's find-links):
* this machine's Python: ``pip install`` the wheel, ``course start``, run a started notebook top to bottom
  (it fails only on unanswered exercises), ``course validate`` lists its checks, the static pictures are in
  nbconvert's HTML, a newer wheel + ``course start --update`` keeps the learner's edited notebook byte for byte,
  and ``course lab`` serves the folder;
* a second Python (3.12 from pyenv by default; COURSE_SECOND_PYTHON=/path/to/python to choose): the package
  installs and compiles, and the torch-free path works (start, update, the review notebook run and validated).
  torch itself is not installed there: PyPI has no CPU build of torch 2.13.0 for Linux, only a CUDA one of
  several GB (see README, "Where it runs"), and this machine's local wheel is for CPython 3.11 only.
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

import course_utils

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = "course_utils/student_notebooks/"
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MARKER_LINE = re.compile(r"^\s*#+\s*(BEGIN|END) (SOLUTION|HIDDEN TESTS)\s*$", re.M)
NEEDS_TORCH = {"torch", "peft"}  # peft requires torch (and accelerate, which requires it too)


# ----------------------------------------------------------------------------------------------
# Building


def _tracked_files() -> list[str]:
    """The repository's tracked files (what a clone or ``pip install git+URL`` sees), or all files without git."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=60)
        return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "grading", "__pycache__", ".ipynb_checkpoints"}
        return [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def _source_copy(dest: Path) -> Path:
    """A clean copy of the tracked files: no stale build/ or egg-info of the working tree gets into the wheel."""
    for rel in _tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dest


def _build_wheel(source: Path, out: Path) -> subprocess.CompletedProcess:
    """``pip wheel`` of ``source``; without build isolation when this environment's setuptools is new enough."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        isolated = int(version("setuptools").split(".")[0]) < 77
    except PackageNotFoundError:
        isolated = True
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)]
    if not isolated:
        cmd.insert(5, "--no-build-isolation")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    result = _build_wheel(_source_copy(tmp / "src"), tmp / "dist")
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (built,) = (tmp / "dist").glob("llm_foundations-*.whl")
    print(f"wheel {built.name}: {built.stat().st_size / 2**20:.1f} MiB")
    return built


def _release() -> dict[str, bytes]:
    """The committed student release: tracked files under notebooks/."""
    return {rel[len("notebooks/"):]: (ROOT / rel).read_bytes() for rel in _tracked_files()
            if rel.startswith("notebooks/") and ".ipynb_checkpoints" not in rel}


# ----------------------------------------------------------------------------------------------
# What the wheel carries


def test_wheel_carries_the_committed_student_release_models_and_decks(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        packaged = {n[len(PACKAGED):]: z.read(n) for n in names if n.startswith(PACKAGED)}
    release = _release()
    assert release, "no tracked notebooks/ to compare with"
    assert sorted(packaged) == sorted(release), "the wheel's notebooks are not the committed notebooks/ release"
    for rel, data in release.items():
        assert packaged[rel] == data, f"{rel} in the wheel differs from notebooks/{rel}"
    for model in ("tiny-base", "tiny-instruct"):
        assert {f"course_utils/assets/{model}/model.safetensors", f"course_utils/assets/{model}/README.md"} <= names
    assert {"course_utils/assets/finetuning/sweep.json", "course_utils/assets/rlhf/beta_sweep.json"} <= names
    decks = {p.name for p in (ROOT / "course_utils" / "decks").glob("*.json")}
    assert decks and {f"course_utils/decks/{d}" for d in decks} <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "course_utils").rglob("*.py")
               if "__pycache__" not in p.parts and PACKAGED not in p.relative_to(ROOT).as_posix() + "/"}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"


def test_wheel_holds_no_solution_no_hidden_test_and_nothing_of_the_instructors(wheel: Path):
    """No file in the wheel may contain a solution or hidden-test marker, except the grader's own Python code,
    which names the markers to parse them (``HIDDEN_BEGIN = "BEGIN HIDDEN TESTS"``), and METADATA, whose long
    description is the README (its instructor guide says how to mark solutions): there, no line may *be* a
    marker (a solution or hidden-test block). Every packaged notebook is also read cell by cell."""
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            parts = name.split("/")
            assert not {"solutions", "tests", "benchmarks", "tools", "grading"} & set(parts), name
            assert not name.endswith(("-checkpoint.ipynb", ".pyc")), name
            text = z.read(name).decode("utf-8", errors="ignore")
            if name.endswith((".py", ".dist-info/METADATA")):  # code and the README name the markers
                assert not MARKER_LINE.search(text), f"{name} holds a solution or hidden-test block"
            else:
                found = [m for m in MARKERS if m in text]
                assert not found, f"{name} contains {found[0]!r}"
            if name.endswith(".ipynb"):
                nb = nbformat.reads(text, as_version=4)
                for cell in nb.cells:
                    assert not [m for m in MARKERS if m in cell.source], f"{name}: a cell holds {cell.source[:200]!r}"
                    assert not cell.get("outputs"), f"{name}: the release has outputs (run by someone?)"


def test_wheel_metadata_and_command(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(f"llm_foundations-{course_utils.__version__}.dist-info/METADATA"))
        entry_points = z.read(f"llm_foundations-{course_utils.__version__}.dist-info/entry_points.txt").decode()
    assert meta["Name"] == "llm-foundations" and meta["Version"] == course_utils.__version__
    assert meta["Requires-Python"] == ">=3.10"
    assert "course = course_utils.cli:main" in entry_points
    assert wheel.name.endswith("-py3-none-any.whl")


def _dependencies() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [Requirement(d) for d in deps]


def _constraints() -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower()] = req
    return out


def test_every_dependency_has_an_upper_bound_and_the_pins_agree():
    """A future transformers (or torch, numpy, ...) must not break a learner's install silently: pip must refuse
    it. The package's ranges bound every dependency; constraints.txt (the course's machines, and learners who
    use ``-c constraints.txt``) pins or bounds each of them, inside the package's range."""
    constraints = _constraints()
    for dep in _dependencies():
        assert any(s.operator in ("<", "<=", "==", "~=") for s in dep.specifier), f"{dep} has no upper bound"
        pinned = constraints.get(dep.name.lower())
        assert pinned is not None, f"constraints.txt says nothing about {dep.name}"
        assert any(s.operator in ("<", "<=", "==") for s in pinned.specifier), f"constraints.txt: {pinned} is open"
        exact = [s.version for s in pinned.specifier if s.operator == "=="]
        for version in exact:
            local = version.split("+")[0]
            assert dep.specifier.contains(local, prereleases=True), f"constraints.txt pins {pinned}, outside {dep}"
    assert str(constraints["torch"].specifier) == "==2.13.0", "torch must stay pinned to the CPU build on disk"


def test_the_build_refuses_a_release_that_leaks_a_solution(tmp_path: Path):
    source = _source_copy(tmp_path / "src")
    leaky = sorted((source / "notebooks").glob("*/*.ipynb"))[-1]
    nb = nbformat.read(leaky, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"))
    nbformat.write(nb, leaky)
    result = _build_wheel(source, tmp_path / "dist")
    assert result.returncode != 0 and not list((tmp_path / "dist").glob("*.whl"))
    assert f"refusing to package {leaky}" in result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------
# A learner's path in fresh virtual environments


def _env(work: Path, venv: Path) -> dict[str, str]:
    """A learner's shell: the venv first on PATH, nothing of this test run's Python or Jupyter set-up."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER", "NBGRADER", "PYTEST", "COV_", "MPLBACKEND"))}
    env.update({"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "XDG_DATA_HOME": str(work / "xdg-data"),
                "JUPYTER_DATA_DIR": str(work / "jupyter-data"), "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
                "JUPYTER_RUNTIME_DIR": str(work / "jupyter-runtime"), "IPYTHONDIR": str(work / "ipython"),
                "MPLCONFIGDIR": str(work / "mpl"), "TOKENIZERS_PARALLELISM": "false"})
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 900, ok: bool = True):
    started = time.monotonic()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    if ok:
        assert result.returncode == 0, (f"{' '.join(cmd)} exited with {result.returncode} after {seconds:.0f} s:\n"
                                        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def _venv(python: str, where: Path) -> tuple[Path, Path]:
    """A fresh virtual environment at ``where`` (outside the repository); returns (venv, its python)."""
    assert ROOT not in where.resolve().parents
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=300)
    return where, where / "bin" / "python"


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade", False)


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _newer_wheel(tmp: Path) -> tuple[Path, str]:
    """The same course, one version later: notebooks 01 and 02 changed, a new 06_extra notebook."""
    src = _source_copy(tmp / "src-next")
    init = src / "course_utils" / "__init__.py"
    new_version = course_utils.__version__ + ".post1"
    init.write_text(init.read_text().replace(f'__version__ = "{course_utils.__version__}"',
                                             f'__version__ = "{new_version}"'))
    for name in ("01_attention", "02_sampling"):
        path = src / "notebooks" / name / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell("What's new in this version.", id="whats-new"))
        nbformat.write(nb, path)
    extra = nbformat.v4.new_notebook()
    extra.cells = [nbformat.v4.new_markdown_cell("# An extra notebook", id="extra")]
    (src / "notebooks" / "06_extra").mkdir()
    nbformat.write(extra, src / "notebooks" / "06_extra" / "06_extra.ipynb")
    result = _build_wheel(src, tmp / "dist-next")
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = (tmp / "dist-next").glob("*.whl")
    return built, new_version


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_course_lab(course: Path, folder: Path, env: dict[str, str], work: Path) -> None:
    """``course lab FOLDER`` starts JupyterLab serving that folder."""
    port, token = _free_port(), "course-lab-test"
    env = dict(env, JUPYTER_TOKEN=token)  # a learner's browser gets the token in the printed URL
    log = open(work / "lab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(course), "lab", str(folder), "--no-browser", "--port", str(port)], env=env,
                            cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    auth = {"Authorization": f"token {token}"}
    try:
        deadline, listing = time.monotonic() + 120, None
        while time.monotonic() < deadline and listing is None:
            assert proc.poll() is None, f"course lab exited with {proc.returncode}: {(work / 'lab.log').read_text()}"
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents", headers=auth)
                with urllib.request.urlopen(request, timeout=2) as resp:
                    listing = json.load(resp)
            except OSError:
                time.sleep(0.5)
        assert listing is not None, f"JupyterLab did not answer: {(work / 'lab.log').read_text()[-2000:]}"
        assert "01_attention" in {item["name"] for item in listing["content"]}, listing
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/lab", headers=auth),
                                    timeout=10) as resp:
            assert resp.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _static_pictures_in_html(course_bin: Path, executed: Path, env: dict[str, str]) -> int:
    """Convert an executed notebook to HTML as nbconvert would for a notebook saved without widget state."""
    _run([str(course_bin / "jupyter"), "nbconvert", "--to", "html", "--ClearMetadataPreprocessor.enabled=True",
          str(executed)], env, executed.parent)
    page = executed.with_suffix(".html").read_text()
    return page.count("class='course-widget-static'") + page.count('class="course-widget-static"')


@pytest.mark.slow
def test_learner_path_from_the_wheel_in_a_fresh_venv(wheel: Path, tmp_path: Path):
    python = getattr(sys, "_base_executable", None) or shutil.which("python3")
    timings = {}
    started = time.monotonic()
    venv, py = _venv(python, tmp_path / "venv")
    work = tmp_path / "home"
    work.mkdir()
    env = _env(work, venv)
    # the README's learner path: pip install (torch comes from the local CPU wheel through pip's find-links)
    _run([str(py), "-m", "pip", "install", "--no-compile", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
         env, work)
    timings["install"] = time.monotonic() - started
    where = _run([str(py), "-c", "import course_utils, torch; print(course_utils.__file__, torch.__version__)"],
                 env, work).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1].startswith("2.13.0"), where
    course = venv / "bin" / "course"

    out = _run([str(course), "start"], env, work).stdout
    folder = work / "llm-foundations"
    assert "Started the course in llm-foundations" in out
    started_files = {k: v for k, v in _tree(folder).items() if not k.startswith(".")}
    assert started_files == {rel: hashlib.sha256(data).hexdigest() for rel, data in _release().items()}

    # run a started notebook top to bottom, as a learner's Run All would (a copy: the started one stays pristine)
    t0 = time.monotonic()
    nb_path = folder / "01_attention" / "01_attention.ipynb"
    executed = work / "run" / "01_attention.ipynb"
    executed.parent.mkdir()
    _run([str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
          "--ExecutePreprocessor.timeout=300", f"--output={executed}", str(nb_path)], env, nb_path.parent)
    timings["run 01_attention"] = time.monotonic() - t0
    nb = nbformat.read(executed, as_version=4)
    tests = [c for c in nb.cells if _is_test_cell(c)]
    assert tests and all(_errors(c) for c in tests), "a check passes on the unanswered notebook"
    for cell in nb.cells:
        if cell.cell_type == "code" and not _is_test_cell(cell):
            for err in _errors(cell):
                assert err["ename"] == "NotImplementedError", f"{err['ename']}: {err['evalue']} in\n{cell.source[:400]}"
    assert any("course-widget-static" in o.get("data", {}).get("text/html", "")
               for c in nb.cells for o in c.get("outputs", [])), "the explorer left no static picture"
    assert _static_pictures_in_html(venv / "bin", executed, env) >= 2  # the explorer and the flashcards

    # course validate lists the checks
    t0 = time.monotonic()
    result = _run([str(course), "validate", str(nb_path)], env, work, ok=False)
    timings["validate"] = time.monotonic() - t0
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"0 of {len(tests)} checks pass" in result.stdout
    for cell in tests:
        assert f"FAIL {cell.metadata['nbgrader']['grade_id']} " in result.stdout

    # the learner answers something; a newer version comes out; course start --update keeps their work
    t0 = time.monotonic()
    mine = nb_path.read_bytes().replace(b"raise NotImplementedError()", b"return 42  # my answer", 1)
    assert mine != nb_path.read_bytes()
    nb_path.write_bytes(mine)
    (folder / "notes.txt").write_text("my notes")
    newer, new_version = _newer_wheel(tmp_path)
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(newer)], env, work)
    out = _run([str(course), "start", "--update"], env, work).stdout
    beside = f"01_attention/01_attention.v{new_version}.ipynb"
    assert nb_path.read_bytes() == mine, "course start --update changed the learner's edited notebook"
    assert f"kept      01_attention/01_attention.ipynb (you edited it); the new version is beside it: {beside}" in out
    assert "updated   02_sampling/02_sampling.ipynb" in out and "added     06_extra/06_extra.ipynb" in out
    with zipfile.ZipFile(newer) as z:
        assert (folder / beside).read_bytes() == z.read(PACKAGED + "01_attention/01_attention.ipynb")
        assert (folder / "02_sampling" / "02_sampling.ipynb").read_bytes() == \
            z.read(PACKAGED + "02_sampling/02_sampling.ipynb")
    assert (folder / "notes.txt").read_text() == "my notes"
    before = _tree(folder)
    assert "already a course folder" in _run([str(course), "start"], env, work).stdout
    assert _tree(folder) == before
    timings["update"] = time.monotonic() - t0

    t0 = time.monotonic()
    _check_course_lab(course, folder, env, work)
    timings["course lab"] = time.monotonic() - t0

    # pip install from the repository's URL (a git+file:// URL of this clone: the same clone-and-build path
    # as a git host's URL) carries the release of that commit
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        t0 = time.monotonic()
        commit = head.stdout.strip()
        _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
              f"git+file://{ROOT}@{commit}"], env, work)
        site = Path(where[0]).parent / "student_notebooks"
        committed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", commit, "notebooks/"],
                                   capture_output=True, text=True, check=True).stdout.split()
        assert sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()) == \
            sorted(rel[len("notebooks/"):] for rel in committed)
        for rel in committed:
            blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{rel}"], capture_output=True,
                                  check=True).stdout
            assert (site / rel[len("notebooks/"):]).read_bytes() == blob, rel
        timings["install from the git URL"] = time.monotonic() - t0
    print("learner path on " + sys.version.split()[0] + ": " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def _second_python() -> str | None:
    """COURSE_SECOND_PYTHON, else a CPython other than this one: pyenv's 3.12, 3.13 or 3.10, or one on PATH."""
    chosen = os.environ.get("COURSE_SECOND_PYTHON")
    if chosen:
        return chosen
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in ("3.12", "3.13", "3.10"):
        if minor == mine:
            continue
        for candidate in sorted(pyenv.glob(f"{minor}.*/bin/python{minor}"), reverse=True) + \
                [Path(p) for p in [shutil.which(f"python{minor}")] if p]:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


@pytest.mark.slow
def test_learner_path_on_a_second_python(wheel: Path, tmp_path: Path):
    python = _second_python()
    if python is None:
        pytest.skip("no second CPython found (pyenv 3.12/3.13/3.10, or python3.12 on PATH; COURSE_SECOND_PYTHON)")
    version = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert not version.startswith(f"{sys.version_info.major}.{sys.version_info.minor}."), "not a second version"
    started = time.monotonic()
    venv, py = _venv(python, tmp_path / "venv")
    work = tmp_path / "home"
    work.mkdir()
    env = _env(work, venv)
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(f"llm_foundations-{course_utils.__version__}.dist-info/METADATA"))
    requirements = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r
                    and Requirement(r).name.lower() not in NEEDS_TORCH]
    _run([str(py), "-m", "pip", "install", "-q", "--no-compile", "--no-deps", str(wheel)], env, work)
    _run([str(py), "-m", "pip", "install", "-q", "--no-compile", "-c", str(ROOT / "constraints.txt"), *requirements],
         env, work)
    installed = time.monotonic() - started
    check = _run([str(py), "-m", "pip", "check"], env, work, ok=False).stdout
    assert not [line for line in check.splitlines() if not any(n in line.lower() for n in NEEDS_TORCH)], check

    site = Path(_run([str(py), "-c", "import course_utils, os; print(os.path.dirname(course_utils.__file__))"],
                     env, work).stdout.strip())
    assert site.is_relative_to(venv)
    _run([str(py), "-m", "compileall", "-q", str(site)], env, work)  # every module is valid Python here
    _run([str(py), "-c", "import course_utils.cli, course_utils.learner, course_utils.review.flashcards, "
          "course_utils.review.validate, course_utils.widgets.common"], env, work)

    course = venv / "bin" / "course"
    assert "start" in _run([str(course), "--help"], env, work).stdout
    _run([str(course), "start"], env, work)
    folder = work / "llm-foundations"
    assert {k for k in _tree(folder) if not k.startswith(".")} == set(_release())

    review = sorted(folder.glob("*_review/*_review.ipynb"))  # the review notebook: torch-free
    assert review, "no review notebook in the release"
    executed = work / "run" / review[0].name
    executed.parent.mkdir()
    _run([str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
          f"--output={executed}", str(review[0])], env, review[0].parent)
    nb = nbformat.read(executed, as_version=4)
    assert not [e for c in nb.cells for e in _errors(c)]
    assert _static_pictures_in_html(venv / "bin", executed, env) >= 1  # the flashcards' picture
    validated = _run([str(course), "validate", str(review[0])], env, work)
    assert "checks pass" in validated.stdout and "all checks pass" in validated.stdout

    mine = review[0].read_bytes().replace(b'"source": [', b'"source": [\n    "# my note\\n",', 1)
    review[0].write_bytes(mine)
    out = _run([str(course), "start", "--update"], env, work).stdout
    assert review[0].read_bytes() == mine and "(you edited it; it has no new version)" in out
    print(f"second Python {version}: installed in {installed:.0f} s (without torch/peft), "
          f"all in {time.monotonic() - started:.0f} s")
