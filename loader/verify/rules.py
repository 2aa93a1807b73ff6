"""The documented rules, written again in Python, independently of dbt and of the loader: what raw holds
for a SQLite value (and a secret column), how a memory value becomes jsonb with a data_type, how times
become timestamps, and what a memory row becomes in each mart. The spot check compares PostgreSQL with
these; a rule that changes in dbt_project/macros must change here too."""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from loader.load.secret_policy import DEFAULT_POLICY, SecretPolicy

SPACE_CHARACTERS = " \t\n\r\f\v"  # [[:space:]] in PostgreSQL regular expressions
SPACE = f"[{SPACE_CHARACTERS}]"
NUMERIC_TEXT = re.compile(rf"{SPACE}*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{{1,3}})?{SPACE}*")
INTEGER_TEXT = re.compile(rf"{SPACE}*[+-]?[0-9]{{1,10}}(\.0*)?{SPACE}*")
TIMESTAMP_TEXT = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12][0-9]|3[01])[ T]"
    r"(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9]):(?P<second>[0-5][0-9])(?P<fraction>\.[0-9]{1,9})?"
    r"(?P<zone>Z|(?P<sign>[+-])(?P<zone_hours>[01][0-9]|2[0-3]):?(?P<zone_minutes>[0-5][0-9])?)?")
MILLISECONDS_FROM = Decimal("1e11")  # |epoch| >= 1e11 is milliseconds (1e11 s would be the year 5138)
UNUSABLE_FROM = Decimal("1e14")
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
POSTGRES_EPOCH = 946684800  # 2000-01-01 in Unix seconds: PostgreSQL rounds relative to it
INT4_MIN, INT4_MAX = -2**31, 2**31 - 1
NUMERIC_MAX_WEIGHT, NUMERIC_MAX_SCALE = 131071, 16383


def try_numeric(text: str | None) -> Decimal | None:
    if text is None or len(text.encode()) > 1000 or not NUMERIC_TEXT.fullmatch(text):
        return None
    return Decimal(text.strip(SPACE_CHARACTERS))


def try_int(text: str | None) -> int | None:
    if text is None or not INTEGER_TEXT.fullmatch(text):
        return None
    number = Decimal(text.strip(SPACE_CHARACTERS))
    return int(number) if INT4_MIN <= number <= INT4_MAX else None


def seconds_from_micros(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


def epoch_timestamp(text: str | None) -> Decimal | None:
    """Epoch seconds or, by magnitude, milliseconds -> epoch seconds as PostgreSQL's to_timestamp keeps
    them (double precision arithmetic, rounded to the microsecond)."""
    number = try_numeric(text)
    if number is None or abs(number) >= UNUSABLE_FROM:
        return None
    seconds = float(number) / 1000 if abs(number) >= MILLISECONDS_FROM else float(number)
    return seconds_from_micros(round((seconds - POSTGRES_EPOCH) * 1_000_000) + POSTGRES_EPOCH * 1_000_000)


def text_timestamp(text: str | None) -> Decimal | None:
    """`YYYY-MM-DD[ T]HH:MM:SS[.fff…][Z|±HH[:MM]]` (naive = UTC) -> epoch seconds; anything else None."""
    match = TIMESTAMP_TEXT.fullmatch(text) if text is not None else None
    if match is None or match["year"] == "0000":
        return None
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    if day > calendar.monthrange(year, month)[1]:
        return None
    whole_seconds = calendar.timegm((year, month, day, int(match["hour"]), int(match["minute"]),
                                     int(match["second"])))
    fraction = round(float(match["fraction"]) * 1_000_000) if match["fraction"] else 0
    return seconds_from_micros((whole_seconds - zone_offset_seconds(match)) * 1_000_000 + fraction)


def zone_offset_seconds(match: re.Match) -> int:
    if match["sign"] is None:
        return 0
    offset = int(match["zone_hours"]) * 3600 + int(match["zone_minutes"] or 0) * 60
    return offset if match["sign"] == "+" else -offset


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str):
    """JSON text -> Python, as PostgreSQL's jsonb accepts it (numbers as Decimal); ValueError otherwise."""
    try:
        value = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=reject_constant)
    except RecursionError as error:
        raise ValueError("nested too deeply") from error
    if not jsonb_accepts(value):
        raise ValueError("not representable as jsonb")
    return value


