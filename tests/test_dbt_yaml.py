"""The dbt project's YAML layout (jaffle-shop's): one file beside each model, named like it, holding that
model and its unit tests; sources in staging/_sources.yml, exposures in models/_exposures.yml. Read as
YAML here, never through dbt."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

MODELS = Path(__file__).resolve().parents[1] / "dbt_project" / "models"
SHARED = {MODELS / "staging" / "_sources.yml", MODELS / "_exposures.yml"}
MODEL_YAML = sorted(path for path in MODELS.rglob("*.yml") if path not in SHARED)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", MODEL_YAML, ids=lambda path: path.stem)
def test_a_yaml_file_holds_the_model_beside_it_and_its_unit_tests_only(path):
    document = load(path)
    assert document["version"] == 2
    assert set(document) <= {"version", "models", "unit_tests"}, path
    assert [model["name"] for model in document["models"]] == [path.stem]
    assert path.with_suffix(".sql").is_file(), path
    assert {test["model"] for test in document.get("unit_tests", [])} <= {path.stem}


@pytest.mark.parametrize("path", sorted(MODELS.rglob("*.sql")), ids=lambda path: path.stem)
def test_every_model_has_its_yaml_beside_it(path):
    assert path.with_suffix(".yml").is_file(), f"{path.relative_to(MODELS)} has no {path.stem}.yml beside it"


def test_the_memory_staging_models_declare_one_shape():
    """The same columns, each described once (staging/_memory_shape.md)."""
    staging = MODELS / "staging"
    v2, v3, extended = (load(staging / f"{name}.yml")["models"][0]["columns"] for name in (
        "stg_claude_flow_v2__memory_entries", "stg_claude_flow_v3__memory_entries", "stg_extended_memory__memory_store"))
    assert v2 == v3 == extended


def test_the_marts_describe_flags_alike():
    """One description of `flags` (marts/_marts.md)."""
    descriptions = [next(column["description"] for column in load(MODELS / "marts" / f"{mart}.yml")["models"][0]["columns"]
                         if column["name"] == "flags")
                    for mart in ("unified_memory", "performance_metrics", "unified_memory_history")]
    assert descriptions[0] == descriptions[1] == descriptions[2]
