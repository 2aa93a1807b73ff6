"""The documented rules, written again in Python, independently of dbt and of the loader: what raw holds
for a SQLite value, how a memory value becomes jsonb with a data_type, how times become timestamps, and
what a memory row becomes in each mart. The spot check compares PostgreSQL with these; a rule that
changes in dbt_project/macros must change here too.

Not independent: the secret policy (which column is hashed, excluded or scrubbed: the load's own
SecretPolicy and default_action) and the scrub of secret keys inside JSON (loader.secret_scrub) are the
load's code, used here as they are. The spot check proves that raw holds what that code makes of each
source value (and so that nothing else changed it); tests/test_secret_scrub.py and tests/test_secrets.py
hold the scrub and the policy to their documented behaviour on their own."""

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

from loader.json_depth import MAX_JSON_DEPTH, too_deep
from loader.load.secret_policy import SecretPolicy, default_action
from loader.secret_scrub import HMAC_PREFIX, scrub_json_bytes

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
    """JSON text -> Python, as PostgreSQL's jsonb accepts it (numbers as Decimal), nested at most
    MAX_JSON_DEPTH levels (deeper is never parsed, see loader/json_depth.py); ValueError otherwise."""
    if too_deep(text):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=reject_constant)
    except RecursionError as error:
        raise ValueError("nested too deeply") from error
    if not jsonb_accepts(value):
        raise ValueError("not representable as jsonb")
    return value


def jsonb_accepts(value) -> bool:
    """jsonb rejects \\u0000, lone UTF-16 surrogates and numbers beyond numeric's range. Walks the
    document with a list, not recursion: it may nest MAX_JSON_DEPTH levels."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= char <= "\udfff" for char in item):
                return False
        elif isinstance(item, Decimal):
            if item.adjusted() > NUMERIC_MAX_WEIGHT or -item.as_tuple().exponent > NUMERIC_MAX_SCALE:
                return False
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
    return True


CANONICAL_BASE64 = re.compile("([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def decode_compressed(text: str):
    """`__compressed__` + base64 of UTF-8 JSON -> that JSON; ValueError otherwise. Base64 in whole groups
    of four with `=` only as the last group's padding: b64decode alone also takes padding after a full
    group ("QUFB="), which PostgreSQL's decode refuses."""
    payload = re.sub("[ \t\n\r]", "", text[len("__compressed__"):])  # PostgreSQL's decode skips these
    if not CANONICAL_BASE64.fullmatch(payload):
        raise ValueError("not a compressed JSON document")
    try:
        decoded = base64.b64decode(payload, validate=True).decode("utf-8")
    except ValueError as error:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError("not a compressed JSON document") from error
    return parse_json(decoded)


def normalized_value(raw: str | None, storage_type: str | None) -> tuple[object, str]:
    """(value, data_type) by the documented rule (dbt_project/macros/memory_values.sql): NULL -> JSON
    null; pickle -> the base64 text; __compressed__ + base64 JSON -> decoded; JSON text -> that JSON;
    JSON Python accepts but jsonb rejects (NaN, Infinity, \\u0000, ...) -> the text, unsupported_json;
    anything else (text nested deeper than MAX_JSON_DEPTH too) -> the text."""
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
        return raw, "unsupported_json" if not too_deep(raw) and python_accepts_json(raw) else "text"


def python_accepts_json(text: str) -> bool:
    """Whether Python's json module parses the text (it accepts NaN, Infinity, \\u0000, lone surrogates)."""
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def same(expected, actual) -> bool:
    """Strict JSON-like equality: numbers by value, but never a boolean for a number or a string for
    either. Walks both documents with a list, not recursion: they may nest MAX_JSON_DEPTH levels."""
    pending = [(expected, actual)]
    while pending:
        expected, actual = pending.pop()
        if isinstance(expected, bool) or isinstance(actual, bool):
            equal = type(expected) is type(actual) and expected == actual
        elif isinstance(expected, (int, Decimal)) and isinstance(actual, (int, Decimal)):
            equal = expected == actual
        elif isinstance(expected, list) and isinstance(actual, list):
            equal = len(expected) == len(actual)
            pending.extend(zip(expected, actual))
        elif isinstance(expected, dict) and isinstance(actual, dict):
            equal = expected.keys() == actual.keys()
            pending.extend((expected[key], actual[key]) for key in expected if key in actual)
        elif isinstance(expected, str) and isinstance(actual, str):  # Binary is a str
            equal = expected == actual
        else:
            equal = type(expected) is type(actual) and expected == actual
        if not equal:
            return False
    return True