def jsonb_accepts(value) -> bool:
    """jsonb rejects \\u0000, lone UTF-16 surrogates and numbers beyond numeric's range."""
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, Decimal):
        return value.adjusted() <= NUMERIC_MAX_WEIGHT and -value.as_tuple().exponent <= NUMERIC_MAX_SCALE
    if isinstance(value, list):
        return all(jsonb_accepts(item) for item in value)
    if isinstance(value, dict):
        return all(jsonb_accepts(key) and jsonb_accepts(item) for key, item in value.items())
    return True


def decode_compressed(text: str):
    """`__compressed__` + base64 of UTF-8 JSON -> that JSON; ValueError otherwise."""
    payload = re.sub("[ \t\n\r]", "", text[len("__compressed__"):])  # PostgreSQL's decode skips these
    try:
        decoded = base64.b64decode(payload, validate=True).decode("utf-8")
    except ValueError as error:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError("not a compressed JSON document") from error
    return parse_json(decoded)


def normalized_value(raw: str | None, storage_type: str | None) -> tuple[object, str]:
    """(value, data_type) by the documented rule (dbt_project/macros/memory_values.sql): NULL -> JSON
    null; pickle -> the base64 text; __compressed__ + base64 JSON -> decoded; JSON text -> that JSON;
    JSON Python accepts but jsonb rejects (NaN, Infinity, \\u0000, ...) -> the text, unsupported_json;
    anything else -> the text."""
    if raw is None:
        return None, "json"
    if isinstance(raw, Binary):
        return str(raw), "binary"
    if storage_type == "pickle":
        return raw, "pickle"
    if raw.startswith("__compressed__"):
        try:
            return decode_compressed(raw), "json"
        except ValueError:
            return raw, "text"
    try:
        return parse_json(raw), "json"
    except ValueError:
        return raw, "unsupported_json" if python_accepts_json(raw) else "text"


