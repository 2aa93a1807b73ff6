"""The compiled-template cache (loader/transform/jinja_cache.py): dbt's own Jinja environment renders
through it, each process a fresh one (as each `consolidate sync` is), so what one process compiled
another loads, renders the same, and never parses again; a changed template, a damaged entry or a
folder that cannot be written is compiled as before."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Renders argv[2] (a template, JSON) with dbt's Jinja environment through the cache in argv[1]; prints
# what it rendered and how many times Jinja parsed a template source meanwhile.
SCRIPT = """
import json, sys
from pathlib import Path
from dbt_common.clients import jinja as dbt_jinja
from loader.transform import jinja_cache
parsed = []
parse = dbt_jinja.MacroFuzzEnvironment._parse
dbt_jinja.MacroFuzzEnvironment._parse = lambda self, *arguments: parsed.append(1) or parse(self, *arguments)
jinja_cache.install(Path(sys.argv[1]))
template = dbt_jinja.get_template(json.loads(sys.argv[2]), {"rows": [3, 1, 2]})
print(json.dumps({"rendered": template.render({}), "parsed": len(parsed)}))
"""

TEMPLATE = """{%- set total = rows | sum -%}
select {% for row in rows | sort %}{{ row }}{{ ", " if not loop.last }}{% endfor %} as ids, {{ total }} as total
{%- do rows.append(4) %}, {{ rows | length }} as n"""

EXPECTED = "select 1, 2, 3 as ids, 6 as total, 4 as n"


def render(folder: Path, template: str = TEMPLATE) -> dict:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), json.dumps(template)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def entries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def test_a_second_process_loads_what_the_first_compiled_and_renders_the_same(tmp_path):
    folder = tmp_path / "jinja-cache"
    first = render(folder)
    assert first == {"rendered": EXPECTED, "parsed": 1}
    assert len(entries(folder)) == 1
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    assert render(folder) == {"rendered": EXPECTED, "parsed": 0}

    changed = render(folder, TEMPLATE.replace("as total", "as grand_total"))
    assert changed == {"rendered": EXPECTED.replace("as total", "as grand_total"), "parsed": 1}
    assert len(entries(folder)) == 2


def test_a_damaged_entry_is_compiled_again_and_replaced(tmp_path):
    folder = tmp_path / "jinja-cache"
    render(folder)
    entry, = entries(folder)
    for damage in (b"", b"\xff\x00 not marshal", entry.read_bytes()[:20], b"N"):  # b"N": marshal's None
        entry.write_bytes(damage)
        assert render(folder) == {"rendered": EXPECTED, "parsed": 1}
        assert render(folder) == {"rendered": EXPECTED, "parsed": 0}


def test_a_folder_that_cannot_be_written_compiles_as_before(tmp_path):
    not_a_folder = tmp_path / "jinja-cache"
    not_a_folder.write_text("a file where the folder would be")
    for _ in range(2):
        assert render(not_a_folder) == {"rendered": EXPECTED, "parsed": 1}
    assert not_a_folder.read_text() == "a file where the folder would be"


def test_a_folder_others_may_write_is_never_loaded_from(tmp_path):
    folder = tmp_path / "jinja-cache"
    render(folder)
    folder.chmod(0o777)
    assert render(folder) == {"rendered": EXPECTED, "parsed": 1}
    folder.chmod(0o700)
    assert render(folder) == {"rendered": EXPECTED, "parsed": 0}
