"""Keyed hashes of secrets, and JSON text with its secrets hashed and everything else kept.

`keyed_hash` is HMAC-SHA256 under the policy's key, written `hmac-sha256:<hex>`: equal secrets stay
equal (joinable, comparable) but cannot be read back.

`scrub_json` reads a JSON document and hashes, wherever they are:

- the value of every key whose name looks secret (`is_secret_name`: names are compared lower-cased
  with everything but letters and digits dropped, so `client_secret`, `Client-Secret` and
  `clientSecret` are one name). A string is hashed as its UTF-8 bytes, a number or a whole object or
  array as its compact JSON text; `true`, `false` and `null` say nothing and are kept;
- the `value` of a name/value pair whose name is a secret name or a credential-bearing HTTP header
  (`{"name": "Authorization", "value": "Bearer ..."}`, as n8n stores header and query parameters);
- inside any string: the credential after `Bearer ` or `Basic ` (Basic only when it decodes to
  `user:password`), the password of a URL (`scheme://user:password@host`), the value of a URL query
  parameter with a secret name (`?api_key=...`, `&token=...`, `?key=...`), and JSON held in a string
  (a header set typed as JSON text), scrubbed the same way.

n8n stores execution data in the `flatted` format: one JSON array whose containers refer to every
string by its index. Such a document is recognised (`is_flatted`) and the strings a secret key or a
secret pair refers to are hashed in place; the references stay valid.

Text that is not JSON, a bare JSON string, and documents nested deeper than MAX_DEPTH are hashed
whole: where the secret sits in them cannot be told. A document without secrets comes back as the
very same text; one with secrets comes back re-serialised compactly (floats in Python's shortest
form; of duplicate keys the last one, which is what JSON readers keep).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

HMAC_PREFIX = "hmac-sha256:"
MAX_DEPTH = 200

# A name is secret when its normalised form contains one of these, ends with one of these, or is one of these.
SECRET_NAME_PARTS = ("password", "passwd", "passphrase", "secret", "apikey", "privatekey", "accesskey", "sshkey",
                     "encryptionkey", "signingkey")
SECRET_NAME_ENDINGS = ("token", "pwd", "authorization", "recoverycodes")
SECRET_NAMES = frozenset({"dsn", "pass"})
# Headers and query parameters that carry credentials although their names are not secret-looking.
SECRET_HEADERS = frozenset({"cookie", "setcookie"})
SECRET_QUERY_PARAMETERS = frozenset({"key", "sig", "signature", "code"})
PAIR_NAME_FIELDS = ("name", "key", "header")

BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9\-._~+/]{8,}=*)")
BASIC = re.compile(r"(?i)\b(basic\s+)([A-Za-z0-9+/]{4,}={0,2})")
URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/?#@:]*:)([^\s/?#@]+)(@)")
QUERY_PARAMETER = re.compile(r"([?&])([A-Za-z0-9_.\-\[\]]+)=([^&#\s\"'<>]+)")


def keyed_hash(key: bytes, value: bytes) -> str:
    return HMAC_PREFIX + hmac.new(key, value, hashlib.sha256).hexdigest()


def normalised(name: str) -> str:
    return "".join(character for character in name.lower() if character.isascii() and character.isalnum())


def is_secret_name(name: str) -> bool:
    flat = normalised(name)
    return (flat in SECRET_NAMES or flat.endswith(SECRET_NAME_ENDINGS)
            or any(part in flat for part in SECRET_NAME_PARTS))


def is_secret_header(name: str) -> bool:
    return is_secret_name(name) or normalised(name) in SECRET_HEADERS


class TooDeep(Exception):
    pass


class DuplicateKeys(dict):
    """An object that had a key twice: JSON readers keep the last value, so the text must be rewritten."""


def object_with_duplicates_marked(pairs: list[tuple[str, Any]]) -> dict:
    document = dict(pairs)
    return DuplicateKeys(document) if len(document) != len(pairs) else document


def compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\\ud800) parsed from an escape: keep it escaped
        text = json.dumps(value, separators=(",", ":"))
    return text


class Scrubber:
    def __init__(self, key: bytes):
        self.key = key

    def hash_text(self, text: str) -> str:
        return keyed_hash(self.key, text.encode("utf-8", "surrogatepass"))

    def secret_value(self, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        return self.hash_text(value if isinstance(value, str) else compact(value))

    # -- strings -------------------------------------------------------------------------------

    def string(self, text: str, depth: int) -> str:
        embedded = self.embedded_json(text, depth)
        if embedded is not None:
            return embedded
        text = BEARER.sub(lambda m: m.group(1) + self.hash_text(m.group(2)), text)
        text = BASIC.sub(self.basic_credentials, text)
        text = URL_PASSWORD.sub(lambda m: m.group(1) + self.hash_text(m.group(2)) + m.group(3), text)
        return QUERY_PARAMETER.sub(self.query_parameter, text)

    def basic_credentials(self, match: re.Match) -> str:
        try:
            decoded = base64.b64decode(match.group(2), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return match.group(0)
        return match.group(1) + self.hash_text(match.group(2)) if ":" in decoded else match.group(0)

    def query_parameter(self, match: re.Match) -> str:
        name = match.group(2)
        if is_secret_name(name) or normalised(name) in SECRET_QUERY_PARAMETERS:
            return f"{match.group(1)}{name}={self.hash_text(match.group(3))}"
        return match.group(0)

    def embedded_json(self, text: str, depth: int) -> str | None:
        """The scrubbed text of JSON held in a string, or None when the string holds no JSON container."""
        if text.lstrip()[:1] not in ("{", "["):
            return None
        try:
            document = json.loads(text, object_pairs_hook=object_with_duplicates_marked)
        except (ValueError, RecursionError):
            return None
        if not isinstance(document, (dict, list)):
            return None
        scrubbed, changed = self.value(document, depth + 1)
        return compact(scrubbed) if changed else text

    # -- documents ------------------------------------------------------------------------------

    def value(self, node: Any, depth: int) -> tuple[Any, bool]:
        """The node with its secrets hashed, and whether anything changed."""
        if depth > MAX_DEPTH:
            raise TooDeep
        if isinstance(node, str):
            scrubbed = self.string(node, depth)
            return scrubbed, scrubbed != node
        if isinstance(node, list):
            items = [self.value(item, depth + 1) for item in node]
            return [item for item, _ in items], any(changed for _, changed in items)
        if isinstance(node, dict):
            return self.object(node, depth)
        return node, False

    def object(self, node: dict, depth: int) -> tuple[dict, bool]:
        changed = isinstance(node, DuplicateKeys)
        secret_pair = self.is_secret_pair(node)
        result = {}
        for name, item in node.items():
            if is_secret_name(name) or (secret_pair and name == "value"):
                result[name] = self.secret_value(item)
                changed = changed or result[name] != item
            else:
                result[name], item_changed = self.value(item, depth + 1)
                changed = changed or item_changed
        return result, changed

    @staticmethod
    def is_secret_pair(node: dict) -> bool:
        if "value" not in node:
            return False
        return any(isinstance(node.get(field), str) and is_secret_header(node[field]) for field in PAIR_NAME_FIELDS)

    # -- flatted --------------------------------------------------------------------------------

    def flatted(self, document: list) -> tuple[list, bool]:
        secret = self.flatted_secret_indices(document)
        result, changed = list(document), False
        for index, element in enumerate(document):
            if isinstance(element, str):
                result[index] = self.hash_text(element) if index in secret else self.string(element, 1)
            elif isinstance(element, dict):
                result[index] = {name: self.secret_value(item) if is_secret_name(name) and not is_reference(item, document)
                                 else item for name, item in element.items()}
            changed = changed or result[index] != element
        return result, changed

    def flatted_secret_indices(self, document: list) -> set[int]:
        pending = []
        for element in document:
            if not isinstance(element, dict):
                continue
            for name, item in element.items():
                if is_secret_name(name) and is_reference(item, document):
                    pending.append(int(item))
            names = [document[int(element[field])] for field in PAIR_NAME_FIELDS
                     if is_reference(element.get(field), document)]
            if is_reference(element.get("value"), document) and any(
                    isinstance(name, str) and is_secret_header(name) for name in names):
                pending.append(int(element["value"]))
        secret = set()
        while pending:
            index = pending.pop()
            if index in secret:
                continue
            secret.add(index)
            element = document[index]
            children = element.values() if isinstance(element, dict) else element if isinstance(element, list) else ()
            pending.extend(int(child) for child in children if is_reference(child, document))
        return secret


def is_reference(item: Any, document: list) -> bool:
    return isinstance(item, str) and item.isascii() and item.isdigit() and int(item) < len(document)


def is_flatted(document: Any) -> bool:
    """A `flatted` document: an array whose first element is a container, where containers hold no
    container and no string other than an index into the array."""
    if not (isinstance(document, list) and document and isinstance(document[0], (dict, list))):
        return False
    for element in document:
        items = element.values() if isinstance(element, dict) else element if isinstance(element, list) else ()
        for item in items:
            if isinstance(item, (dict, list)) or (isinstance(item, str) and not is_reference(item, document)):
                return False
    return True


def scrub_json(key: bytes, text: str) -> str:
    """`text` with every secret in it hashed (see the module docstring)."""
    scrubber = Scrubber(key)
    try:
        document = json.loads(text, object_pairs_hook=object_with_duplicates_marked)
    except (ValueError, RecursionError):
        return scrubber.hash_text(text)
    if not isinstance(document, (dict, list)):
        return scrubber.hash_text(text) if isinstance(document, str) else text
    try:
        scrubbed, changed = scrubber.flatted(document) if is_flatted(document) else scrubber.value(document, 0)
    except (TooDeep, RecursionError):
        return scrubber.hash_text(text)
    return compact(scrubbed) if changed else text


def scrub_json_bytes(key: bytes, value: bytes) -> str:
    """scrub_json of UTF-8 bytes; bytes that are not UTF-8 are hashed whole."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return keyed_hash(key, value)
    return scrub_json(key, text)