def value_too_deep(raw: str | None, storage_type: str | None) -> bool:
    """Whether staging flags the value `json_too_deep`: text (not binary, pickle or `__compressed__`)
    nested deeper than MAX_JSON_DEPTH."""
    return (isinstance(raw, str) and not isinstance(raw, Binary) and storage_type != "pickle"
            and not raw.startswith("__compressed__") and too_deep(raw))


class Binary(str):
    """A value raw holds as `\\x` + lowercase hex of its exact bytes (loader/load/raw_contract.py)."""

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


def secret_action(policy: SecretPolicy | None, table: str, column: str) -> str:
    if policy is not None:
        return policy.action(table, column)
    return default_action(table, column)


SHAPE_ONLY_KEY = b"validation without the load's key"


def expected_in_raw(text: str | None, action: str, key: bytes | None) -> str | re.Pattern | None:
    """What raw holds for a source value under its secret-policy action: the text (`keep`), NULL
    (`exclude`), HMAC-SHA256 of its bytes (`hash`), or the JSON with its secrets hashed (`scrub`).
    When the key is unknown, a pattern: the same text with any HMAC where a hash stands."""
    if text is None or action == "exclude":
        return None
    if action == "keep":
        return text
    original = text.original if isinstance(text, Binary) else text.encode()
    if action == "scrub":
        scrubbed = scrub_json_bytes(key if key is not None else SHAPE_ONLY_KEY, original)
        if key is not None:
            return scrubbed
        return re.compile(HMAC_SHAPE.pattern.join(re.escape(part) for part in HMAC_SHAPE.split(scrubbed)))
    if key is None:
        return HMAC_SHAPE
    return HMAC_PREFIX + hmac.new(key, original, hashlib.sha256).hexdigest()


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
    value_column: str = "value"  # the source column holding the value (v3: content)
    value_too_deep: bool = False  # staging flags it json_too_deep:<value_column>


def memory_version(rowid: int, text: dict[str, str | None], layout: MemoryLayout) -> MemoryVersion:
    value, data_type = normalized_value(text["value"], text["storage_type"])
    return MemoryVersion(
        rowid=rowid, key=text["key"], namespace=coalesce(text["namespace"], layout.default_namespace), value=value,
        data_type=data_type, raw_value=text["value"], created_at=layout.to_timestamp(text["created_at"]),
        updated_at=layout.to_timestamp(text["updated_at"]), accessed_at=layout.to_timestamp(text["accessed_at"]),
        expires_at=layout.to_timestamp(text["expires_at"]), access_count=try_int(text["access_count"]),
        ttl=try_int(text["ttl"]), value_column=layout.columns["value"],
        value_too_deep=value_too_deep(text["value"], text["storage_type"]))


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
            "data_type": version.data_type, "json_too_deep": version.value_too_deep, "created_at": sql_min(version.created_at, losers.created_at),
            "updated_at": version.updated_at, "accessed_at": sql_max(version.accessed_at, losers.accessed_at),
            "expires_at": version.expires_at, "access_count": sql_max(version.access_count, losers.access_count),
            "ttl": version.ttl, "version_count": 1 + losers.count}


def expected_history(version: MemoryVersion, losers: Losers) -> dict:
    return {"key": version.key, "namespace": version.namespace, "value": version.value,
            "data_type": version.data_type, "json_too_deep": version.value_too_deep, "raw_value": version.raw_value, "created_at": version.created_at,
            "updated_at": version.updated_at, "accessed_at": version.accessed_at,
            "expires_at": version.expires_at, "access_count": version.access_count, "ttl": version.ttl}


def expected_performance_metrics(version: MemoryVersion, losers: Losers) -> dict:
    fields = version.value if isinstance(version.value, dict) else {}
    return {"key": version.key, "namespace": version.namespace, "metric_data": version.value,
            "json_too_deep": version.value_too_deep,
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
