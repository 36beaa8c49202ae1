"""What a submission did to the notebook: forged, edited, deleted or duplicated cells, and suspicious code.

:class:`IntegrityCheck` is nbgrader's sanitize step, before ``OverwriteCells``. It compares the submission with
the released notebook:

* a cell claiming an unknown nbgrader id (a forged test cell, "50 bonus points") loses its grading metadata;
* changed points, flags or types are restored; deleted test and read-only cells are put back;
* a cell id that appears more than once: **the last copy is the answer** (the one a student edited last); the
  earlier copies lose their grading metadata and run as plain code, and the submission is flagged;
* the student's own code is scanned for tampering signatures (:mod:`course_utils.grader.codescan`).

None of this decides a score any more: the tests run in the judge (:mod:`course_utils.grader.judge`), out of the
student's reach. These findings are *review* items (flag the submission for a person) or *notes*.
"""

from __future__ import annotations

import copy
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from course_utils.grader import codescan
from course_utils.cells import is_test_cell

METADATA_KEY = "course_integrity"


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


def _norm(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


# ---------------------------------------------------------------------------------------------------------
# The submission against the released notebook (sanitize stage)


class IntegrityCheck(NbGraderPreprocessor):
    """Compare a submission with its released notebook; neutralise forged cells; scan the student's code.

    Runs before nbgrader's ``OverwriteCells``. Findings go into ``nb.metadata['course_integrity']``, where the
    grader collects them for the submission's record.
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
        self._deduplicate(nb, seen, findings)
        self._restore_missing(nb, release, ref, seen, findings)
        self._scan(nb, release, findings)

    @staticmethod
    def _deduplicate(nb: NotebookNode, seen: Counter, findings: Findings) -> None:
        """The last copy of a cell id is the graded one; earlier copies run as plain code (and are flagged)."""
        for grade_id, count in seen.items():
            if count < 2:
                continue
            copies = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id]
            for cell in copies[:-1]:
                del cell.metadata["nbgrader"]
            seen[grade_id] = 1
            findings.flag(f"cell {grade_id!r} appears {count} times: the last copy is graded, the others run as "
                          "plain code")

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
