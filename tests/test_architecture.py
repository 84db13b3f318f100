"""The layout is the architecture (docs/architecture.md): imports follow the table there, packages
form no circle, vm/'s top level stays small, and a device never imports the build-server tools."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
# The one import allowed beyond the table: the CLI's server commands (pack) use the tools.
EXCEPTIONS = {("vm.host.cli", "vm.tools")}


def allowed_imports() -> dict[str, set[str]]:
    """package -> the packages it may import, from the table in docs/architecture.md."""
    text = DOC.read_text()
    section = text.split("## What each package may import", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return table


def package_of(module: str, packages: set[str]) -> str | None:
    """The table's package ``module`` belongs to (the longest matching prefix), or None."""
    best = None
    for p in packages:
        if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best)):
            best = p
    return best


def modules() -> dict[str, Path]:
    out = {}
    for top in ("vm", "stdlib_slim"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at any level of nesting (lazy imports count)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from vm import wire` imports vm.wire
    return found


def test_every_package_imports_only_what_the_table_allows() -> None:
    table = allowed_imports()
    packages = set(table)
    assert {"vm.bundle", "vm.policy", "vm.sandbox", "vm.execution", "vm.ml", "vm.host", "vm.tools"} <= packages
    mods = modules()
    violations = []
    for name, path in sorted(mods.items()):
        src = package_of(name, packages)
        if name == "vm":
            continue  # the root: the version, and the lazy Runtime export
        assert src is not None, f"{name} belongs to no package of docs/architecture.md's table"
        for target in imports_of(name, path):
            dst = package_of(target, packages)
            if dst is None or dst == src or target == "vm":
                continue
            if dst not in table[src] and not any(name.startswith(m) and dst == p for m, p in EXCEPTIONS):
                violations.append(f"{name} imports {target} ({src} may not import {dst})")
    assert not violations, "\n".join(violations)


def test_packages_form_no_circle() -> None:
    table = allowed_imports()
    packages = set(table)
    graph: dict[str, set[str]] = {p: set() for p in packages}
    for name, path in modules().items():
        src = package_of(name, packages)
        if src is None:
            continue
        for target in imports_of(name, path):
            dst = package_of(target, packages)
            if dst is not None and dst != src:
                graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(p: str, trail: tuple[str, ...]) -> None:
        if state.get(p) == 2:
            return
        assert state.get(p) != 1, f"import circle: {' -> '.join((*trail, p))}"
        state[p] = 1
        for q in sorted(graph[p]):
            visit(q, (*trail, p))
        state[p] = 2

    for p in sorted(graph):
        visit(p, ())


def test_vm_top_level_is_small() -> None:
    top = sorted(p.name for p in (ROOT / "vm").glob("*.py"))
    assert top == ["__init__.py", "errors.py", "wire.py"]


def test_owners_named_in_the_data_flow_exist() -> None:
    named = set(re.findall(r"`((?:vm|native|stdlib_slim)/[\w/.]*)`", DOC.read_text()))
    missing = sorted(p for p in named if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


def test_running_a_bundle_never_imports_the_tools(make_bundle, keys_dir: Path) -> None:
    bundle = make_bundle({"features.py": "import math\n\ndef entry(inputs):\n    return math.sqrt(inputs['x'])\n"})
    code = (
        "import json, sys\n"
        "from vm import Runtime\n"
        f"with Runtime({{'keys': {str(keys_dir)!r}}}) as rt:\n"
        f"    rt.load({str(bundle)!r})\n"
        "    assert rt.infer('s', 'b', {'x': 4.0}) == 2.0\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('vm.'))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert "vm.host.runtime" in loaded
    assert not [m for m in loaded if m.startswith("vm.tools") or m == "vm.host.cli"], loaded
