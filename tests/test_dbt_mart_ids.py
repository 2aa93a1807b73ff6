"""The marts' ids, which int_memory_ranked.mart_id computes within the ranking's one sort: unified_memory
numbers its rows by (namespace, key), performance_metrics by key, both from 1 without gaps."""

from __future__ import annotations

import pytest

from conftest import fetch


@pytest.mark.parametrize(("mart", "order"), [
    ("unified_memory", "namespace, key"),
    ("performance_metrics", "key"),
])
def test_mart_ids_number_the_rows_in_their_documented_order(consolidated, mart, order):
    rows = fetch(consolidated, f"SELECT id, row_number() OVER (ORDER BY {order}) FROM {mart}")
    assert rows, f"the sample gives {mart} no rows"
    assert [id_ for id_, _ in rows] == [number for _, number in rows]
