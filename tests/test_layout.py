"""The package map's import rules (README "Where the code lives"), read from the code itself.

Every ``import`` counts wherever it stands: at the top, inside a function (a lazy import that
hides a circle is still one) or under ``TYPE_CHECKING``. The rules:

* the library (``blacklist/``) never imports ``node`` or ``grpc``; the client-side package
  ``blacklist/edge/`` may import ``grpc`` and the generated stubs ``node.gen``, nothing else
  of ``node``;
* the server side (``node``'s process modules, ``node/grpc/``, ``node/workers/``) imports
  nothing of the local federation and demo (``node/local/``) or of the CLI (``node/cli/``),
  by its source and by what importing it really loads;
* no import circles among the product modules;
* product code never imports ``tests`` or ``bench``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("blacklist", "node")
GENERATED = "node.gen"
EDGE = "blacklist.edge"
# What the server never imports: the local federation and demo, the CLI, and the national
# simulator (issue #18), which runs the library's sync core in one process, never in a node.
LOCAL_SIDE = ("node.local", "node.cli", "blacklist.sim")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def modules(root: Path, packages: Iterable[str] = PRODUCT) -> dict[str, Path]:
    """Every module of ``packages`` under ``root`` by dotted name (generated stubs left out)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if not _within(name, GENERATED):
                found[name] = path
    return found


def imported(name: str, path: Path, *, members: bool = True) -> set[str]:
    """Every module ``path`` names in an import statement anywhere in it, relative imports
    resolved; with ``members``, ``from a import b`` names ``a.b`` too (b may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            if members:
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def graph(found: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module → the product modules it imports."""
    return {
        name: {m for m in imported(name, path) if m in found and m != name}
        for name, path in found.items()
    }


def circles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, targets = work[-1]
            w = next(targets, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def library_breaches(found: Mapping[str, Path]) -> list[str]:
    out = []
    for name, path in found.items():
        if not _within(name, "blacklist"):
            continue
        for target in sorted(imported(name, path, members=False)):
            top = target.split(".")[0]
            if _within(name, EDGE):
                bad = top == "node" and not _within(target, GENERATED)
            else:
                bad = top == "node" or top == "grpc" or top.startswith("grpc_")
            if bad:
                out.append(f"{name} imports {target}")
    return out


def server_side(name: str) -> bool:
    """``node``'s modules but the CLI, the local federation and the entry point that runs
    the CLI (``python -m node``)."""
    return (
        _within(name, "node")
        and name != "node.__main__"
        and not any(_within(name, p) for p in LOCAL_SIDE)
    )


def server_breaches(found: Mapping[str, Path]) -> list[str]:
    return [
        f"{name} imports {target}"
        for name, path in found.items()
        if server_side(name)
        for target in sorted(imported(name, path, members=False))
        if any(_within(target, p) for p in LOCAL_SIDE)
    ]


# -- the rules, on this checkout -------------------------------------------------------------


@pytest.fixture(scope="module")
def product() -> dict[str, Path]:
    return modules(ROOT)


def test_the_library_never_imports_node_or_grpc(product: dict[str, Path]) -> None:
    assert library_breaches(product) == []


def test_the_server_side_imports_nothing_of_the_demo_the_federation_or_the_cli(
    product: dict[str, Path],
) -> None:
    assert server_breaches(product) == []


def test_importing_the_server_and_a_worker_loads_nothing_of_the_local_side() -> None:
    """What ``python -m node run`` and a worker really load (any import the source scan
    could miss, e.g. through importlib, shows here)."""
    probe = (
        "import json, sys\n"
        "import node.server, node.workers.worker\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['node', 'local'], ['node', 'cli'], ['blacklist', 'sim']) "
        "or m.split('.')[0] in ('tests', 'bench'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_no_import_circles_among_product_modules(product: dict[str, Path]) -> None:
    assert circles(graph(product)) == []


def test_product_code_never_imports_tests_or_bench(product: dict[str, Path]) -> None:
    assert [
        f"{name} imports {target}"
        for name, path in product.items()
        for target in sorted(imported(name, path, members=False))
        if target.split(".")[0] in ("tests", "bench")
    ] == []


# -- the checks themselves, on a made-up tree: each can fail -------------------------------


def _tree(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modules(root)


def test_a_circle_closed_by_a_lazy_or_type_checking_import_is_found(tmp_path: Path) -> None:
    found = _tree(
        tmp_path,
        {
            "node/__init__.py": "",
            "node/a.py": "from node import b\n",
            "node/b.py": "def f():\n    from node.c import g\n",
            "node/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import node.a\n",
            "node/d.py": "from . import a\n",  # into the circle, not part of it
            "blacklist/__init__.py": "",
        },
    )
    assert circles(graph(found)) == [["node.a", "node.b", "node.c"]]


def test_relative_imports_resolve(tmp_path: Path) -> None:
    found = _tree(
        tmp_path,
        {
            "node/__init__.py": "",
            "node/grpc/__init__.py": "from .x import y\n",
            "node/grpc/x.py": "from ..local import demo\nfrom . import z\n",
            "node/grpc/z.py": "",
            "node/local/__init__.py": "",
            "node/local/demo.py": "",
            "blacklist/__init__.py": "",
        },
    )
    assert graph(found)["node.grpc"] == {"node.grpc.x"}
    # ``from . import z`` imports the package, then its module z
    assert graph(found)["node.grpc.x"] == {
        "node.local",
        "node.local.demo",
        "node.grpc",
        "node.grpc.z",
    }


def test_each_breach_is_named(tmp_path: Path) -> None:
    found = _tree(
        tmp_path,
        {
            "blacklist/__init__.py": "",
            "blacklist/store.py": "def f():\n    import grpc\n",
            "blacklist/audit.py": "from node.metrics import M\n",
            "blacklist/edge/__init__.py": "",
            "blacklist/edge/client.py": "import grpc\nfrom node.gen.v1 import x_pb2\n",
            "blacklist/edge/bad.py": "from node.config import NodeConfig\n",
            "node/__init__.py": "",
            "node/server.py": "def demo():\n    from node.local.demo import run\n",
            "node/cli/__init__.py": "",
            "node/cli/main.py": "from node.local import up\n",  # the CLI may
            "node/local/__init__.py": "",
            "node/local/up.py": "",
            "node/local/demo.py": "",
        },
    )
    assert library_breaches(found) == [
        "blacklist.audit imports node.metrics",
        "blacklist.edge.bad imports node.config",
        "blacklist.store imports grpc",
    ]
    assert server_breaches(found) == ["node.server imports node.local.demo"]
