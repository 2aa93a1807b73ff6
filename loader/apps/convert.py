"""SQLite values → the PostgreSQL column types an application declared, and one canonical text per value.

Each target column gets a `Converter` from its PostgreSQL type. `convert(value)` turns a SQLite value
(int, float, str, bytes or None) into what COPY sends for that column, and the canonical text the
verification digests: `canonical_sql` renders the stored PostgreSQL value into the same text, so a
value is verified equal only when PostgreSQL holds exactly what the conversion produced.

The rules (a value outside them is refused, naming the table, row and column, never guessed):
- boolean: SQLite's 0/1 (or the texts true/false/t/f/1/0);
- integers: integers, integral reals, and decimal-integer text;
- real / double precision: numbers (compared bit for bit); numeric: numbers, rounded to the column's scale;
- timestamp / timestamptz / date: SQLite date-time text, which these applications write in UTC:
  `YYYY-MM-DD[ T]HH:MM[:SS[.fraction]]`, optionally with `Z` or an offset (then converted to UTC). It is
  stored as that UTC time, never shifted by a session time zone, rounded to the column's precision
  (timestamp(3): milliseconds) as PostgreSQL rounds: half up;
- json: the text exactly as it is (PostgreSQL keeps json text verbatim), after checking it is JSON that
  PostgreSQL accepts; jsonb: the same check, compared as canonical JSON (jsonb normalises its text);
- uuid: any text Python's uuid accepts, compared in PostgreSQL's lowercase form;
- bytea: a BLOB's exact bytes (a text's UTF-8 bytes);
- text types and anything else (enums, ...): the text, PostgreSQL's own text of the stored value compared
  with it. Text that is not valid UTF-8, or holds NUL, cannot be PostgreSQL text and is refused.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from psycopg import sql


class ConversionError(ValueError):
    """A source value the target column's type cannot hold as it is."""


class UndecodableText(bytes):
    """A SQLite TEXT value that is not valid UTF-8 (kept as its bytes, so it can be named, not lost)."""


def decode_text(raw: bytes) -> str | UndecodableText:
    """sqlite3 text factory: str, or the raw bytes marked as undecodable text."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return UndecodableText(raw)


@dataclass(frozen=True)
class ColumnType:
    """A target column's type, as the catalog describes it."""

    name: str          # pg_type.typname: bool, int4, timestamptz, ...
    modifier: int      # pg_attribute.atttypmod (-1: none)
    category: str      # pg_type.typcategory ('A' for arrays)
    declared: str      # format_type(): what the application's DDL says

    @property
    def precision(self) -> int:
        """Fractional-second digits of a timestamp column (6 when not declared)."""
        return self.modifier if self.modifier >= 0 else 6

    @property
    def numeric_scale(self) -> int | None:
        return (self.modifier - 4) & 0xFFFF if self.name == "numeric" and self.modifier >= 4 else None


def text_of(value) -> str:
    """The text a value becomes in a text-like column (numbers as SQLite would print them)."""
    if isinstance(value, UndecodableText):
        raise ConversionError(f"text that is not valid UTF-8 (hex {bytes(value).hex()[:80]})")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"a BLOB that is not UTF-8 text (hex {value.hex()[:80]})") from None
    if isinstance(value, float):
        value = repr(value)
    value = str(value)
    if "\x00" in value:
        raise ConversionError("text holding NUL, which PostgreSQL text cannot hold")
    return value


BOOLEAN_TEXTS = {"1": True, "0": False, "true": True, "false": False, "t": True, "f": False}


def to_boolean(value) -> tuple[object, str]:
    if isinstance(value, int) and value in (0, 1):
        flag = bool(value)
    elif isinstance(value, str) and value.strip().lower() in BOOLEAN_TEXTS:
        flag = BOOLEAN_TEXTS[value.strip().lower()]
    else:
        raise ConversionError(f"{value!r} is not a boolean (0/1)")
    return flag, "true" if flag else "false"


INTEGER_TEXT = re.compile(r"\s*[-+]?\d+\s*")
INTEGER_RANGES = {"int2": 2 ** 15, "int4": 2 ** 31, "int8": 2 ** 63}


