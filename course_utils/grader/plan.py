"""What the judge must run for each test: the static plan of a source notebook.

While grading, test cells run in the judge, never in the student's kernel. :func:`plan` reads the *source*
notebook (the instructor's, trusted) and says, for each test cell, which names are **exercise names** (their
last binding before the test is in a solution cell: they come from the kernel, through the oracle) and which
locked cells the judge must run itself first (those that bind or change the other names the test reads,
transitively). :func:`kernel_locked_cells` says the same for the student's code: which locked cells the kernel
needs (the others are demos, not run in the kernel while grading). The analysis is static (``symtable`` over the
cell after IPython's own input transformation): it follows names, not values, which is why a locked cell that
changes an object the tests use must do so at the top level (``model.eval()``, ``freeze(model)``,
``model.config.x = 1``), where it is seen.
"""

from __future__ import annotations

import ast
import symtable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

from course_utils.cells import grade_id, is_locked_code, is_solution_cell, is_test_cell, points, source_of


# ------------------------------------------------------------------------------------------ static analysis


@lru_cache(maxsize=4096)
def python_source(source: str) -> str:
    """A cell as plain Python: IPython's magics and shell escapes turned into calls, as IPython itself does."""
    from IPython.core.inputtransformer2 import TransformerManager  # noqa: PLC0415

    return TransformerManager().transform_cell(source)


@dataclass(frozen=True)
class Names:
    """What one cell does with module-level (global) names."""

    binds: frozenset[str]
    reads: frozenset[str]
    changes: frozenset[str]   # names whose objects a top-level statement may change in place
    imports: frozenset[str] = frozenset()   # names bound by import statements (modules, library functions)


@lru_cache(maxsize=4096)
def analyse(source: str) -> Names:
    """The global names ``source`` binds, reads before binding them, and (at top level) may change in place.

    A name the cell binds before it reads it (``q = ...; f(q)``, a ``for`` loop's variable) is the cell's own
    and not read from outside; the order is followed statement by statement, into ``for``/``if``/``with``/
    ``try`` blocks. Modules the cell imports are never counted as changed.
    """
    code = python_source(source)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return Names(frozenset(), frozenset(), frozenset())
    binds: set[str] = set()
    reads: set[str] = set()
    _block(tree.body, binds, reads)
    imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    return Names(frozenset(binds), frozenset(reads), frozenset(_changed(tree) - imported), frozenset(imported))


def _block(statements: list[ast.stmt], bound: set[str], reads: set[str]) -> None:
    """Walk statements in order: ``reads`` gets each name read before ``bound`` has it."""
    def expr(node: ast.AST | None) -> None:
        if node is not None:
            _, names = _statement_names(ast.unparse(ast.Expr(node)))
            reads.update(names - bound)

    for stmt in statements:
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            expr(stmt.iter)
            bound.update(_statement_names(ast.unparse(ast.Assign([stmt.target], ast.Constant(0), lineno=0)))[0])
            _block(stmt.body, bound, reads)
            _block(stmt.orelse, bound, reads)
        elif isinstance(stmt, (ast.While, ast.If)):
            expr(stmt.test)
            _block(stmt.body, bound, reads)
            _block(stmt.orelse, bound, reads)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                expr(item.context_expr)
                if item.optional_vars is not None:
                    target = ast.Assign([item.optional_vars], ast.Constant(0), lineno=0)
                    bound.update(_statement_names(ast.unparse(target))[0])
            _block(stmt.body, bound, reads)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            _block(stmt.body, bound, reads)
            for handler in stmt.handlers:
                expr(handler.type)
                if handler.name:
                    bound.add(handler.name)
                _block(handler.body, bound, reads)
            _block(stmt.orelse, bound, reads)
            _block(stmt.finalbody, bound, reads)
        else:
            stmt_binds, stmt_reads = _statement_names(ast.unparse(stmt))
            reads.update(stmt_reads - bound)
            bound.update(stmt_binds)


@lru_cache(maxsize=16384)
def _statement_names(code: str) -> tuple[frozenset[str], frozenset[str]]:
    try:
        table = symtable.symtable(code, "<cell>", "exec")
    except SyntaxError:
        return frozenset(), frozenset()
    binds: set[str] = set()
    reads: set[str] = set()
    for sym in table.get_symbols():
        if sym.is_assigned() or sym.is_imported() or sym.is_namespace():
            binds.add(sym.get_name())
        if sym.is_referenced():
            reads.add(sym.get_name())
    _nested(table, binds, reads)
    return frozenset(binds), frozenset(reads)


def _nested(table: symtable.SymbolTable, binds: set[str], reads: set[str]) -> None:
    for child in table.get_children():
        for sym in child.get_symbols():
            if sym.is_global() or (child.get_type() == "class" and sym.is_referenced() and not sym.is_local()):
                if sym.is_referenced():
                    reads.add(sym.get_name())
                if sym.is_global() and sym.is_assigned() and sym.is_declared_global():
                    binds.add(sym.get_name())
            elif sym.is_free():
                pass  # a closure variable of an enclosing function, not a global
        _nested(child, binds, reads)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


