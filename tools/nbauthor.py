"""Authoring helper for the instructor notebooks in ``solutions/`` (not part of the learner package).

Notebooks are edited as notebooks; this module only saves typing when a notebook is first written or
rebuilt from a script: it makes cells with the nbgrader metadata that ``course release`` and autograding need.

    from tools.nbauthor import md, code, solution, tests, write
    write("solutions/01_attention/01_attention.ipynb", [
        md("# Attention"),
        code("import torch"),
        solution("causal_mask", "def causal_mask(T):\\n    ### BEGIN SOLUTION\\n    ...\\n    ### END SOLUTION"),
        tests("test_causal_mask", 2, '\"\"\"causal_mask: shape, dtype, lower triangle.\"\"\"\\n...'),
    ])
"""

from __future__ import annotations

from pathlib import Path

import nbformat

_SCHEMA = 3


def _meta(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: float | None = None,
          task: bool = False) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": _SCHEMA,
            "solution": solution, "task": task}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def md(source: str, grade_id: str | None = None) -> nbformat.NotebookNode:
    """A markdown cell (locked read-only when it has a grade_id)."""
    cell = nbformat.v4.new_markdown_cell(source.strip("\n"))
    if grade_id:
        cell.metadata.update(_meta(grade_id, grade=False, solution=False, locked=True))
    return cell


def code(source: str, grade_id: str | None = None) -> nbformat.NotebookNode:
    """A plain code cell (set-up, demos); locked when it has a grade_id."""
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    if grade_id:
        cell.metadata.update(_meta(grade_id, grade=False, solution=False, locked=True))
    return cell


def solution(grade_id: str, source: str) -> nbformat.NotebookNode:
    """An answer cell: the part between ### BEGIN SOLUTION / ### END SOLUTION is removed from the release."""
    if "### BEGIN SOLUTION" not in source:
        raise ValueError(f"solution cell {grade_id!r} has no '### BEGIN SOLUTION' marker")
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    cell.metadata.update(_meta(grade_id, grade=False, solution=True, locked=False))
    return cell


def tests(grade_id: str, points: float, source: str) -> nbformat.NotebookNode:
    """A graded, locked test cell; ### BEGIN HIDDEN TESTS / ### END HIDDEN TESTS are removed from the release."""
    first = source.strip("\n").splitlines()[0] if source.strip() else ""
    if not first.startswith('"""'):
        raise ValueError(f"test cell {grade_id!r} must open with a one-line docstring of what it checks")
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    cell.metadata.update(_meta(grade_id, grade=True, solution=False, locked=True, points=points))
    return cell


def write(path: str | Path, cells: list) -> Path:
    """Write a notebook with the course's kernel metadata; returns the path."""
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path
