"""Grading integrity: what a submission did to the notebook and to the kernel, and which marks it cannot keep.

Three layers (see "For instructors" in README.md for what they do not catch):

* :class:`IntegrityCheck` (nbgrader preprocessor, before ``OverwriteCells``) compares the submission with the
  released notebook: cells with unknown nbgrader ids lose their grading metadata (a forged test cell earns
  nothing), changed points/flags are restored, deleted test cells are put back, edited test cells are reported
  (nbgrader restores their source), and the student's own code is scanned (:mod:`course_utils.codescan`).
* sentinels (:func:`add_sentinels`, :func:`settle_test_cells`): each test cell gets a random marker printed at its
  very end; no marker, no points.
* the hook probe (:mod:`course_utils.probe`), evaluated in the kernel before each test cell: input/AST transformers,
  event callbacks, patched shell/kernel/session methods, replaced builtins, patched functions of imported library
  modules and of the check helpers, when the code behind them comes from outside the read-only installation
  (i.e. from the notebook). A test cell that runs under such a hook scores 0.
Findings are either *review* items (the submission is flagged for a person to look at) or *notes*.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from course_utils import codescan

METADATA_KEY = "course_integrity"
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


@dataclass
class Findings:
    """Review items (flag the submission) and notes (for information) gathered while grading one notebook."""

    review: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def flag(self, message: str) -> None:
        if message not in self.review:
            self.review.append(message)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def as_dict(self) -> dict:
        return {"flagged": bool(self.review), "review": list(self.review), "notes": list(self.notes)}

    @classmethod
    def from_metadata(cls, data: object) -> "Findings":
        data = data if isinstance(data, dict) else {}
        return cls([str(x) for x in data.get("review", [])], [str(x) for x in data.get("notes", [])])


def is_test_cell(cell: NotebookNode) -> bool:
    """A graded, autograded cell: code, ``grade: true`` and not a (manually graded) solution."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _norm(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


# ---------------------------------------------------------------------------------------------------------
# Sentinels


def add_sentinels(nb: NotebookNode, nonce: str) -> dict[int, tuple[str, str]]:
    """Append a random end-of-cell marker to every test cell; returns {cell index: (original source, token)}.

    ``nonce`` seeds nothing guessable: each cell gets its own random token, so seeing one teaches nothing.
    """
    originals: dict[int, tuple[str, str]] = {}
    for index, cell in enumerate(nb.cells):
        if is_test_cell(cell):
            token = f"@@course-sentinel-{secrets.token_hex(12)}@@"
            originals[index] = (cell.source, token)
            cell.source = cell.source.rstrip("\n") + f'\n__import__("sys").stdout.write("{token}\\n") and None'
    return originals


def _take_token(cell: NotebookNode, token: str) -> bool:
    """Remove ``token`` from the cell's stdout; True when it was there."""
    found = False
    kept = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout" and token in out.get("text", ""):
            found = True
            out["text"] = out["text"].replace(token + "\n", "").replace(token, "")
            if not out["text"]:
                continue
        kept.append(out)
    cell["outputs"] = kept
    return found


def settle_test_cells(nb: NotebookNode, originals: dict[int, tuple[str, str]], zeroed: dict[int, str],
                      not_run: dict[int, str], findings: Findings, stderr_fails: bool = False) -> list[dict]:
    """After execution: check and remove the sentinels, give untrustworthy test cells an error, restore sources.

    Unless ``stderr_fails``, text a test cell wrote to stderr (a library's warning) is shown as ordinary output:
    nbgrader would otherwise score the cell 0, and a library upgrade that adds a warning would fail everyone.
    Returns one record per test cell: grade id, points, passed, and why it failed when the grader decided so.
    """
    records = []
    for index, (source, token) in sorted(originals.items()):
        cell = nb.cells[index]
        if not stderr_fails:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    out["name"] = "stdout"
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id", f"#{index}")
        found = _take_token(cell, token)
        has_error = any(o.get("output_type") == "error" for o in cell.outputs)
        reason = None
        if index in not_run:
            reason = f"not run: {not_run[index]}"
        elif index in zeroed:
            reason = zeroed[index]
            if not has_error:
                findings.flag(f"test {grade_id!r} ran while {reason}: scored 0")
        elif not found and not has_error:
            reason = "the test cell did not run to its end (its sentinel never printed)"
            findings.flag(f"test {grade_id!r}: {reason}: scored 0")
        if reason and not has_error:
            cell.outputs.append(NotebookNode(output_type="error", ename="GradingIntegrityError", evalue=reason,
                                             traceback=[f"GradingIntegrityError: {reason}"]))
        cell.source = source
        passed = not any(o.get("output_type") == "error" for o in cell.outputs) and not any(
            o.get("output_type") == "stream" and o.get("name") == "stderr" for o in cell.outputs)
        records.append({"grade_id": grade_id, "points": float(meta.get("points", 0) or 0), "passed": passed,
                        **({"reason": reason} if reason else {})})
    return records


# ---------------------------------------------------------------------------------------------------------
# The submission against the released notebook (sanitize stage)