# Calls that do not change their arguments, and methods that do not change their object: a cell that only
# shows or measures an object does not have to run in the judge for the object to be right there.
_PURE_CALLS = {"print", "display", "len", "repr", "str", "format", "isinstance", "issubclass", "type", "sorted",
               "list", "tuple", "dict", "set", "frozenset", "sum", "min", "max", "abs", "round", "float", "int",
               "bool", "enumerate", "zip", "range", "any", "all", "show", "Markdown", "HTML", "id", "hash", "iter",
               "map", "filter", "reversed", "getattr", "hasattr", "vars", "dir"}
_PURE_METHODS = {"decode", "encode", "batch_decode", "convert_ids_to_tokens", "tokenize", "generate", "forward",
                 "parameters", "named_parameters", "modules", "named_modules", "children", "named_children",
                 "buffers", "named_buffers", "state_dict", "num_parameters", "get_submodule", "get_parameter",
                 "items", "keys", "values", "get", "copy", "clone", "detach", "numpy", "tolist", "item", "size",
                 "dim", "numel", "sum", "mean", "std", "max", "min", "argmax", "argmin", "topk", "softmax",
                 "log_softmax", "float", "double", "long", "int", "bool", "to_dict", "count", "index",
                 "startswith", "endswith", "split", "join", "strip", "format", "replace", "lower", "upper",
                 "splitlines", "element_size", "nelement", "isfinite", "abs", "exp", "log", "allclose", "equal",
                 "view", "reshape", "transpose", "permute", "flatten", "squeeze", "unsqueeze", "shape"}


def _changed(tree: ast.Module) -> set[str]:
    """Names a top-level statement may change in place: method calls on them, calls taking them, item/attribute
    assignments into them, augmented assignments, ``del x[...]`` (calls and methods known not to change
    anything, such as ``print`` or ``.decode``, excepted)."""
    out: set[str] = set()
    for stmt in tree.body:
        targets: list[ast.AST] = []
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if isinstance(target, (ast.Attribute, ast.Subscript)) or isinstance(stmt, ast.AugAssign):
                    name = _root_name(target)
                    if name:
                        out.add(name)
        elif isinstance(stmt, ast.Delete):
            out.update(n for n in (_root_name(t) for t in stmt.targets if not isinstance(t, ast.Name)) if n)
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr not in _PURE_METHODS:
                    name = _root_name(func.value)
                    if name:
                        out.add(name)
                called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) \
                    else None
                if called in _PURE_CALLS or called in _PURE_METHODS:
                    continue
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    name = _root_name(arg) if isinstance(arg, (ast.Name, ast.Attribute, ast.Subscript)) else None
                    if name:
                        out.add(name)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                break  # calls inside definitions do not run now
    return out


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class TestPlan:
    """What the judge needs for one test cell of the source notebook."""

    grade_id: str
    index: int                                  # position in the source notebook
    source: str                                 # the instructor's test code, hidden tests included
    points: float
    exercise_names: list[str] = field(default_factory=list)     # read through the oracle
    locked_cells: list[int] = field(default_factory=list)       # source positions the judge runs first


@dataclass
class Plan:
    """The judge's plan for one assignment notebook: its tests, the locked cells it runs, in source order."""

    cells: list[dict]                           # the source notebook's cells (cell_type, source, metadata)
    tests: list[TestPlan]
    judge_cells: list[int]                      # every locked cell the judge runs, source positions, in order
    cell_exercise_names: dict[int, list[str]] = field(default_factory=dict)   # judge cell -> names it reads

    def test(self, grade_id_: str) -> TestPlan | None:
        return next((t for t in self.tests if t.grade_id == grade_id_), None)

    @property
    def exercise_names(self) -> list[str]:
        return sorted({n for t in self.tests for n in t.exercise_names})

    def locked_id(self, index: int) -> str | None:
        return grade_id(self.cells[index])


