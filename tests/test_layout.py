"""The package's layout: three wings that do not reach into each other, no import cycles, small modules.

``course_utils`` is one house with three wings (DESIGN.md §3):

* the **course** wing -- the topic modules, ``world``/``models``/``train``, ``checks``, ``widgets/``, ``sweeps/``;
* the **review** wing -- ``review/`` (flashcards, spaced repetition, self-checks, progress, validation);
* the **grader** wing -- ``grader/`` (the instructor's side: the judge, the sandbox, nbgrader's pipeline).

Shared by all: ``cells`` (the vocabulary of nbgrader cells) and ``runner`` (the one way to run a notebook).
``cli`` is the front door and may import any wing. These tests read the import statements (they do not
import the modules), so a wrong import fails here before it can make a cycle at run time.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_utils"
SHARED = {"course_utils", "course_utils.cells", "course_utils.runner", "course_utils._moved"}
FRONT_DOOR = {"course_utils.cli"}
MAX_LINES = 420   # "about 400"
# A module may be longer only with a reason that a reader would accept.
LONGER = {"course_utils.world": (650, "the course world's word lists and sentence templates are data")}


def _module_name(path: Path) -> str:
    name = "course_utils." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _top_level_imports(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports when it is imported (function-level imports are lazy
    and do not count; nor do imports under ``if TYPE_CHECKING:`` or ``if __name__ == "__main__":``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" in test or "__main__" in test:
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts) + (f".{base}" if base else "")
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in MODULES else base)

    visit(tree.body)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _top_level_imports(name, path) for name, path in MODULES.items()}


def wing(module: str) -> str:
    if module in SHARED:
        return "shared"
    if module in FRONT_DOOR:
        return "front door"
    part = module.split(".")[1]
    return {"grader": "grader", "review": "review"}.get(part, "course")


def test_no_import_cycles() -> None:
    cycles: set[tuple[str, ...]] = set()

    def walk(node: str, stack: list[str]) -> None:
        for dep in GRAPH[node]:
            if dep in stack:
                cycles.add(tuple(stack[stack.index(dep):]))
            elif dep not in done:
                walk(dep, [*stack, dep])
        done.add(node)

    done: set[str] = set()
    for start in GRAPH:
        walk(start, [start])
    assert not cycles, "import cycles (break one with a module both can import): " + "; ".join(
        " -> ".join([*c, c[0]]) for c in sorted(cycles))


# What each wing may import besides itself and the shared modules.
ALLOWED = {
    "course": set(),
    "review": {"course_utils.widgets.common"},     # the flashcard widget is built with the course's widget kit
    "grader": {"course_utils.checks"},             # the names of the test helpers, to spot a submission rebinding one
}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if wing(m) in ALLOWED))
def test_a_wing_imports_only_itself_and_the_shared_modules(module: str) -> None:
    own = wing(module)
    foreign = {dep for dep in GRAPH[module]
               if wing(dep) not in (own, "shared") and dep not in ALLOWED[own]}
    assert not foreign, f"{module} ({own} wing) imports {sorted(foreign)} from another wing"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_small_and_says_what_it_is_for(module: str) -> None:
    text = MODULES[module].read_text(encoding="utf-8")
    limit, _ = LONGER.get(module, (MAX_LINES, ""))
    lines = text.count("\n")
    assert lines <= limit, f"{module} has {lines} lines (at most {limit}): split it where its parts are independent"
    assert ast.get_docstring(ast.parse(text)), f"{module} has no module docstring saying what it is for"


def _layout_tables() -> tuple[list[list[str]], list[list[str]]]:
    """The README's two layout tables (repository, then ``course_utils`` wing by wing) as rows of cells."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    tables: list[list[list[str]]] = [[]]
    for line in section.splitlines():
        if line.startswith("|---"):
            continue
        if line.startswith("|"):
            tables[-1].append([cell.strip() for cell in line.strip("|").split("|")])
        elif tables[-1]:
            tables.append([])
    repository, wings = [t[1:] for t in tables if t][:2]  # [1:]: without the header row
    return repository, wings


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`\s]+)`", cell)


def test_the_readme_layout_tables_match_the_tree() -> None:
    """Every path the README's "Repository layout" tables list exists, and every module of ``course_utils`` is
    listed there under its wing (a new module gets a line, a removed one loses it)."""
    repository, wings = _layout_tables()
    listed_paths = [n for row in repository for n in _names(row[0])]
    assert not [p for p in listed_paths if not (ROOT / p).exists()], "the layout table lists paths that do not exist"
    listed: dict[str, str] = {}
    for wing_name, modules, _ in wings:
        names = _names(modules)
        folder = next((n.rstrip("/") for n in names if n.endswith("/")), "")
        for name in names:
            if name.endswith("/"):
                continue
            dotted = name.replace("/", ".") if "/" in name else (f"{folder.replace('/', '.')}.{name}" if folder else name)
            listed[f"course_utils.{dotted}"] = wing_name
    unknown = sorted(m for m in listed if m not in MODULES and f"{m}.__init__" not in MODULES)
    assert not unknown, f"the layout table lists modules that do not exist: {unknown}"
    unlisted = sorted(m for m in MODULES if m not in listed and not m.endswith("._moved")
                      and MODULES[m].name != "__init__.py")
    assert not unlisted, f"modules the README's layout table does not list: {unlisted}"
    wrong = {m: w for m, w in listed.items() if w != wing(m) and m in MODULES}
    assert not wrong, f"modules listed under the wrong wing (module: listed as): {wrong}"