def python_accepts_json(text: str) -> bool:
    """Whether Python's json module parses the text (it accepts NaN, Infinity, \\u0000, lone surrogates)."""
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def same(expected, actual) -> bool:
    """Strict JSON-like equality: numbers by value, but never a boolean for a number or a string for either."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, Decimal)) and isinstance(actual, (int, Decimal)):
        return expected == actual
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(same, expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    if isinstance(expected, str) and isinstance(actual, str):  # Binary is a str
        return expected == actual
    return type(expected) is type(actual) and expected == actual


class Binary(str):
    """A value raw holds as `\\x` + lowercase hex of its exact bytes (loader/raw_contract.py)."""

    @property
    def original(self) -> bytes:
        return bytes.fromhex(self[2:])


def loaded_value(storage_class: bytes | None, text: bytes | None) -> str | None:
    """A SQLite value as raw holds it: its text (SQLite's text of a number), or Binary for a BLOB,
    TEXT that is not valid UTF-8 or TEXT containing NUL."""
    if text is None:
        return None
    if storage_class != b"blob" and b"\x00" not in text:
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return Binary("\\x" + text.hex())


HMAC_SHAPE = re.compile("hmac-sha256:[0-9a-f]{64}")


def secret_action(policy: SecretPolicy | None, kind: str, table: str, column: str) -> str:
    if policy is not None:
        return policy.action(kind, table, column)
    return DEFAULT_POLICY.get(f"{kind}.{table}.{column}", "keep")


def expected_in_raw(text: str | None, action: str, key: bytes | None) -> str | re.Pattern | None:
    """What raw holds for a source value under its secret-policy action: the text (`keep`), NULL
    (`exclude`), or HMAC-SHA256 of its UTF-8 text (`hash`; only its shape when the key is unknown)."""
    if text is None or action == "exclude":
        return None
    if action == "keep":
        return text
    if key is None:
        return HMAC_SHAPE
    original = text.original if isinstance(text, Binary) else text.encode()
    return "hmac-sha256:" + hmac.new(key, original, hashlib.sha256).hexdigest()


def raw_matches(expected: str | re.Pattern | None, actual: str | None) -> bool:
    if isinstance(expected, re.Pattern):
        return actual is not None and expected.fullmatch(actual) is not None
    return actual == expected


@dataclass(frozen=True)
class MemoryLayout:
    """Where a memory kind keeps the fields of the shared memory shape, and how its times are written."""

    table: str
    columns: dict[str, str]  # field -> source column
    to_timestamp: Callable[[str | None], Decimal | None]
    default_namespace: str


MEMORY_LAYOUTS = {
    "claude-flow-v2": MemoryLayout("memory_entries", {
        "key": "key", "namespace": "namespace", "value": "value", "created_at": "created_at",
        "updated_at": "updated_at", "accessed_at": "accessed_at", "expires_at": "expires_at",
        "access_count": "access_count", "ttl": "ttl"}, epoch_timestamp, "default"),
    "claude-flow-v3": MemoryLayout("memory_entries", {
        "key": "key", "namespace": "namespace", "value": "content", "created_at": "created_at",
        "updated_at": "updated_at", "accessed_at": "last_accessed_at", "expires_at": "expires_at",
        "access_count": "access_count"}, epoch_timestamp, "default"),
    "extended-memory": MemoryLayout("memory_store", {
        "key": "key", "value": "value", "storage_type": "type", "created_at": "created_at",
        "updated_at": "updated_at", "accessed_at": "accessed_at", "access_count": "access_count"},
        text_timestamp, "extended-memory"),
}
MEMORY_FIELDS = ("key", "namespace", "value", "storage_type", "created_at", "updated_at", "accessed_at",
                 "expires_at", "access_count", "ttl")
TIMESTAMP_FIELDS = ("created_at", "updated_at", "accessed_at", "expires_at", "timestamp")


@dataclass(frozen=True)
class MemoryVersion:
    """One SQLite memory row in the shared memory shape, by the documented rules (times: epoch seconds)."""

    rowid: int
    key: str | None
    namespace: str
    value: object
    data_type: str
    raw_value: str | None
    created_at: Decimal | None
    updated_at: Decimal | None
    accessed_at: Decimal | None
    expires_at: Decimal | None
    access_count: int | None
    ttl: int | None


def memory_version(rowid: int, text: dict[str, str | None], layout: MemoryLayout) -> MemoryVersion:
    value, data_type = normalized_value(text["value"], text["storage_type"])
    return MemoryVersion(
        rowid=rowid, key=text["key"], namespace=coalesce(text["namespace"], layout.default_namespace), value=value,
        data_type=data_type, raw_value=text["value"], created_at=layout.to_timestamp(text["created_at"]),
        updated_at=layout.to_timestamp(text["updated_at"]), accessed_at=layout.to_timestamp(text["accessed_at"]),
        expires_at=layout.to_timestamp(text["expires_at"]), access_count=try_int(text["access_count"]),
        ttl=try_int(text["ttl"]))


@dataclass(frozen=True)
class Losers:
    """What a winner's superseded versions (unified_memory_history) contribute to its aggregates."""

    count: int = 0
    created_at: Decimal | None = None
    accessed_at: Decimal | None = None
    access_count: int | None = None


def sql_min(*values):
    """min() ignoring NULLs, as SQL's min aggregate."""
    present = [value for value in values if value is not None]
    return min(present) if present else None


def sql_max(*values):
    """max() ignoring NULLs, as SQL's max aggregate."""
    present = [value for value in values if value is not None]
    return max(present) if present else None


def coalesce(*values):
    """The first value that is not NULL."""
    return next((value for value in values if value is not None), None)


def expected_unified_memory(version: MemoryVersion, losers: Losers) -> dict:
    return {"key": version.key, "namespace": version.namespace, "value": version.value,
            "data_type": version.data_type, "created_at": sql_min(version.created_at, losers.created_at),
            "updated_at": version.updated_at, "accessed_at": sql_max(version.accessed_at, losers.accessed_at),
            "expires_at": version.expires_at, "access_count": sql_max(version.access_count, losers.access_count),
            "ttl": version.ttl, "version_count": 1 + losers.count}


def expected_history(version: MemoryVersion, losers: Losers) -> dict:
    return {"key": version.key, "namespace": version.namespace, "value": version.value,
            "data_type": version.data_type, "raw_value": version.raw_value, "created_at": version.created_at,
            "updated_at": version.updated_at, "accessed_at": version.accessed_at,
            "expires_at": version.expires_at, "access_count": version.access_count, "ttl": version.ttl}


def expected_performance_metrics(version: MemoryVersion, losers: Losers) -> dict:
    fields = version.value if isinstance(version.value, dict) else {}
    return {"key": version.key, "namespace": version.namespace, "metric_data": version.value,
            "metric_name": version.key.split(":", 1)[0] if version.key is not None else None,
            "metric_value": json_field_as_numeric(fields.get("duration")),
            "timestamp": coalesce(
                text_timestamp(fields["timestamp"]) if isinstance(fields.get("timestamp"), str) else None,
                version.updated_at, sql_min(version.created_at, losers.created_at))}


def json_field_as_numeric(value) -> Decimal | None:
    """consolidate.try_numeric(value ->> 'field'): a JSON number, or a string holding one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    return try_numeric(value) if isinstance(value, str) else None