def plan(cells: Iterable[Any]) -> Plan:
    """The judge's plan for a source notebook's cells (see the module docstring)."""
    cells = [dict(cell_type=c.get("cell_type"), source=source_of(c), metadata=dict(c.get("metadata", {})))
             for c in cells]
    binder: dict[str, list[tuple[int, str]]] = {}      # name -> [(position, kind)] in order
    analyses: dict[int, Names] = {}
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        kind = "test" if is_test_cell(cell) else "solution" if is_solution_cell(cell) else \
            "locked" if is_locked_code(cell) else None
        if kind is None:
            continue
        names = analyses[index] = analyse(cell["source"])
        for name in names.binds:
            binder.setdefault(name, []).append((index, kind))

    def last_binder(name: str, before: int) -> tuple[int, str] | None:
        found = [b for b in binder.get(name, []) if b[0] < before]
        return found[-1] if found else None

    imported = {n for names in analyses.values() for n in names.imports}

    def changers(name: str, after: int, before: int) -> list[int]:
        if name in imported:
            return []   # a module: calling its functions does not make a cell part of the tests' state
        return [i for i, names in analyses.items() if after < i < before and is_locked_code(cells[i])
                and name in names.changes]

    tests: list[TestPlan] = []
    judge_cells: set[int] = set()
    cell_names: dict[int, set[str]] = {}
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code" or not is_test_cell(cell):
            continue
        test = TestPlan(grade_id(cell) or f"#{index}", index, cell["source"], points(cell))
        needed: set[int] = set()
        exercise: set[str] = set()
        todo = [(name, index) for name in analyses[index].reads]
        seen: set[tuple[str, int]] = set()
        while todo:
            name, before = todo.pop()
            if (name, before) in seen:
                continue
            seen.add((name, before))
            found = last_binder(name, before)
            if found is None:
                continue
            position, kind = found
            if kind == "solution":
                if before == index:
                    exercise.add(name)
                else:
                    cell_names.setdefault(before, set()).add(name)
                continue
            if kind == "test":
                continue  # the judge ran that test cell itself, earlier
            for cell_index in [position, *changers(name, position, before)]:
                if cell_index not in needed:
                    needed.add(cell_index)
                    todo.extend((n, cell_index) for n in analyses[cell_index].reads)
        test.exercise_names = sorted(exercise)
        test.locked_cells = sorted(needed)
        judge_cells |= needed
        tests.append(test)
    return Plan(cells, tests, sorted(judge_cells), {i: sorted(n) for i, n in cell_names.items()})


_DYNAMIC_NAMES = {"globals", "locals", "vars", "eval", "exec", "get_ipython", "__builtins__", "__import__"}


def kernel_locked_cells(source_cells: Iterable[Any], student_sources: Iterable[str]) -> dict[str, str] | None:
    """What of the instructor's locked cells the student's own code needs in the kernel: ``{grade id: the code to
    run}``, where the code is the cell's top-level statements that bind or change the names the student's code
    reads, transitively (``import torch`` and ``torch.manual_seed(0)`` of a set-up cell, not its model loading
    or its widget imports). None when the code reaches names dynamically (``globals()``, ``eval``): then every
    locked cell runs whole. While grading, the rest (demos) runs only in the judge, if a test needs it."""
    cells_ = [dict(cell_type=c.get("cell_type"), source=source_of(c), metadata=dict(c.get("metadata", {})))
              for c in source_cells]
    wanted: set[str] = set()
    own: set[str] = set()
    for source in student_sources:
        try:
            names = analyse(source)
        except (RecursionError, ValueError, MemoryError):
            return None
        if names.reads & _DYNAMIC_NAMES or "sys" in names.reads and "modules" in source:
            return None
        wanted |= names.reads
        own |= names.binds
    wanted -= own      # the student's own functions are defined by the student's cells
    statements: list[tuple[int, int, _Statement]] = []
    for i, cell in enumerate(cells_):
        if cell["cell_type"] == "code" and is_locked_code(cell):
            statements += [(i, k, st) for k, st in enumerate(_statements(cell["source"]))]
    needed: set[tuple[int, int]] = set()
    changed = True
    while changed:
        changed = False
        for i, k, st in statements:
            if (i, k) not in needed and (st.binds & wanted or st.changes & wanted):
                needed.add((i, k))
                wanted |= st.reads
                changed = True
    plan_: dict[str, str] = {}
    for i, cell in enumerate(cells_):
        chosen = [st for j, k, st in statements if j == i and (j, k) in needed]
        if not chosen:
            continue
        whole = len(chosen) == sum(1 for j, _, _ in statements if j == i)
        plan_[grade_id(cell) or f"#{i}"] = cell["source"] if whole else "\n".join(st.code for st in chosen)
    return plan_


def _dotted_root(node: ast.AST) -> str | None:
    """``a`` for a plain ``a.b.c`` (a method of a name, no call or index on the way), else None."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


@dataclass(frozen=True)
class _Statement:
    code: str
    binds: frozenset[str]
    reads: frozenset[str]
    changes: frozenset[str]      # names a call or an assignment at its top changes (a module's settings too)


@lru_cache(maxsize=1024)
def _statements(source: str) -> tuple[_Statement, ...]:
    """The top-level statements of a cell (as plain Python), with what each binds, reads and changes."""
    code = python_source(source)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ()
    out = []
    for stmt in tree.body:
        text = ast.unparse(stmt)
        binds: set[str] = set()
        reads: set[str] = set()
        _block([stmt], binds, reads)
        changes = set()
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            root = _dotted_root(stmt.value.func)
            if root and root != "get_ipython":      # torch.manual_seed(0), model.eval(); not magics
                changes.add(root)
        elif isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            changes |= {n for n in (_root_name(t) for t in targets if not isinstance(t, ast.Name)) if n}
        out.append(_Statement(text, frozenset(binds), frozenset(reads), frozenset(changes)))
    return tuple(out)
