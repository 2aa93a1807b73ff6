"""loader.secret_scrub: which values of a JSON document are hashed, which are kept, and that the quick
test which skips documents never skips one a rule would change. Expectations are HMACs computed here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from loader.secret_scrub import MAX_DEPTH, Scrubber, is_flatted, scrub_json

KEY = b"test key"


def keyed(text: str) -> str:
    return "hmac-sha256:" + hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()


def scrubbed(document) -> object:
    return json.loads(scrub_json(KEY, json.dumps(document)))


@pytest.mark.parametrize("name", ["password", "client_secret", "Client-Secret", "clientSecret", "apiKey",
                                  "X-API-KEY", "encryptedPrivateKey", "accessToken", "bindingAdminPassword",
                                  "sshKeys", "Proxy-Authorization", "mfaRecoveryCodes", "dsn"])
def test_secret_names_are_hashed_whatever_their_spelling(name):
    assert scrubbed({name: "s3cr3t", "other": "kept"}) == {name: keyed("s3cr3t"), "other": "kept"}


@pytest.mark.parametrize("name", ["maxTokens", "tokenExpiry", "publicKey", "keyGeneratorType", "authorizationUrl",
                                  "clientId", "name", "credentials"])
def test_names_that_only_look_alike_are_kept(name):
    assert scrubbed({name: "value"}) == {name: "value"}


def test_values_under_a_secret_key_numbers_and_containers_hashed_booleans_and_null_kept():
    document = {"pin": 1, "password": 1234, "secrets": {"a": 1}, "passwordless": True, "token": None}
    assert scrubbed(document) == {"pin": 1, "password": keyed("1234"), "secrets": keyed('{"a":1}'),
                                  "passwordless": True, "token": None}


def test_credential_headers_given_as_name_value_pairs():
    document = {"parameters": [{"name": "Authorization", "value": "Bearer abc"}, {"name": "Accept", "value": "json"},
                               {"key": "Cookie", "value": "sid=1"}]}
    assert scrubbed(document) == {"parameters": [{"name": "Authorization", "value": keyed("Bearer abc")},
                                                 {"name": "Accept", "value": "json"},
                                                 {"key": "Cookie", "value": keyed("sid=1")}]}


def test_credentials_inside_strings():
    basic = base64.b64encode(b"user:pa55").decode()
    document = {"code": "fetch(u, {headers: {Authorization: 'Bearer abcdefgh12345'}})",
                "basic": f"Basic {basic}", "prose": "Basic understanding of the tool",
                "url": "https://user:pa55w0rd@example.com/x?api_key=k123&page=2",
                "headers": json.dumps({"X-Api-Key": "k456", "Accept": "json"})}
    assert scrubbed(document) == {
        "code": f"fetch(u, {{headers: {{Authorization: 'Bearer {keyed('abcdefgh12345')}'}}}})",
        "basic": f"Basic {keyed(basic)}", "prose": "Basic understanding of the tool",
        "url": f"https://user:{keyed('pa55w0rd')}@example.com/x?api_key={keyed('k123')}&page=2",
        "headers": json.dumps({"X-Api-Key": keyed("k456"), "Accept": "json"}, separators=(",", ":"))}


@pytest.mark.parametrize("text", ["email", "not json {", '"a bare string"'])
def test_text_that_is_not_a_json_container_is_hashed_whole(text):
    assert scrub_json(KEY, text) == keyed(text)


@pytest.mark.parametrize("text", ["true", "42", "null", '["V1"]', '{"a": 1,  "b": [1, 2.50]}'])
def test_documents_without_secrets_come_back_as_the_same_text(text):
    assert scrub_json(KEY, text) == text


def test_a_document_nested_deeper_than_the_limit_is_hashed_whole():
    deep = "[" * (MAX_DEPTH + 5) + '{"password": "x"}' + "]" * (MAX_DEPTH + 5)
    assert scrub_json(KEY, deep) == keyed(deep)
    very_deep = "[" * 5000 + "]" * 5000  # beyond Python's own recursion limit
    assert scrub_json(KEY, very_deep) == keyed(very_deep)


def test_a_duplicated_secret_key_never_keeps_its_first_value():
    assert "first" not in scrub_json(KEY, '{"password": "first", "password": null}')


def test_flatted_documents_hash_the_strings_secret_keys_point_to():
    document = [{"data": "1"}, {"password": "2", "headers": "3", "label": "2"}, "shared", {"authorization": "4"},
                "Bearer abc", "kept"]
    assert is_flatted(document) and not is_flatted([{"name": "Authorization", "value": "Bearer x"}])
    assert scrubbed(document) == [{"data": "1"}, {"password": "2", "headers": "3", "label": "2"}, keyed("shared"),
                                  {"authorization": "4"}, keyed("Bearer abc"), "kept"]


def every_json_text(folder: Path) -> list[str]:
    """Every text value starting like JSON in the SQLite files under `folder` (private copies)."""
    texts = []
    for database in sorted([*folder.rglob("*.sqlite"), *folder.rglob("*.db")]):
        connection = sqlite3.connect(database)
        try:
            for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                for (column,) in connection.execute(f"SELECT name FROM pragma_table_info('{table}')").fetchall():
                    texts += [value for (value,) in connection.execute(f'SELECT "{column}" FROM "{table}"')
                              if isinstance(value, str) and value[:1] in "[{"]
        except sqlite3.DatabaseError:  # not SQLite
            pass
        finally:
            connection.close()
    return texts


def test_the_quick_test_never_skips_a_document_a_rule_would_change(realdata, tmp_path):
    shutil.copytree(realdata, tmp_path / "copy")  # opening a WAL database in place would rewrite it
    texts = every_json_text(tmp_path / "copy")
    texts += [json.dumps({"a": f"x{separator}password", "b": "1"}) for separator in ("_", "-", " ", ".")]
    texts += ['{"api key": "1"}', '{"u": "see s3://a:b@c"}', '{"q": "/x?key=1"}', '{"h": "bearer abcdefghi"}',
              '{"p\\u0061ssword": "1"}', '{"n": "x"}']
    assert len(texts) > 1000
    for text in texts:
        document = json.loads(text)
        if isinstance(document, list) and is_flatted(document):
            walked, changed = Scrubber(KEY).flatted(document)
        else:
            walked, changed = Scrubber(KEY).value(document, 0)
        expected = json.dumps(walked, ensure_ascii=False, separators=(",", ":")) if changed else text
        assert scrub_json(KEY, text) == expected, text[:200]
