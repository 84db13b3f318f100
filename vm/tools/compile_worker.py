"""Compile a bundle's scripts with *this* interpreter; run by ``edgevm pack`` under every target
CPython (``python3.X -I -S compile_worker.py``). Standard library only.

stdin:  {"modules": {"<module>": {"file": "<relative path>", "source": "<text>", "guarded": ["<attr>", ...]}},
         "guards": {"load": "<builtin name>", "store": "<builtin name>"}}
stdout: {"python": "3.12.1", "magic": "<hex>", "code": {"<module>": "<base64 marshal>"},
         "errors": ["file:line:col: message", ...]}
"""
import ast
import base64
import importlib.util
import json
import marshal
import platform
import sys


class GuardAttributes(ast.NodeTransformer):
    """Attribute accesses whose check needs the object (vm.policy.rules.ATTRIBUTE_GUARDS) become calls
    of the sandbox's guards: ``obj._x`` -> ``load(obj, "_x")``; ``obj._x = v`` -> ``assign(v, obj,
    "_x")`` (Python evaluates ``v`` first, then ``obj``, in both spellings); any other store,
    augmented store or delete -> ``store(obj)["_x"]``. Names are mangled as the compiler would
    (``self.__x`` in class ``C`` is ``_C__x``), since a string constant is not."""

    def __init__(self, names: set, guards: dict) -> None:
        self.names = names
        self.load = guards["load"]
        self.assign = guards["assign"]
        self.store = guards["store"]
        self.classes = []

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        # decorators, bases and keywords are evaluated in the enclosing scope
        for fld in ("decorator_list", "bases", "keywords"):
            setattr(node, fld, [self.visit(n) for n in getattr(node, fld)])
        self.classes.append(node.name)
        body = []
        for stmt in node.body:
            new = self.visit(stmt)
            body.extend(new if isinstance(new, list) else [new])
        node.body = body
        self.classes.pop()
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        (target,) = node.targets if len(node.targets) == 1 else (None,)
        if not isinstance(target, ast.Attribute) or target.attr not in self.names:
            return self.generic_visit(node)
        value, obj = self.visit(node.value), self.visit(target.value)
        key = ast.Constant(self._mangle(target.attr))
        call = ast.Call(ast.Name(self.assign, ast.Load()), [value, obj, key], [])
        new = ast.Expr(call)
        for sub in (new, call, call.func, key):
            ast.copy_location(sub, target if sub is key else node)
        return new

    def _mangle(self, name: str) -> str:
        owner = self.classes[-1].lstrip("_") if self.classes else ""
        if owner and name.startswith("__") and not name.endswith("__"):
            return f"_{owner}{name}"
        return name

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr not in self.names:
            return node
        key = ast.Constant(self._mangle(node.attr))
        if isinstance(node.ctx, ast.Load):
            new = ast.Call(ast.Name(self.load, ast.Load()), [node.value, key], [])
            made = [new, new.func, key]
        else:
            call = ast.Call(ast.Name(self.store, ast.Load()), [node.value], [])
            new = ast.Subscript(call, key, node.ctx)
            made = [new, call, call.func, key]
        for sub in made:
            ast.copy_location(sub, node)
        return new


def compile_module(module: dict, guards: dict):
    """The module's code object, with the guarded attribute names rewritten."""
    tree = ast.parse(module["source"], module["file"])
    if module.get("guarded"):
        tree = GuardAttributes(set(module["guarded"]), guards).visit(tree)
    return compile(tree, module["file"], "exec", dont_inherit=True, optimize=0)


def main() -> None:
    request = json.load(sys.stdin)
    code, errors = {}, []
    for name, module in sorted(request["modules"].items()):
        try:
            compiled = compile_module(module, request.get("guards", {}))
        except SyntaxError as exc:
            errors.append(f"{module['file']}:{exc.lineno or 0}:{exc.offset or 0}: syntax error: {exc.msg}")
            continue
        code[name] = base64.b64encode(marshal.dumps(compiled)).decode("ascii")
    json.dump({"python": platform.python_version(), "magic": importlib.util.MAGIC_NUMBER.hex(),
               "code": code, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
