"""dbt's worker process (loader/transform/dbt_process.py): a command that builds forks it before the rest
of the tool is imported, and runs dbt there. It answers as dbt in the command's own process does, never
outlives the command (kill -9 included), and a Ctrl-C of the command cancels the queries it runs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loader.database import Target

from conftest import REPO, consolidate, fetch, wait_for

# Runs one dbt invocation (argv[3], JSON) against argv[1] with home argv[2], in the worker when argv[4]
# is "worker" (started as the console script starts it), else in this process (its sys.stdout not the
# process's own, as under a test's capture: no worker); prints the worker's pid first, then the outcome.
SCRIPT = """
import json, sys
from pathlib import Path
from loader.transform import dbt_process
if sys.argv[4] == "worker":
    dbt_process.start_worker()
else:
    sys.stdout = open(sys.stdout.fileno(), "w", closefd=False)
from loader.database import Target
from loader.transform.build import prepare, run_dbt
target, home = Target(sys.argv[1]), Path(sys.argv[2])
prepare(target, home)
worker = dbt_process.running_worker()
print(json.dumps({"worker": worker.process.pid if worker else None}), flush=True)
outcome = run_dbt(json.loads(sys.argv[3]), target, home, quiet=True)
print(json.dumps({"dbt_imported_here": "dbt.cli.main" in sys.modules, **outcome.to_json()}), flush=True)
"""

SLEEP = ["show", "--inline", "select pg_sleep(120) as slept"]


def invocation(target: Target, home: Path, command: list[str], where: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, target.dsn, str(home), json.dumps(command), where],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> tuple[dict, dict]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out[-2000:] + err[-3000:]
    # the worker ended on its own at exit, releasing what dbt took: no leaked semaphores to warn of
    assert "resource_tracker" not in err and "leaked" not in err, err[-3000:]
    lines = out.strip().splitlines()
    return json.loads(lines[0]), json.loads(lines[-1])


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie left for a parent that does not reap counts as gone)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


def sleeping_queries(target: Target) -> int:
    return fetch(target, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND state = 'active' AND position('pg_sleep(120)' in query) > 0 AND pid <> pg_backend_pid()")[0][0]


@pytest.fixture
def loaded(target, tmp_path) -> Target:
    for arguments in (("sample", str(tmp_path / "tree")),
                      ("load", str(tmp_path / "tree"), "--dsn", target.dsn, "--home", str(tmp_path / "state"))):
        result = consolidate(*arguments)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return target


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked")
def test_the_worker_builds_as_dbt_in_the_process_does_and_reports_a_bad_argument_the_same(loaded, tmp_path):
    home = tmp_path / "state"
    worker_first, in_worker = finished(invocation(loaded, home, ["build"], "worker"))
    assert worker_first["worker"] is not None and not in_worker["dbt_imported_here"]
    assert in_worker["success"] and in_worker["failures"] == [] and in_worker["passed"] > 40, in_worker
    marts_after_worker = fetch(loaded, "SELECT id, key, namespace, value::text FROM unified_memory ORDER BY id")
    run_results = json.loads((home / "dbt" / "target" / "run_results.json").read_text())
    assert len(run_results["results"]) == in_worker["passed"]      # written by the worker
    # the worker kept the templates it compiled (loader/transform/jinja_cache.py); the build below loads them
    cache = home / "dbt" / "jinja-cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and len([path for path in cache.rglob("*") if path.is_file()]) > 100

    here_first, here = finished(invocation(loaded, home, ["build", "--full-refresh"], "here"))
    assert here_first["worker"] is None and here["dbt_imported_here"]
    assert here["success"] and here["passed"] == in_worker["passed"], here
    assert fetch(loaded, "SELECT id, key, namespace, value::text FROM unified_memory ORDER BY id") \
        == marts_after_worker and len(marts_after_worker) > 0

    outcomes = [finished(invocation(loaded, home, ["build", "--no-such-option"], where))[1]
                for where in ("worker", "here")]
    assert outcomes[0] == {**outcomes[1], "dbt_imported_here": False}
    assert outcomes[0]["crashed"] and "no-such-option" in outcomes[0]["failures"][0], outcomes[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked")
def test_the_worker_dies_with_a_killed_command(target, tmp_path):
    process = invocation(target, tmp_path / "state", SLEEP, "worker")
    try:
        worker = json.loads(process.stdout.readline())["worker"]
        assert worker is not None
        assert wait_for(lambda: sleeping_queries(target) == 1, 120, step=0.1), process.stderr.read()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert wait_for(lambda: gone(worker), 10, step=0.1), f"the worker {worker} outlived its killed command"
    finally:
        process.kill()
        fetch(target, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND position('pg_sleep(120)' in query) > 0 AND pid <> pg_backend_pid()")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked")
def test_ctrl_c_of_the_command_cancels_the_workers_queries_and_ends_it(target, tmp_path):
    process = invocation(target, tmp_path / "state", SLEEP, "worker")
    try:
        worker = json.loads(process.stdout.readline())["worker"]
        assert wait_for(lambda: sleeping_queries(target) == 1, 120, step=0.1), process.stderr.read()
        started = time.monotonic()
        process.send_signal(signal.SIGINT)  # to the command only: the worker ignores SIGINT itself
        process.wait(timeout=60)
        assert process.returncode != 0 and "KeyboardInterrupt" in process.stderr.read()
        assert wait_for(lambda: gone(worker), 10, step=0.1)
        assert wait_for(lambda: sleeping_queries(target) == 0, 10, step=0.1), "dbt's query was left running"
        assert time.monotonic() - started < 30
    finally:
        process.kill()
