"""How deep JSON nests, read without parsing it.

Python's json module recurses once per nesting level and raises RecursionError near 1000 levels (fewer
when called deep in a stack), while PostgreSQL's jsonb takes thousands. So a value nested deeper than
MAX_JSON_DEPTH is never parsed into a document here: dbt staging keeps it as a JSON string of its text
and flags it `json_too_deep:<column>` (dbt_project/macros/create_udfs.sql, same limit), and the
Python readers (validate, loader.serve.client) read such a text as that string instead of decoding it.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 512
JSON_STRING = re.compile(r'"(?:\\.|[^"\\])*"', re.DOTALL)
BRACKET = re.compile(r"[][{}]")


def nesting_depth(text: str) -> int:
    """How deep the brackets of `text` nest outside its JSON strings: [ and { open, ] and } close (for
    JSON, the nesting depth of its arrays and objects: '1' 0, '[]' 1, '{"a": [1]}' 2)."""
    depth = deepest = 0
    for bracket in BRACKET.findall(JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def too_deep(text: str) -> bool:
    """Whether `text` nests deeper than MAX_JSON_DEPTH (only texts with that many opening brackets are scanned)."""
    return (len(text) > MAX_JSON_DEPTH and text.count("[") + text.count("{") > MAX_JSON_DEPTH
            and nesting_depth(text) > MAX_JSON_DEPTH)


def loads_within_depth(data: str | bytes) -> Any:
    """json.loads, except that JSON nested deeper than MAX_JSON_DEPTH is returned as its text, as staging
    keeps it, instead of raising RecursionError."""
    text = bytes(data).decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
    return text if too_deep(text) else json.loads(text)
