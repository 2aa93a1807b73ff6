"""The package's shape (README, "How the code is laid out"): stages as packages in the data's order, no
module importing from a layer above its own, and no import cycles. Imports are read from the source
(every `import`, including those inside functions and under TYPE_CHECKING), never executed."""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "loader"

# Lower layers first. A module may import its own layer and the ones before it, never a later one.
LAYERS = [
    {"loader", "loader.__init__", "loader.database", "loader.exit_codes", "loader.parallel", "loader.json_depth",
     "loader.secret_scrub", "loader.relations"},
    {"loader.ledger"},
    {"loader.sources"},
    {"loader.backup"},
    {"loader.load"},
    {"loader.transform"},
    {"loader.verify"},
    {"loader.operate"},
    {"loader.apps"},
    {"loader.serve"},
    {"loader.fixtures"},
    {"loader.pipeline"},
    {"loader.cli", "loader.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if any(module == member or module.startswith(member + ".") for member in members if member != "loader"):
            return index
    if module == "loader":
        return 0
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to the README's tree)")


def imports_of(path: Path) -> set[str]:
    """The loader modules `path` imports (a `from loader.x import y` counts as loader.x.y when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: a relative import; write loader.x"
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("loader")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("loader"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_the_stage_packages_are_there_in_the_data_order():
    packages = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))
    stages = [member.removeprefix("loader.") for layer in LAYERS[2:11] for member in layer]
    assert sorted(stages) == sorted(set(packages) - {"cli"})


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_its_own(module):
    own = layer_of(module)
    above = sorted(name for name in imports_of(MODULES[module]) if layer_of(name) > own)
    assert above == [], f"{module} (layer {own}) imports {above}"


# The read path a service runs (MemoryClient and its caches) stays importable without the pipeline: it
# may import the shared modules of the first layer, the ledger and itself, nothing of the stages.
@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("loader.serve")))
def test_the_read_path_imports_no_stage(module):
    outside = sorted(name for name in imports_of(MODULES[module])
                     if not name.startswith("loader.serve") and layer_of(name) > 1)
    assert outside == [], f"{module} imports {outside}"


def test_no_import_cycles():
    graph = {module: {name for name in imports_of(path) if name in MODULES and name != module}
             for module, path in MODULES.items()}
    visiting, done, cycles = set(), set(), []

    def visit(module: str, trail: list[str]) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(trail[trail.index(module):] + [module])
            return
        visiting.add(module)
        for name in sorted(graph[module]):
            visit(name, [*trail, module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def test_the_dbt_project_names_the_memory_kinds_and_raw_tables_the_loader_does():
    """One list per side of the raw contract (loader/load/raw_contract.py; the dbt macros memory_kinds and
    memory_raw_tables): the two must agree."""
    from loader.load.raw_contract import MEMORY_KINDS, RAW_MEMORY_TABLES

    macros = (PACKAGE.parent / "dbt_project" / "macros" / "source_columns.sql").read_text()

    def returned_by(macro: str) -> str:
        body = macros.split(f"{{% macro {macro}() -%}}", 1)[1]
        return body.split("{%- endmacro %}", 1)[0]

    assert set(re.findall(r"'([a-z0-9-]+)'", returned_by("memory_kinds"))) == MEMORY_KINDS
    assert re.findall(r"\('(\w+)', '(\w+)'\)", returned_by("memory_raw_tables")) == list(RAW_MEMORY_TABLES)


def test_the_constants_python_and_the_dbt_project_share_agree():
    """Written on both sides (the read path imports nothing of the dbt project): the namespace that goes to
    performance_metrics (the client reads it there) and the JSON nesting limit (validate's model of the parse)."""
    from loader.json_depth import MAX_JSON_DEPTH
    from loader.serve.client import PERFORMANCE_METRICS_NAMESPACE

    project = (PACKAGE.parent / "dbt_project.yml").read_text()
    assert re.search(r"^\s*performance_metrics_namespace:\s*(\S+)\s*$", project, re.M).group(1) \
        == PERFORMANCE_METRICS_NAMESPACE
    udfs = (PACKAGE.parent / "dbt_project" / "macros" / "create_udfs.sql").read_text()
    assert int(re.search(r"set json_max_depth = (\d+)", udfs).group(1)) == MAX_JSON_DEPTH
    # the near cache's notifications (its triggers come from the dbt project or install_notify_triggers)
    from loader.serve.near_cache import MAX_NOTIFY_PAYLOAD_BYTES, NOTIFY_CHANNEL, NOTIFY_ROWS_PER_TRANSACTION

    for name, value in (("notify_channel", NOTIFY_CHANNEL), ("notify_rows_per_transaction", NOTIFY_ROWS_PER_TRANSACTION),
                        ("notify_max_payload_bytes", MAX_NOTIFY_PAYLOAD_BYTES)):
        assert re.search(rf"^\s*{name}:\s*(\S+)\s*$", project, re.M).group(1) == str(value), name
    # the epoch rule's magnitudes (validate's model of the timestamps)
    from loader.verify.rules import MILLISECONDS_FROM, UNUSABLE_FROM

    timestamps = (PACKAGE.parent / "dbt_project" / "macros" / "timestamps.sql").read_text()
    for name, value in (("epoch_milliseconds_from", MILLISECONDS_FROM), ("epoch_unusable_from", UNUSABLE_FROM)):
        assert Decimal(re.search(r"macro " + name + r"\(\) %}([^{]+){% endmacro", timestamps).group(1)) == value


def test_every_test_tests_readme_names_exists():
    """tests/README.md maps promises to tests as `file.py::test` (then `::test` for the same file): a
    renamed test must not leave a promise pointing at nothing."""
    tests = PACKAGE.parent / "tests"
    defined: dict[str, set[str]] = {}
    for path in tests.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        defined[path.name] = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    missing, current, named = [], None, 0
    for file, test in re.findall(r"`(test_\w+\.py)?::(\w+)`", (tests / "README.md").read_text()):
        current = file or current
        named += 1
        if test not in defined.get(current, ()):
            missing.append(f"{current}::{test}")
    assert named > 50 and missing == []
