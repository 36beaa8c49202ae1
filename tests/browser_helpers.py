"""Drive JupyterLab or Notebook 7 in headless Chromium: start a throwaway server, run a notebook, poke its widgets.

Used by tests/test_browser.py. Nothing here touches the user's Jupyter set-up: the server gets its own HOME,
config, data, runtime, settings and workspace folders under a temporary directory, listens on 127.0.0.1 only,
and is stopped (its whole process group) when the context manager exits.

The browser is Debian's ``chromium`` package driven by Playwright over CDP; Playwright's own browser download is
never used (it needs a network this course must not rely on).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# What counts as a control a learner changes, in the order they are tried within a cell (sliders first: they
# are what the course's widgets are about; text boxes last: a new text usually means a new model run). The
# display a control drives is everything else in that cell's output (plots, printed figures, HTML), so the
# controls themselves are cut out of the "display signature" before comparing.
CONTROL_KINDS = [
    ".widget-slider .noUi-handle",                     # IntSlider, FloatSlider, FloatLogSlider, SelectionSlider
    ".widget-dropdown select",                         # Dropdown
    ".widget-toggle-buttons button:not(.mod-active)",  # ToggleButtons: a button not selected yet
    ".widget-text input",                              # Text, IntText, FloatText, BoundedIntText, ...
    ".widget-textarea textarea",                       # Textarea
]
CONTROL_SELECTOR = ", ".join(CONTROL_KINDS)
CONTROL_PARTS = (".widget-slider, .widget-dropdown, .widget-text, .widget-textarea, .widget-readout, "
                 "input, select, textarea, .widget-button, .widget-toggle-buttons, .widget-radio, "
                 ".widget-checkbox")

# JupyterLab is driven through its own application object (served with expose_app_in_browser), the way
# JupyterLab's Galata test tool does: commands by id, state read from the models, never from pixel positions.
_PANEL = """const app = window.jupyterapp;
  const w = Array.from(app.shell.widgets('main')).find(x => x.id === id);"""

_JS_LAB_READY = """async () => { const app = window.jupyterapp;
  if (!app || !app.shell) return false; await app.restored; return true; }"""

_JS_OPEN = """async (path) => { const app = window.jupyterapp;
  const w = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  app.shell.activateById(w.id);
  return w.id; }"""

_JS_MAIN_NOTEBOOK = """async () => { const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  await app.restored;
  const w = Array.from(app.shell.widgets('main')).find(x => x.sessionContext && x.content);
  return w ? w.id : null; }"""

_JS_SAVE = """async (id) => { """ + _PANEL + """
  await w.context.save();
  return true; }"""

_JS_CLOSE_ALL = """async () => { const app = window.jupyterapp;
  for (const w of Array.from(app.shell.widgets('main'))) {
    if (!w.sessionContext) continue;
    if (w.context && w.context.model) w.context.model.dirty = false;   // no "save changes?" dialog
    try { await w.sessionContext.shutdown(); } catch (e) { /* kernel already gone */ }
    w.dispose();
  }
  return true; }"""

_JS_READY = """(id) => { """ + _PANEL + """
  if (!w || !w.content || !w.sessionContext || !w.context || !w.context.isReady) return 'no notebook yet';
  const sc = w.sessionContext;
  if (!sc.session || !sc.session.kernel) return 'no kernel yet';
  if (sc.kernelDisplayStatus !== 'idle') return 'kernel ' + sc.kernelDisplayStatus;
  return 'ready'; }"""

_JS_RUN_ALL = """(id) => { """ + _PANEL + """
  app.shell.activateById(id);
  app.commands.execute('notebook:run-all-cells');
  return true; }"""

_JS_STATE = """(id) => { """ + _PANEL + """
  const code = w.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  w.content.widgets.forEach((c, i) => {
    if (c.model.type !== 'code') return;
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push({cell: i, ename: o.ename, evalue: String(o.evalue).slice(0, 300)});
    }
  });
  return {
    kernel: w.sessionContext.kernelDisplayStatus,
    running: code.filter(c => c.model.executionState === 'running').length,
    executed: code.filter(c => c.model.executionCount !== null).length,
    total: code.length,
    errors,
  }; }"""

# Signature of what a cell displays, controls removed: plots (img src), printed text, HTML widgets.
_JS_SIGNATURE = """(cell, parts) => {
  const area = cell.querySelector('.jp-Cell-outputArea') || cell;
  const clone = area.cloneNode(true);
  clone.querySelectorAll(parts).forEach(e => e.remove());
  return clone.innerHTML;
}"""


def chromium_path() -> str | None:
    """Debian's Chromium (or $CHROMIUM), or None when it is not installed."""
    candidates = [os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                  "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc; empty where /proc is not available)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def has_widgets(path: Path) -> bool:
    """A notebook shows a widget when a code cell mentions widgets (ipywidgets or course_utils.widgets)."""
    nb = nbformat.read(path, as_version=4)
    return any(cell.cell_type == "code" and ("widgets" in cell.source or "interact" in cell.source)
               for cell in nb.cells)


APPS = {"lab": "JupyterLab", "notebook": "Notebook 7"}


class LabServer:
    """A JupyterLab (``app="lab"``) or Notebook 7 (``app="notebook"``) server on 127.0.0.1 serving ``root``,
    isolated from the user's own Jupyter files.

    Use as a context manager; ``url`` is the base URL. The server runs in its own process group and the whole
    group (kernels included) is terminated on exit.
    """

    def __init__(self, root: Path, *, app: str = "lab", startup_timeout: float = 90.0,
                 extra_env: dict[str, str] | None = None) -> None:
        if app not in APPS:
            raise ValueError(f"app must be one of {sorted(APPS)}, got {app!r}")
        self.app = app
        self.root = Path(root)
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = Path(tempfile.mkdtemp(prefix="lab-home-"))
        self.log_path = self._tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def _env(self) -> dict[str, str]:
        home = self._tmp / "home"
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")  # reuse font caches: read-mostly
        env = dict(os.environ)
        env.update({
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": cache,
            "JUPYTER_CONFIG_DIR": str(self._tmp / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(self._tmp / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(self._tmp / "jupyter-runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(self._tmp / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self._tmp / "lab-workspaces"),
            "IPYTHONDIR": str(self._tmp / "ipython"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        env.pop("JUPYTER_PATH", None)
        env.pop("MPLBACKEND", None)
        env.pop("NBGRADER_EXECUTION", None)
        env.update(self.extra_env)
        home.mkdir(parents=True, exist_ok=True)
        # No news/update pop-ups over the notebook, no extension manager calling PyPI.
        settings = self._tmp / "lab-settings" / "@jupyterlab"
        (settings / "apputils-extension").mkdir(parents=True, exist_ok=True)
        (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        (settings / "extensionmanager-extension").mkdir(parents=True, exist_ok=True)
        (settings / "extensionmanager-extension" / "plugin.jupyterlab-settings").write_text(
            json.dumps({"enabled": False}))
        # Every cell attached to the page (no virtual scrolling), so cells can be found and screenshotted.
        (settings / "notebook-extension").mkdir(parents=True, exist_ok=True)
        (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))
        return env

    def start(self) -> "LabServer":
        expose = "--LabApp" if self.app == "lab" else "--JupyterNotebookApp"
        cmd = [sys.executable, "-m", "jupyter", self.app, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--port-retries=0", f"--ServerApp.root_dir={self.root}", "--IdentityProvider.token=",
               "--PasswordIdentityProvider.hashed_password=", f"{expose}.expose_app_in_browser=True",
               "--ServerApp.open_browser=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyter {self.app} did not answer on {self.url}/api within {self.startup_timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Delete every session (and so its kernel): frees memory between notebooks."""
        try:
            for session in self.api("GET", "/api/sessions") or []:
                self.api("DELETE", f"/api/sessions/{session['id']}")
        except (urllib.error.URLError, OSError, ValueError):
            pass

    def stop(self) -> list[int]:
        """Stop the server's process group, then any kernel it left behind (kernels run in their own session).

        Returns the pids that were still alive afterwards (empty when everything stopped).
        """
        if self.proc is None:
            return []
        children = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
                self.proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        survivors = [pid for pid in children if _alive(pid)]
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in survivors):
            time.sleep(0.1)
        self.proc = None
        shutil.rmtree(self._tmp, ignore_errors=True)
        return [pid for pid in survivors if _alive(pid)]

    def __enter__(self) -> "LabServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class WidgetPoke:
    """What happened when one control was changed."""
    cell: int
    control: str
    description: str
    changed: bool
    seconds: float


@dataclass
class RunAll:
    """A notebook opened in the page and run: its panel id, how long Run All took, and the final state."""
    panel: str
    seconds: float
    attempts: int
    state: dict
    load_seconds: float = 0.0
    kernel_seconds: float = 0.0

    def cells(self, page: Any) -> Any:
        """The notebook's code cells (a Playwright locator)."""
        return page.locator(f'[id="{self.panel}"] .jp-Notebook .jp-CodeCell')


def _wait(page: Any, js: str, want: Any, timeout: float, what: str, arg: Any = None, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = page.evaluate(js, arg)
        except Exception as err:  # noqa: BLE001 - page still loading: evaluate again
            last = f"{type(err).__name__}: {err}"
        if last == want:
            return last
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last state: {last!r})")


def load_lab(page: Any, lab_url: str, workspace: str = "browser-tests") -> float:
    """Load JupyterLab in ``page`` with a fresh workspace (nothing restored); returns the seconds it took."""
    start = time.monotonic()
    try:
        page.goto(f"{lab_url}/lab/workspaces/{workspace}?reset", wait_until="domcontentloaded")
    except Exception as err:  # noqa: BLE001 - JupyterLab's router may replace the first navigation
        if "ERR_ABORTED" not in str(err):
            raise
    _wait(page, _JS_LAB_READY, True, 120, "JupyterLab to load")
    return time.monotonic() - start


def _lab_loaded(page: Any) -> bool:
    try:
        return bool(page.evaluate("() => !!(window.jupyterapp && window.jupyterapp.shell)"))
    except Exception:  # noqa: BLE001 - a blank or crashed page
        return False


def close_notebooks(page: Any) -> None:
    """Shut down the kernels of the open notebooks and close them (unsaved changes are dropped)."""
    if _lab_loaded(page):
        page.evaluate(_JS_CLOSE_ALL)


def open_notebook7(page: Any, url: str, path: str) -> tuple[str, float]:
    """Load Notebook 7's page for ``path`` (one notebook per page, as a learner sees it); returns its panel id
    and the seconds the page took to load."""
    start = time.monotonic()
    page.goto(f"{url}/notebooks/{urllib.parse.quote(path)}", wait_until="domcontentloaded")
    _wait(page, _JS_LAB_READY, True, 120, "Notebook 7 to load")
    deadline = time.monotonic() + 60
    panel = None
    while panel is None and time.monotonic() < deadline:
        panel = page.evaluate(_JS_MAIN_NOTEBOOK)
        time.sleep(0.2 if panel is None else 0)
    if panel is None:
        raise TimeoutError(f"Notebook 7 showed no notebook panel for {path}")
    return panel, time.monotonic() - start


def open_and_run_all(page: Any, lab_url: str, path: str, *, app: str = "lab", run_timeout: float = 420.0,
                     start_timeout: float = 15.0, attempts: int = 2) -> RunAll:
    """Open the notebook at ``path`` (relative to the server root), Run All, wait until it is done.

    JupyterLab (``app="lab"``) is loaded once per page and reused for the next notebooks (the earlier ones are
    closed and their kernels shut down); Notebook 7 (``app="notebook"``) loads one page per notebook, at
    ``/notebooks/<path>``. Done = kernel idle and no cell running, three polls in a row. The first Run All after
    a server starts can be lost (the kernel is not quite connected yet): when no cell starts within
    ``start_timeout`` the page is reloaded and Run All sent again, once.
    """
    load_seconds = 0.0
    for attempt in range(1, attempts + 1):
        if app == "notebook":
            close_notebooks(page)
            panel, seconds = open_notebook7(page, lab_url, path)
            load_seconds += seconds
            opened = time.monotonic()
        else:
            if attempt > 1 or not _lab_loaded(page):
                load_seconds += load_lab(page, lab_url)
            close_notebooks(page)
            opened = time.monotonic()
            panel = page.evaluate(_JS_OPEN, path)
        _wait(page, _JS_READY, "ready", 120, f"{path} and its kernel to be ready", panel)
        kernel_seconds = time.monotonic() - opened
        start = time.monotonic()
        page.evaluate(_JS_RUN_ALL, panel)
        started = False
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            state = page.evaluate(_JS_STATE, panel)
            if state["running"] or state["executed"]:
                started = True
                break
            time.sleep(0.2)
        if not started:
            if attempt < attempts:
                continue
            raise TimeoutError(f"Run All did not start any cell of {path} in {start_timeout:.0f} s (state {state})")
        deadline = time.monotonic() + run_timeout
        stable = 0
        while time.monotonic() < deadline:
            state = page.evaluate(_JS_STATE, panel)
            done = state["kernel"] == "idle" and state["running"] == 0
            stable = stable + 1 if done else 0
            if stable >= 3:  # idle on three polls in a row: outputs have landed
                return RunAll(panel, time.monotonic() - start, attempt, state, load_seconds, kernel_seconds)
            time.sleep(0.3)
        raise TimeoutError(f"{path} still running after {run_timeout:.0f} s (state {state})")
    raise AssertionError("unreachable")


def _signature(cell: Any) -> str:
    return cell.evaluate(_JS_SIGNATURE, CONTROL_PARTS)


def _describe(control: Any) -> str:
    """The control's description (its label), e.g. 'temperature'."""
    return control.evaluate("""(el) => {
      const w = el.closest('.widget-slider, .widget-dropdown, .widget-toggle-buttons, .widget-text, '
                           + '.widget-textarea');
      const label = w && w.querySelector('.widget-label');
      return label ? label.textContent.trim() : '';
    }""")


def _change(page: Any, control: Any) -> str:
    """Change one control the way a learner would; returns what kind of control it was."""
    tag = control.evaluate("(el) => el.tagName.toLowerCase()")
    if tag == "select":
        n = control.evaluate("(el) => el.options.length")
        current = control.evaluate("(el) => el.selectedIndex")
        if n < 2:
            return "dropdown with one option: cannot change"
        control.select_option(index=(current + 1) % n)
        return "dropdown"
    if tag == "button":
        control.click()
        return "toggle button"
    if tag in ("input", "textarea"):
        kind = "textarea" if tag == "textarea" else control.evaluate("(el) => el.type || 'text'")
        value = control.input_value()
        if kind == "number":
            try:
                new = str(float(value) + float(control.get_attribute("step") or 1))
                new = new[:-2] if new.endswith(".0") and "." not in value else new
            except ValueError:
                new = "1"
        else:
            new = (value + " and") if value else "The"
        control.fill(new)
        if kind != "textarea":  # Enter submits a text box; in a text area it would add a line
            control.press("Enter")
        control.evaluate("(el) => el.blur()")  # continuous_update=False widgets sync on blur
        return {"number": "number box", "textarea": "text area"}.get(kind, "text box")
    # A slider handle (noUiSlider): arrow keys move it one step, as a learner's keyboard would. The readout
    # says whether it moved (aria-valuenow lags behind and is rounded).
    readout = """(el) => { const w = el.closest('.widget-slider');
                           const r = w && w.querySelector('.widget-readout');
                           return (r ? r.textContent : '') + '|' + el.getAttribute('aria-valuenow'); }"""
    before = control.evaluate(readout)
    control.focus()
    page.keyboard.press("ArrowRight")
    time.sleep(0.3)
    if control.evaluate(readout) == before:  # already at the maximum
        page.keyboard.press("ArrowLeft")
        time.sleep(0.3)
    if control.evaluate(readout) != before:
        return "slider"
    # Notebook 7 (7.6) swallows arrow keys before the slider sees them (a window-level handler calls
    # preventDefault), so there a learner drags the handle with the mouse: do the same.
    handle = control.bounding_box()
    track = control.evaluate("(el) => { const t = el.closest('.noUi-target');"
                             " const r = t.getBoundingClientRect(); return r.width; }")
    if handle:
        for direction in (1, -1):
            x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + direction * max(12.0, track * 0.35), y, steps=4)
            page.mouse.up()
            time.sleep(0.3)
            if control.evaluate(readout) != before:
                return "slider (dragged with the mouse)"
    return "slider with one position: cannot change"


def poke_widgets(page: Any, run: RunAll, *, max_cells: int = 6, max_controls_per_cell: int = 3,
                 change_timeout: float = 20.0) -> list[WidgetPoke]:
    """For each cell whose output holds a control, change controls until the cell's display changes.

    The display signature is the cell's output HTML with the controls cut out (plots' image data, printed
    text, HTML widgets), so a moving slider readout alone does not count as a change.
    """
    cells = run.cells(page)
    pokes: list[WidgetPoke] = []
    tried_cells = 0
    for i in range(cells.count()):
        cell = cells.nth(i)
        controls = cell.locator(f".jp-Cell-outputArea :is({CONTROL_SELECTOR})")
        n_controls = controls.count()
        if not n_controls:
            continue
        tried_cells += 1
        if tried_cells > max_cells:
            break
        ordered = [(kind, k) for kind in CONTROL_KINDS
                   for k in range(cell.locator(f".jp-Cell-outputArea {kind}").count())]
        for kind_selector, k in ordered[:max_controls_per_cell]:
            control = cell.locator(f".jp-Cell-outputArea {kind_selector}").nth(k)
            control.scroll_into_view_if_needed()
            before = _signature(cell)
            description = _describe(control)
            start = time.monotonic()
            kind = _change(page, control)
            if kind.endswith("cannot change"):
                pokes.append(WidgetPoke(cell=i, control=kind, description=description, changed=False, seconds=0.0))
                continue
            changed = False
            deadline = time.monotonic() + change_timeout
            while time.monotonic() < deadline:
                time.sleep(0.25)
                state = page.evaluate(_JS_STATE, run.panel)
                now = _signature(cell)
                if now != before and state["kernel"] == "idle":
                    time.sleep(0.5)  # let a clear_output(wait=True) redraw settle
                    changed = _signature(cell) != before
                    if changed:
                        break
            pokes.append(WidgetPoke(cell=i, control=kind, description=description, changed=changed,
                                    seconds=round(time.monotonic() - start, 2)))
            if changed:
                break
    return pokes


def save_notebook(page: Any, run: RunAll) -> None:
    """Save the notebook as the learner would (Ctrl+S): outputs included, widget state as the front end's
    settings say (neither JupyterLab nor Notebook 7 saves it by default)."""
    page.evaluate(_JS_SAVE, run.panel)


def screenshot_cell(page: Any, run: RunAll, cell_index: int, path: Path, max_height: int = 2400) -> None:
    """Save a PNG of one notebook cell (its code and its widget output), whole and unobstructed.

    The status bar is hidden (it floats over the notebook's bottom edge) and the viewport grows to fit a tall
    cell, since the notebook panel scrolls inside the page and an element screenshot cannot see past it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("""() => { const app = window.jupyterapp;
      if (app && app.commands.hasCommand('statusbar:toggle') && app.commands.isToggled('statusbar:toggle'))
        return app.commands.execute('statusbar:toggle'); }""")
    cell = run.cells(page).nth(cell_index)
    viewport = page.viewport_size or {"width": 1280, "height": 900}
    box = cell.bounding_box() or {"height": 0}
    needed = min(max_height, int(box["height"]) + 160)  # + the menu and tab bars above the notebook
    if needed > viewport["height"]:
        page.set_viewport_size({"width": viewport["width"], "height": needed})
        time.sleep(0.5)  # let JupyterLab lay the panels out again
    try:
        cell.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        time.sleep(0.3)
        cell.screenshot(path=str(path), animations="disabled")
    finally:
        page.set_viewport_size(viewport)
