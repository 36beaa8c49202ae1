"""Static scan of a student's code cells for signs of grading tampering (a flag for manual review, not a score).

The scan reads the code (it never runs it) and reports what it would take to stop hidden tests from running or
to make them pass without the work: IPython input/AST transformers and event hooks, patched kernel or shell
methods, rebound check helpers, patched modules or builtins, ``sys.modules`` surgery, killing the kernel,
objects that compare equal to anything, dynamic code, and references to the grader's files.

It is a tripwire for a person's attention, not a proof and never a score: tests run in the trusted judge
(:mod:`course_utils.grader.judge`), where none of these tricks reach, so a flag only says "look at this".

    >>> scan("get_ipython().input_transformers_post.append(lambda lines: [])")
    ['installs an IPython input transformer (input_transformers_post)', 'uses the IPython shell object (get_ipython)']
"""

from __future__ import annotations

import ast
import re
from typing import Iterable

_HOOK_ATTRS = {
    "input_transformers_post": "installs an IPython input transformer",
    "input_transformers_cleanup": "installs an IPython input transformer",
    "input_transformer_manager": "changes IPython's input transformation",
    "line_transforms": "installs an IPython input transformer",
    "token_transformers": "installs an IPython input transformer",
    "ast_transformers": "installs an IPython AST transformer",
    "set_custom_exc": "installs a custom exception handler",
    "custom_exceptions": "installs a custom exception handler",
    "showtraceback": "changes how errors are shown",
    "_showtraceback": "changes how errors are shown",
    "showsyntaxerror": "changes how errors are shown",
    "run_cell": "patches how cells run",
    "run_cell_async": "patches how cells run",
    "run_ast_nodes": "patches how cells run",
    "run_code": "patches how cells run",
    "transform_cell": "patches how cells run",
    "user_expressions": "patches how the grader inspects the kernel",
    "do_execute": "patches the kernel",
    "execute_request": "patches the kernel",
    "shell_handlers": "patches the kernel",
    "displayhook": "replaces the display hook",
    "excepthook": "replaces the exception hook",
    "settrace": "installs a trace function",
    "setprofile": "installs a profile function",
    "meta_path": "changes the import system",
    "path_hooks": "changes the import system",
    "_getframe": "inspects the interpreter's frames",
    "f_globals": "inspects the interpreter's frames",
    "f_back": "inspects the interpreter's frames",
    "get_referrers": "inspects the interpreter's objects",
}
_KILL_CALLS = {("os", "_exit"): "kills the kernel (os._exit)", ("os", "kill"): "sends signals (os.kill)",
               ("os", "killpg"): "sends signals (os.killpg)", ("os", "abort"): "kills the kernel (os.abort)",
               ("signal", "signal"): "changes signal handling (signal.signal)",
               ("signal", "pthread_kill"): "sends signals", ("os", "fork"): "forks the kernel (os.fork)"}
_MAGIC_METHODS = {"__eq__", "__ne__", "__hash__", "__bool__", "__instancecheck__", "__subclasscheck__",
                  "__getattribute__", "__class__"}
_DYNAMIC = {"exec", "eval", "compile", "__import__", "globals", "breakpoint"}
_SUSPICIOUS_MODULES = {"ctypes": "uses ctypes (raw memory access)", "gc": "inspects the garbage collector",
                       "inspect": "inspects the interpreter", "builtins": "imports builtins",
                       "nbgrader": "imports nbgrader", "sqlite3": "opens SQLite databases",
                       "sqlalchemy": "opens databases"}
_PATH_PATTERNS = [(re.compile(r"gradebook", re.I), "refers to the gradebook"),
                  (re.compile(r"(^|[/\\])solutions([/\\]|$)"), "refers to the solutions folder"),
                  (re.compile(r"(^|[/\\])\.\.([/\\]|$)"), "refers to a parent folder (..)"),
                  (re.compile(r"(submitted|autograded)[/\\]"), "refers to the grader's folders"),
                  (re.compile(r"BEGIN (HIDDEN TESTS|SOLUTION)|END (HIDDEN TESTS|SOLUTION)"),
                   "contains nbgrader markers"),
                  (re.compile(r"course-oracle|_course_oracle"), "refers to the grader's oracle")]
_ALWAYS_PROTECTED = {"builtins", "importlib", "sys", "IPython", "ipykernel", "course_utils", "checks"}
_PROTECTED_MODULES = {"builtins", "importlib", "sys", "os", "IPython", "ipykernel", "course_utils", "torch",
                      "numpy", "np", "math", "json", "nbformat", "checks", "transformers", "peft"}


