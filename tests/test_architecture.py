"""The separation principle in the imports: who may import what, and the public API of each package.

Whoever sees identifiers does not see content: the statistics side never imports code
that reads or makes encodings, the linkage service and the matcher never import the
encoder (or clkhash), and nothing of the linkage side imports the statistics side. The
rules are checked on the source (every runtime import, followed transitively) and in a
fresh interpreter (what importing a module really loads).
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("linkage", "stats", "server", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


@cache
def runtime_imports() -> dict[str, frozenset[str]]:
    """Every module's imports that run (``if TYPE_CHECKING:`` blocks left out), as module names."""
    modules = _modules()
    out = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        found = set()
        for node in ast.walk(tree):
            if _in_type_checking(node, parents):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                # `from package import submodule` imports the submodule.
                found.update(
                    f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules
                )
        # Importing a module runs its packages' __init__ first.
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
        out[name] = frozenset(found)
    return out


def reachable(start: str) -> set[str]:
    """Every module (of the project or not) that importing ``start`` imports, transitively."""
    graph = runtime_imports()
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        for imported in graph.get(name, ()):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


RULES = [
    # (modules the rule applies to, modules they must never reach, why)
    (
        ("stats",),
        (
            "linkage.agency",
            "linkage.matching",
            "linkage.service",
            "linkage.evaluation",
            "server",
            "cli",
            "clkhash",
            "anonlink",
        ),
        "the statistics side never sees encodings, nor the service's or the encoder's code",
    ),
    (
        ("linkage.service", "linkage.matching"),
        ("linkage.agency", "linkage.evaluation", "stats", "server", "cli", "clkhash"),
        "the linkage service compares encodings; it never encodes, and reaches statistics only through an interface",
    ),
    (
        ("linkage",),
        ("stats", "server", "cli"),
        "the linkage side never imports the statistics side or the shells: no cycle between the two sides",
    ),
]


@pytest.mark.parametrize(("sources", "forbidden", "why"), RULES, ids=[rule[0][0] for rule in RULES])
def test_import_rules(sources, forbidden, why):
    broken = {
        name: sorted(target for target in reachable(name) if _under(target, forbidden))
        for name in runtime_imports()
        if _under(name, sources)
    }
    broken = {name: targets for name, targets in broken.items() if targets}
    assert not broken, f"{why}: {broken}"


@pytest.mark.parametrize(
    ("library", "owner"), [("clkhash", "linkage.agency.hashing"), ("anonlink", "linkage.matching.anonlink_bridge")]
)
def test_each_dependency_behind_one_module(library, owner):
    importers = sorted(
        name for name, imports in runtime_imports().items() if any(_under(i, (library,)) for i in imports)
    )
    assert importers == [owner]


def _loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "statement",
    [
        "import stats.dp, stats.answering, stats.report, stats.api.queries, stats.api.attributes",
        "import linkage.service.api.results, linkage.service.api.uploads, linkage.service.worker",
        "import server.app",
    ],
)
def test_the_service_and_statistics_never_load_clkhash(statement):
    loaded = _loaded_after(statement)
    assert not [name for name in loaded if _under(name, ("clkhash", "linkage.agency"))]


def test_importing_errors_loads_no_role():
    loaded = _loaded_after("import linkage.errors")
    assert not [
        name for name in loaded if _under(name, ("numpy", "clkhash", "anonlink", "linkage.agency", "linkage.matching"))
    ]


LAZY_PACKAGES = ["linkage", "linkage.agency", "linkage.matching", "linkage.service", "linkage.evaluation", "stats"]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_public_api_is_what_all_says(package):
    module = importlib.import_module(package)
    assert sorted(dir(module)) == sorted(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(value, "__name__", name) == name or not callable(value)
    with pytest.raises(AttributeError, match="no attribute 'not_public'"):
        module.not_public  # noqa: B018 - the attribute access is the test


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_importing_a_package_imports_none_of_its_modules(package):
    loaded = _loaded_after(f"import {package}")
    own = [name for name in loaded if name.startswith(package + ".") and name != "linkage._lazy"]
    assert own == []