def to_integer(value, type_name: str) -> tuple[object, str]:
    if isinstance(value, bool):
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and INTEGER_TEXT.fullmatch(value):
        number = int(value)
    else:
        raise ConversionError(f"{value!r} is not an integer")
    bound = INTEGER_RANGES[type_name]
    if not -bound <= number < bound:
        raise ConversionError(f"{number} is out of range for {type_name}")
    return str(number), str(number)


def number_of(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConversionError(f"{value!r} is not a number")


def to_float(value, type_name: str) -> tuple[object, str]:
    number = number_of(value)
    if type_name == "float4":
        number = struct.unpack(">f", struct.pack(">f", number))[0]
    return repr(number), struct.pack(">d", number).hex()


def to_numeric(value, scale: int | None) -> tuple[object, str]:
    if isinstance(value, float):
        value = repr(value)
    try:
        number = Decimal(str(value).strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError):
        raise ConversionError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ConversionError(f"{value!r} is not a finite number")
    if scale is not None:
        try:
            number = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise ConversionError(f"{value!r} has too many digits for its numeric column") from None
    text = format(number, "f")
    if number.is_zero():
        text = text.lstrip("-")
    return text, text


DATE_TIME = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\s*", re.IGNORECASE)


def parse_utc(value) -> tuple[datetime, int]:
    """A naive UTC datetime from SQLite date-time text, and the nanoseconds beyond its microseconds
    (for round_to)."""
    if not isinstance(value, str):
        raise ConversionError(f"{value!r} is not date-time text")
    match = DATE_TIME.fullmatch(value)
    if not match:
        raise ConversionError(f"{value!r} is not date-time text (YYYY-MM-DD HH:MM:SS[.fff])")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as error:
        raise ConversionError(f"{value!r} is not a valid date-time: {error}") from None
    nanoseconds = int((fraction or "0").ljust(9, "0"))
    moment += timedelta(microseconds=nanoseconds // 1000)
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        moment -= sign * offset
    return moment, nanoseconds % 1000


def round_to(moment: datetime, extra_nanoseconds: int, precision: int) -> datetime:
    """Round half up to `precision` fractional digits, as PostgreSQL does for timestamp(p)."""
    total = moment.microsecond * 1000 + extra_nanoseconds
    unit = 10 ** (9 - precision)
    rounded = (total + unit // 2) // unit * unit
    return moment.replace(microsecond=0) + timedelta(microseconds=rounded // 1000)


# What both applications write: naive UTC, a space, at most microseconds (the common case, kept fast).
PLAIN_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?")


def to_timestamp(value, column: ColumnType) -> tuple[object, str]:
    plain = PLAIN_DATE_TIME.fullmatch(value) if isinstance(value, str) else None
    if plain and len(plain.group(2) or "") <= column.precision:  # nothing to round
        try:
            datetime.fromisoformat(plain.group(1))
        except ValueError as error:
            raise ConversionError(f"{value!r} is not a valid date-time: {error}") from None
        text = f"{plain.group(1)}.{(plain.group(2) or '').ljust(6, '0')}"
        return (text + "+00" if column.name == "timestamptz" else text), text
    moment, extra = parse_utc(value)
    moment = round_to(moment, extra, column.precision)
    if not 1 <= moment.year <= 9999:
        raise ConversionError(f"{value!r} is outside the years 1-9999")
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return (text + "+00" if column.name == "timestamptz" else text), text


def to_date(value) -> tuple[object, str]:
    moment, extra = parse_utc(value)
    if moment.time() != datetime.min.time() or extra:
        raise ConversionError(f"{value!r} has a time of day, which a date column would lose")
    text = moment.strftime("%Y-%m-%d")
    return text, text


def reject_constant(name: str):
    raise ConversionError(f"JSON holding {name}, which PostgreSQL refuses")


def parse_json(text: str):
    try:
        document = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=reject_constant)
    except json.JSONDecodeError as error:
        raise ConversionError(f"not JSON: {error}") from None
    except RecursionError:
        raise ConversionError("JSON nested too deeply to check") from None
    return document


def canonical_json(document) -> str:
    """One text per JSON value: keys sorted, no spaces, numbers by value (jsonb keeps neither key
    order nor number spelling)."""
    if isinstance(document, dict):
        return "{" + ",".join(json.dumps(key, ensure_ascii=False) + ":" + canonical_json(document[key])
                              for key in sorted(document)) + "}"
    if isinstance(document, list):
        return "[" + ",".join(canonical_json(item) for item in document) + "]"
    if isinstance(document, Decimal):
        text = format(document.normalize(), "f")
        return "0" if document.is_zero() else text
    return json.dumps(document, ensure_ascii=False)


def has_nul_escape(document) -> bool:
    if isinstance(document, dict):
        return any("\x00" in key or has_nul_escape(item) for key, item in document.items())
    if isinstance(document, list):
        return any(has_nul_escape(item) for item in document)
    return isinstance(document, str) and "\x00" in document


def to_json(value, binary: bool) -> tuple[object, str]:
    text = text_of(value)
    document = parse_json(text)
    if binary:
        if has_nul_escape(document):
            raise ConversionError("JSON holding \\u0000, which jsonb refuses")
        return text, canonical_json(document)
    return text, text


def jsonb_canonical(stored: str) -> str:
    return canonical_json(parse_json(stored))


def to_uuid(value) -> tuple[object, str]:
    try:
        text = str(uuid.UUID(text_of(value).strip()))
    except ValueError:
        raise ConversionError(f"{value!r} is not a UUID") from None
    return text, text


def to_bytea(value) -> tuple[object, str]:
    if isinstance(value, bytes):
        data = bytes(value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
    else:
        raise ConversionError(f"{value!r} is not a BLOB")
    return data, data.hex()


def to_text(value, column: ColumnType) -> tuple[object, str]:
    text = text_of(value)
    if column.name == "bpchar":  # char(n): PostgreSQL pads, and its text drops trailing blanks
        return text, text.rstrip(" ")
    return text, text


@dataclass(frozen=True)
class Converter:
    """How one target column receives and renders values."""

    column: str
    type: ColumnType
    convert_value: Callable[[object], tuple[object, str]]
    render: str                                     # SQL rendering the stored value as canonical text ({} = column)
    render_in_python: Callable[[str], str] | None = None  # applied to `render`'s result (jsonb)

    def convert(self, value) -> tuple[object, str | None]:
        """(what COPY sends, canonical text); (None, None) for NULL."""
        if value is None:
            return None, None
        return self.convert_value(value)

    def canonical_sql(self, relation_alias: str) -> sql.Composable:
        return sql.SQL(self.render).format(sql.Identifier(relation_alias, self.column))

    def canonical_of_stored(self, rendered: str | None) -> str | None:
        if rendered is None or self.render_in_python is None:
            return rendered
        return self.render_in_python(rendered)


def converter_for(column: str, column_type: ColumnType) -> Converter:
    name = column_type.name
    if column_type.category == "A":
        return Converter(column, column_type, lambda v: to_text(v, column_type), "{}::text")
    if name == "bool":
        return Converter(column, column_type, to_boolean, "{}::text")
    if name in INTEGER_RANGES:
        return Converter(column, column_type, lambda v: to_integer(v, name), "{}::text")
    if name in ("float4", "float8"):
        return Converter(column, column_type, lambda v: to_float(v, name), "encode(float8send({}::float8), 'hex')")
    if name == "numeric":
        return Converter(column, column_type, lambda v: to_numeric(v, column_type.numeric_scale), "{}::text")
    if name in ("timestamp", "timestamptz"):
        utc = " AT TIME ZONE 'UTC'" if name == "timestamptz" else ""
        return Converter(column, column_type, lambda v: to_timestamp(v, column_type),
                         "to_char({}" + utc + ", 'YYYY-MM-DD HH24:MI:SS.US')")
    if name == "date":
        return Converter(column, column_type, to_date, "to_char({}, 'YYYY-MM-DD')")
    if name == "json":
        return Converter(column, column_type, lambda v: to_json(v, binary=False), "{}::text")
    if name == "jsonb":
        return Converter(column, column_type, lambda v: to_json(v, binary=True), "{}::text", jsonb_canonical)
    if name == "uuid":
        return Converter(column, column_type, to_uuid, "{}::text")
    if name == "bytea":
        return Converter(column, column_type, to_bytea, "encode({}, 'hex')")
    return Converter(column, column_type, lambda v: to_text(v, column_type), "{}::text")
