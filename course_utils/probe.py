"""The hook probe: what untrusted code is hooked into a kernel, asked from the grader before each test cell.

:data:`PROBE_SOURCE` runs *inside* the student's kernel (standard library and IPython only, in a private namespace,
nothing left behind), as a ``user_expressions`` entry of an empty silent request, so IPython's input and AST
transformers never see it. "Untrusted" means: code whose file is not under the read-only installation (the
Python installation, the virtual environment, ``course_utils``), i.e. code written by the notebook.

It is a heuristic: code can lie about where it comes from (``compile(..., filename=...)``), which is one reason
the static scan flags dynamic code. See "For instructors" in README.md for what it does not catch.
"""

from __future__ import annotations

PROBE_SOURCE = r'''
def probe(trusted, full=False):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _probe(trusted, full)


def _probe(trusted, full):
    import builtins, functools, sys, types
    from IPython import get_ipython
    trusted = tuple(trusted)
    out = []
    plain = (types.BuiltinFunctionType, types.BuiltinMethodType, types.WrapperDescriptorType,
             types.MethodWrapperType, types.MethodDescriptorType, types.ClassMethodDescriptorType,
             types.GetSetDescriptorType, types.MemberDescriptorType)

    def where(obj, depth=0):
        if depth > 4:
            return "?"
        if isinstance(obj, functools.partial):
            return where(obj.func, depth + 1)
        if isinstance(obj, (staticmethod, classmethod)):
            return where(obj.__func__, depth + 1)
        if isinstance(obj, property):
            return where(obj.fget, depth + 1) if obj.fget else "<builtin>"
        func = getattr(obj, "__func__", obj)
        code = getattr(func, "__code__", None)
        if isinstance(code, types.CodeType):
            name = code.co_filename
            if not name.startswith("/") and not name.startswith("<ipython"):  # generated or compiled: its module
                modname = getattr(func, "__module__", None)
                if modname == "__main__":
                    return "<notebook>"  # exec'd in the notebook's namespace
                module = sys.modules.get(modname or "")
                return (getattr(module, "__file__", None) or "<generated>") if module is not None else "<generated>"
            return name
        if isinstance(obj, plain) or obj is None:
            return "<builtin>"
        if issubclass(type(obj), type):
            modname = vars(obj).get("__module__")
            if modname in ("builtins", "__builtin__"):
                return "<builtin>"
            if modname == "__main__":
                return "<notebook>"
            module = sys.modules.get(modname or "")
            path = vars(module).get("__file__") if issubclass(type(module), types.ModuleType) else None
            if isinstance(path, str):
                return path
            for member in vars(obj).values():
                if type(member) is types.FunctionType:
                    return where(member, depth + 1)
            return "<generated>"
        return where(type(obj), depth + 1)

    def ok(obj):
        name = where(obj)
        return name in ("<builtin>", "<generated>") or name.startswith("<frozen") or name.startswith(trusted)

    def check(label, obj):
        if not ok(obj):
            name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
            out.append(f"{label} -> {name} ({where(obj)})")

    def check_object(label, obj):
        if obj is None:
            return
        check(f"type of {label}", type(obj))
        for cls in type(obj).__mro__:
            for key, value in list(vars(cls).items()):
                if isinstance(value, (types.FunctionType, staticmethod, classmethod, property)):
                    check(f"{cls.__name__}.{key}", value)
        try:
            items = list(vars(obj).items())
        except TypeError:
            items = []
        for key, value in items:
            if callable(value) and not isinstance(value, type):
                check(f"{label}.{key}", value)

    ip = get_ipython()
    if ip is not None:
        manager = ip.input_transformer_manager
        for label, hooks in [("input_transformers_post", ip.input_transformers_post),
                             ("input_transformers_cleanup", ip.input_transformers_cleanup),
                             ("line_transforms", getattr(manager, "line_transforms", [])),
                             ("token_transformers", getattr(manager, "token_transformers", [])),
                             ("ast_transformers", ip.ast_transformers)]:
            for hook in hooks:
                check(label, hook)
        for event, callbacks in ip.events.callbacks.items():
            for callback in callbacks:
                check(f"event {event}", callback)
        if ip.custom_exceptions:
            out.append(f"custom exception handler for {ip.custom_exceptions!r}")
        kernel = getattr(ip, "kernel", None)
        for label, obj in [("shell", ip), ("kernel", kernel), ("session", getattr(kernel, "session", None)),
                           ("display_pub", ip.display_pub), ("displayhook", ip.displayhook),
                           ("compile", ip.compile), ("events", ip.events), ("transformer", manager),
                           ("stdout", sys.stdout), ("stderr", sys.stderr)]:
            check_object(label, obj)
        for name in ("shell_handlers", "control_handlers"):
            for key, handler in (getattr(kernel, name, None) or {}).items():
                check(f"kernel.{name}[{key}]", handler)
        if ip.user_ns.get("__builtins__", builtins) not in (builtins, vars(builtins)):
            out.append("the notebook's __builtins__ was replaced")
    for label, hook in [("sys.displayhook", sys.displayhook), ("sys.excepthook", sys.excepthook),
                        ("sys.breakpointhook", sys.breakpointhook), ("trace function", sys.gettrace()),
                        ("profile function", sys.getprofile())]:
        check(label, hook)
    for finder in list(sys.meta_path) + list(sys.path_hooks):
        check("import hook", finder)
    for key, value in list(vars(builtins).items()):
        if callable(value):
            check(f"builtins.{key}", value)
    def scan_class(label, cls):
        for attr, member in list(vars(cls).items()):
            if type(member) in (types.FunctionType, staticmethod, classmethod, property):
                check(f"{label}.{attr}", member)

    def scan_module(modname, module, classes):
        namespace = getattr(module, "__dict__", None)
        if type(namespace) is not dict:
            return
        for key, value in list(namespace.items()):
            kind = type(value)
            if kind is types.FunctionType or kind is functools.partial:
                check(f"{modname}.{key}", value)
            elif classes and issubclass(kind, type) and vars(value).get("__module__") == modname:
                scan_class(f"{modname}.{key}", value)

    for modname, module in list(sys.modules.items()):
        if issubclass(type(module), types.ModuleType):
            path = vars(module).get("__file__")
            if isinstance(path, str) and path.startswith("/") and not path.startswith(trusted):
                out.append(f"module {modname} loaded from {path}")
        if module is not None and type(module) is not types.ModuleType:
            check(f"sys.modules[{modname!r}]", type(module))
    names = {"builtins", "importlib", "sys"} | {n for n in sys.modules if n.split(".")[0] == "course_utils"}
    if full:
        names |= set(sys.modules)
    elif ip is not None:
        for value in list(ip.user_ns.values()):
            kind = type(value)
            if kind is types.ModuleType:
                names.add(value.__name__)
            elif kind is types.FunctionType:
                names.add(str(value.__module__))
            elif issubclass(kind, type):
                names.add(str(vars(value).get("__module__")))
                if ok(value):
                    scan_class(f"{vars(value).get('__module__')}.{value.__qualname__}", value)
            else:
                names.add(kind.__module__)
                for cls in kind.__mro__[:-1]:
                    if ok(cls):
                        scan_class(f"{cls.__module__}.{cls.__qualname__}", cls)
    for modname in sorted(n for n in names if n in sys.modules and n != "__main__"):
        module = sys.modules[modname]
        if str(getattr(module, "__file__", "") or "").startswith(trusted) or modname in ("builtins", "sys"):
            scan_module(modname, module, full or modname.split(".")[0] == "course_utils")
    return out
'''


def probe_expression(trusted_prefixes: list[str], full: bool = False) -> str:
    """A single Python expression that runs :data:`PROBE_SOURCE` in a private namespace and returns JSON.

    The quick probe (before each test cell) looks at the kernel's hooks, builtins, the grader's modules and the
    modules, functions, classes and objects the notebook's namespace refers to; ``full`` (once, at the end) looks
    at every imported module and every class defined in one.
    """
    trusted = sorted({p.rstrip("/") + "/" for p in trusted_prefixes} | {"/usr/lib/", "/usr/local/lib/"})
    return (f"(lambda g: (exec({PROBE_SOURCE!r}, g), __import__('json').dumps(g['probe']({trusted!r}, {full!r}))))"
            "({'__name__': 'course_probe'})[1]")
