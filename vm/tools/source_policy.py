"""Pack-time check of script sources against the sandbox policy (``vm.policy.rules``).

The same rules as the load-time bytecode check, on the AST, so an algorithm engineer sees
``features.py:42:8: reason`` before anything ships; a few rules only make sense in source (bare
``except:`` would swallow the runtime's timeout; calling ``eval`` or ``open`` can only fail in the
sandbox, so say so now).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from vm.policy import rules


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    col: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.reason}"


def _bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


class _Visitor(ast.NodeVisitor):
    def __init__(self, file: str, module: str, is_package: bool, bundle_modules: frozenset[str],
                 bound: set[str]) -> None:
        self.file = file
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.bundle_modules = bundle_modules
        self.bound = bound
        self.scopes: list[str] = ["module"]
        self.out: list[Violation] = []

    def fail(self, node: ast.AST, reason: str) -> None:
        self.out.append(Violation(self.file, getattr(node, "lineno", 0), getattr(node, "col_offset", 0) + 1, reason))

    # scopes ---------------------------------------------------------------------------------
    def _define(self, node: ast.AST, name: str) -> None:
        if self.scopes[-1] in ("module", "class"):
            problem = rules.global_store_problem(name)
            if problem is None and name in rules.COMPILER_WRITTEN and name != "__match_args__":
                problem = f"'{name}' may only be set by the compiler"
            if problem:
                self.fail(node, problem)
        elif name == "super" or name in rules.ATTRIBUTE_GUARDS.values():
            self.fail(node, f"name '{name}' cannot be rebound")

    def _type_params(self, node: ast.AST) -> None:
        # PEP 695 (3.12+): built by intrinsics that trust their operands; the bytecode check refuses them
        if getattr(node, "type_params", None):
            self.fail(node, "type parameters (PEP 695) are not allowed")

    def visit_TypeAlias(self, node: ast.AST) -> None:
        self.fail(node, "'type' aliases (PEP 695) are not allowed")

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not isinstance(node, ast.Lambda):
            self._type_params(node)
            self._define(node, node.name)
            for deco in node.decorator_list:
                self.visit(deco)
            if node.returns:
                self.visit(node.returns)
        self.visit(node.args)
        self.scopes.append("function")
        for stmt in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(stmt)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._type_params(node)
        self._define(node, node.name)
        for deco in node.decorator_list:
            self.visit(deco)
        for base in node.bases:
            self.visit(base)
        for kw in node.keywords:
            if kw.arg == "metaclass":
                self.fail(kw.value, "metaclasses are not allowed")
            self.visit(kw.value)
        self.scopes.append("class")
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__match_args__" for t in stmt.targets):
                self._match_args(stmt.value)
            self.visit(stmt)
        self.scopes.pop()

    def _match_args(self, value: ast.expr) -> None:
        if not (isinstance(value, ast.Tuple) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts)):
            self.fail(value, "__match_args__ must be a literal tuple of strings")
            return
        for e in value.elts:
            problem = rules.named_attribute_problem(e.value)
            if problem:
                self.fail(e, f"__match_args__: {problem}")

    # names and attributes -------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            problem = rules.global_read_problem(node.id)
            if node.id == "__annotations__":
                problem = "'__annotations__' cannot be used directly"
            if problem:
                self.fail(node, problem)
            elif node.id in rules.FORBIDDEN_BUILTINS and node.id not in self.bound:
                self.fail(node, f"'{node.id}' is not available in the sandbox")
        else:
            self._define(node, node.id)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            problem = rules.global_store_problem(name)
            if problem:
                self.fail(node, problem)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        store = not isinstance(node.ctx, ast.Load)
        # Names left to the run-time guards are compiled into guard calls (see guarded_attributes).
        problem = None if rules.guarded_attribute(node.attr, store=store) else \
            rules.attribute_problem(node.attr, store=store)
        if problem is None and node.attr in rules.FORMAT_METHODS and isinstance(node.value, ast.Constant):
            problem = rules.format_string_problem(node.value.value)  # known now: said at pack time
        if problem is None and node.attr == "__setattr__" and not (isinstance(node.value, ast.Name)
                                                                    and node.value.id == "object"):
            problem = rules.attribute_problem(node.attr)  # only object.__setattr__ is left to run time
        if problem:
            self.fail(node, problem)
        self.visit(node.value)

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        for attr in node.kwd_attrs:
            problem = rules.named_attribute_problem(attr)
            if problem:
                self.fail(node, f"class pattern: {problem}")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is None:
            self.fail(node, "bare 'except:' would swallow the runtime's timeout; use 'except Exception:'")
        if node.name:
            self._define(node, node.name)
        self.generic_visit(node)

    # imports --------------------------------------------------------------------------------
    def _absolute(self, node: ast.ImportFrom) -> str | None:
        if node.level == 0:
            return node.module or ""
        bits = self.package.split(".") if self.package else []
        if node.level - 1 > len(bits) or not self.package:
            self.fail(node, "relative import beyond the bundle's top-level package")
            return None
        base = ".".join(bits[: len(bits) - (node.level - 1)])
        return f"{base}.{node.module}" if node.module else base

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            problem = rules.import_problem(alias.name, self.bundle_modules)
            if problem:
                self.fail(node, problem)
            if alias.asname:
                self._define(node, alias.asname)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = self._absolute(node)
        if module is None:
            return
        if module not in self.bundle_modules:
            problem = rules.import_problem(module, self.bundle_modules)
            if problem:
                self.fail(node, problem)
        for alias in node.names:
            problem = rules.import_from_problem(alias.name)
            if problem:
                self.fail(node, problem)
            self._define(node, alias.asname or alias.name)


def guarded_attributes(tree: ast.AST) -> list[str]:
    """The attribute names in ``tree`` that the compiler turns into calls of the sandbox's run-time
    guards (``rules.ATTRIBUTE_GUARDS``)."""
    return sorted({node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                   and rules.guarded_attribute(node.attr, store=not isinstance(node.ctx, ast.Load))})


def check_source(source: str, *, file: str, module: str, is_package: bool,
                 bundle_modules: frozenset[str]) -> list[Violation]:
    """Every policy violation in one script (a syntax error is one violation)."""
    try:
        tree = ast.parse(source, filename=file)
    except SyntaxError as exc:
        return [Violation(file, exc.lineno or 0, exc.offset or 0, f"syntax error: {exc.msg}")]
    visitor = _Visitor(file, module, is_package, bundle_modules, _bound_names(tree))
    visitor.visit(tree)
    return sorted(visitor.out, key=lambda v: (v.line, v.col))