def _strip_magics(source: str) -> str:
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        lines.append("" if stripped.startswith(("%", "!")) or stripped.endswith("?") else line)
    return "\n".join(lines)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.AST) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_patch(dotted: str, protected: set[str]) -> bool:
    """``a.b = ...`` patches a module or helper: always under the grader's own modules, else ``module.attr`` or
    ``module.Class.attr`` (``torch.backends.cudnn.deterministic = True`` is configuration, not a patch)."""
    parts = dotted.split(".")
    if not parts or parts[0] not in protected:
        return False
    if parts[0] in _ALWAYS_PROTECTED:
        return True
    return len(parts) == 2 or (len(parts) == 3 and parts[1][:1].isupper())


def imported_names(sources: Iterable[str]) -> dict[str, str]:
    """Names bound by import statements in ``sources`` (the instructor's cells), mapped to what they import."""
    names: dict[str, str] = {}
    for source in sources:
        try:
            tree = ast.parse(_strip_magics(source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                        alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def scan(source: str, instructor_imports: dict[str, str] | None = None) -> list[str]:
    """Reasons ``source`` looks like grading tampering (empty: nothing found).

    ``instructor_imports`` are the names the instructor's cells import (see :func:`imported_names`): rebinding
    them, or patching the modules and helpers they name, is reported.
    """
    imports = dict(instructor_imports or {})
    protected = set(imports)
    protected_names = protected | _PROTECTED_MODULES
    reasons: list[str] = []

    def add(reason: str) -> None:
        if reason not in reasons:
            reasons.append(reason)

    try:
        tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        for pattern, reason in _PATH_PATTERNS:
            if pattern.search(source):
                add(reason)
        for attr, reason in _HOOK_ATTRS.items():
            if re.search(rf"\b{re.escape(attr)}\b", source):
                add(f"{reason} ({attr})")
        return reasons
    texts = [source] + [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for pattern, reason in _PATH_PATTERNS:
        if any(pattern.search(text) for text in texts):
            add(reason)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in _HOOK_ATTRS:
                add(f"{_HOOK_ATTRS[node.attr]} ({node.attr})")
            if node.attr == "register" and _dotted(node.value).endswith("events"):
                add("registers an IPython event callback (events.register)")
            if node.attr == "modules" and _dotted(node.value) == "sys":
                add("touches sys.modules")
            if node.attr == "__builtins__" or node.attr == "__dict__":
                add(f"reaches into {node.attr}")
        elif isinstance(node, ast.Name):
            if node.id == "get_ipython":
                add("uses the IPython shell object (get_ipython)")
            if node.id == "__builtins__":
                add("reaches into __builtins__")
            if node.id in _DYNAMIC and isinstance(node.ctx, ast.Load):
                add(f"runs dynamic code ({node.id})")
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            for (mod, fn), reason in _KILL_CALLS.items():
                if dotted == f"{mod}.{fn}" or dotted.endswith(f".{mod}.{fn}"):
                    add(reason)
            if dotted in ("setattr", "delattr") and node.args and _root_name(node.args[0]) in protected_names:
                add(f"patches {_root_name(node.args[0])} with {dotted}()")
            if dotted.endswith("reload") and "importlib" in dotted:
                add("reloads modules (importlib.reload)")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                top = module.split(".")[0]
                if top in _SUSPICIOUS_MODULES:
                    add(_SUSPICIOUS_MODULES[top])
                if module.startswith(("course_utils.checks", "course_utils.grader", "course_utils.integrity")):
                    add(f"imports the grader's module {module}")
            for alias in node.names:
                if isinstance(node, ast.Import):
                    bound = alias.asname or alias.name.split(".")[0]
                    target = alias.name if alias.asname else alias.name.split(".")[0]
                else:
                    bound, target = alias.asname or alias.name, f"{node.module}.{alias.name}"
                if bound in imports and imports[bound] != target:
                    add(f"rebinds {bound} with an import")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name in _MAGIC_METHODS:
                add(f"defines {node.name} (objects that compare or test as anything)")
            if node.name in protected:
                add(f"redefines {node.name}")
        elif isinstance(node, ast.ClassDef) and node.name in protected:
            add(f"redefines {node.name}")
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)) and sub.id in protected:
                        add(f"rebinds {sub.id}")
                    if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                        if _is_patch(_dotted(sub), protected_names):
                            add(f"patches {_dotted(sub)}")
                        if sub.attr in _MAGIC_METHODS:
                            add(f"assigns {sub.attr} (objects that compare or test as anything)")
    return reasons