class IntegrityCheck(NbGraderPreprocessor):
    """Compare a submission with its released notebook; neutralise forged cells; scan the student's code.

    Runs before nbgrader's ``OverwriteCells``. Findings go into ``nb.metadata['course_integrity']`` for
    :class:`course_utils.executor.SandboxedExecute`, which writes the report.
    """

    release_directory = Unicode("grading/release", help="the released assignments the gradebook was built from"
                                ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        info = resources.get("nbgrader", {})
        findings = Findings()
        path = Path(self.release_directory) / info.get("assignment", "") / f"{info.get('notebook', '')}.ipynb"
        try:
            release = nbformat.read(path, as_version=4)
        except (OSError, ValueError) as err:
            findings.flag(f"could not compare with the released notebook {path}: {err}")
            nb.metadata[METADATA_KEY] = findings.as_dict()
            return nb, resources
        self._compare(nb, release, findings)
        nb.metadata[METADATA_KEY] = findings.as_dict()
        return nb, resources

    def _compare(self, nb: NotebookNode, release: NotebookNode, findings: Findings) -> None:
        ref = {c.metadata["nbgrader"]["grade_id"]: c for c in release.cells
               if c.metadata.get("nbgrader", {}).get("grade_id")}
        seen: Counter[str] = Counter()
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader")
            grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
            if meta is not None and grade_id not in ref:
                if isinstance(meta, dict) and any(meta.get(k) for k in ("grade", "solution", "locked", "task")):
                    findings.flag(f"a cell claims the unknown nbgrader id {grade_id!r} (forged?): graded as plain code")
                del cell.metadata["nbgrader"]
                continue
            if grade_id is None:
                continue
            seen[grade_id] += 1
            want = ref[grade_id]
            wanted = want.metadata["nbgrader"]
            changed = [f"{k} {meta.get(k)!r}->{wanted.get(k)!r}" for k in ("grade", "solution", "locked", "points",
                       "task") if meta.get(k) != wanted.get(k)]
            if changed or cell.cell_type != want.cell_type:
                findings.flag(f"the nbgrader settings of cell {grade_id!r} were changed ({', '.join(changed) or 'type'})"
                              ": restored")
            cell.metadata["nbgrader"] = copy.deepcopy(wanted)
            if cell.cell_type != want.cell_type:
                cell.cell_type = want.cell_type
            if is_test_cell(want) and _norm(cell.source) != _norm(want.source):
                findings.flag(f"test cell {grade_id!r} was edited (the grader runs the original)")
            tags = cell.get("metadata", {}).pop("tags", None)
            if tags and (wanted.get("locked") or wanted.get("grade")):
                findings.flag(f"cell {grade_id!r} carries the tag(s) {tags}: removed, the cell runs")
        for grade_id, count in seen.items():
            if count > 1:
                findings.flag(f"cell {grade_id!r} appears {count} times (copied cells are graded once)")
        self._restore_missing(nb, release, ref, seen, findings)
        self._scan(nb, release, findings)

    @staticmethod
    def _restore_missing(nb: NotebookNode, release: NotebookNode, ref: dict, seen: Counter,
                         findings: Findings) -> None:
        """Put deleted test and read-only cells back after the nearest earlier cell the submission still has."""
        order = [c.metadata.get("nbgrader", {}).get("grade_id") for c in release.cells]
        for position, grade_id in enumerate(order):
            if not grade_id or grade_id in seen:
                continue
            want = ref[grade_id]
            meta = want.metadata["nbgrader"]
            if not (is_test_cell(want) or (meta.get("locked") and not meta.get("solution"))):
                continue
            message = f"{'test' if is_test_cell(want) else 'read-only'} cell {grade_id!r} was deleted: put back"
            if want.cell_type == "code":
                findings.flag(message)
            else:
                findings.note(message)
            at = 0
            for earlier in reversed(order[:position]):
                ids = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells]
                if earlier and earlier in ids:
                    at = ids.index(earlier) + 1
                    break
            cell = copy.deepcopy(want)
            cell.pop("id", None)
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            if "id" in want:
                cell["id"] = secrets.token_hex(4)
            nb.cells.insert(at, cell)
            seen[grade_id] += 1

    @staticmethod
    def _scan(nb: NotebookNode, release: NotebookNode, findings: Findings) -> None:
        """Scan the code the student wrote (cells not identical to a released cell) for tampering signatures."""
        released = {_norm(c.source) for c in release.cells if c.cell_type == "code"}
        imports = codescan.imported_names(c.source for c in release.cells if c.cell_type == "code")
        imports.setdefault("checks", "course_utils.checks")
        try:
            from course_utils import checks  # noqa: PLC0415 - names of the helpers, to spot rebinding

            imports.update({n: f"course_utils.checks.{n}" for n in dir(checks) if n.startswith("expect_")})
        except ImportError:  # pragma: no cover
            pass
        for number, cell in enumerate(nb.cells, start=1):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.cell_type != "code" or meta.get("locked") or is_test_cell(cell):
                continue
            if _norm(cell.source) in released:
                continue
            for reason in codescan.scan(cell.source, imports):
                label = f"cell {meta['grade_id']!r}" if meta.get("grade_id") else f"code cell {number}"
                findings.flag(f"{label}: {reason}")


def report_paths(report_directory: Path, student: str, assignment: str) -> list[Path]:
    """The per-notebook JSON reports written by SandboxedExecute for one submission."""
    return sorted((Path(report_directory) / student / assignment).glob("*.json"))


def read_report(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
