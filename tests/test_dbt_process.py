"""dbt's worker process (loader/transform/dbt_process.py): a command that builds forks it before the rest
of the tool is imported, and runs dbt there; or the dbt server a first worker left behind
(loader/transform/dbt_server.py) forks it, dbt already imported. It answers as dbt in the command's own
process does, never outlives the command (kill -9 included), and a Ctrl-C of the command cancels the
queries it runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loader.database import Target
from loader.transform import dbt_server
from loader.transform.dbt_process import gone

from conftest import REPO, consolidate, fetch, wait_for

# Runs one dbt invocation (argv[3], JSON) against argv[1] with home argv[2], in the worker when argv[4]
# is "worker" (started as the console script starts it), else in this process (its sys.stdout not the
# process's own, as under a test's capture: no worker); prints the worker's pid, kind and parent first, then
# the outcome.
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
parent = int(open(f"/proc/{worker.pid}/stat").read().rsplit(")", 1)[1].split()[1]) if worker else None
print(json.dumps({"worker": worker.pid if worker else None, "kind": type(worker).__name__, "parent": parent}),
      flush=True)
outcome = run_dbt(json.loads(sys.argv[3]), target, home, quiet=True)
print(json.dumps({"dbt_imported_here": "dbt.cli.main" in sys.modules, **outcome.to_json()}), flush=True)
"""

SLEEP = ["show", "--inline", "select pg_sleep(120) as slept"]


def invocation(target: Target, home: Path, command: list[str], where: str,
               environment: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, target.dsn, str(home), json.dumps(command), where],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(environment or {})})


def finished(process: subprocess.Popen) -> tuple[dict, dict]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out[-2000:] + err[-3000:]
    # the worker ended on its own at exit, releasing what dbt took: no leaked semaphores to warn of
    assert "resource_tracker" not in err and "leaked" not in err, err[-3000:]
    lines = out.strip().splitlines()
    return json.loads(lines[0]), json.loads(lines[-1])


def server_sockets(runtime: Path) -> list[Path]:
    return sorted((runtime / f"consolidate-{os.getuid()}").glob("dbt-*.sock"))


def server_pid(path: Path) -> int:
    """The pid of the dbt server listening at `path` (the socket's peer credentials)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client, dbt_server.socket_address(path) as reachable:
        client.connect(reachable)
        return struct.unpack("3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]


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
    passed = [r for r in run_results["results"]  # written by the worker; passed: its models and tests
              if r["status"] in ("success", "pass") and not r["unique_id"].startswith("operation.")]
    assert len(passed) == in_worker["passed"]
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


@pytest.fixture(params=["ForkedWorker", "ServedWorker"])
def worker_kind(request, target, tmp_path) -> tuple[str, dict[str, str]]:
    """How the worker starts, and the environment that makes it start so: forked by the command (the dbt
    server off), or served by a dbt server of its own (a private runtime folder, a server left there by a
    first command)."""
    if request.param == "ForkedWorker":
        yield request.param, {"CONSOLIDATE_DBT_SERVER": "off"}
        return
    environment = {"XDG_RUNTIME_DIR": str(tmp_path / "runtime")}
    (tmp_path / "runtime").mkdir(mode=0o700)
    first, _ = finished(invocation(target, tmp_path / "state", ["parse"], "worker", environment))
    assert first["kind"] == "ForkedWorker"
    assert wait_for(lambda: server_sockets(tmp_path / "runtime"), 30, step=0.05)
    yield request.param, environment
    for path in server_sockets(tmp_path / "runtime"):
        os.kill(server_pid(path), signal.SIGTERM)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked")
def test_the_worker_dies_with_a_killed_command(target, tmp_path, worker_kind):
    kind, environment = worker_kind
    process = invocation(target, tmp_path / "state", SLEEP, "worker", environment)
    try:
        started = json.loads(process.stdout.readline())
        worker = started["worker"]
        assert worker is not None and started["kind"] == kind
        assert (started["parent"] == process.pid) == (kind == "ForkedWorker")
        assert wait_for(lambda: sleeping_queries(target) == 1, 120, step=0.1), process.stderr.read()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert wait_for(lambda: gone(worker), 15, step=0.1), f"the worker {worker} outlived its killed command"
        if kind == "ServedWorker":  # it interrupted itself as the command's end closed: dbt cancelled its query
            assert wait_for(lambda: sleeping_queries(target) == 0, 10, step=0.1), "dbt's query was left running"
    finally:
        process.kill()
        fetch(target, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND position('pg_sleep(120)' in query) > 0 AND pid <> pg_backend_pid()")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked")
def test_ctrl_c_of_the_command_cancels_the_workers_queries_and_ends_it(target, tmp_path, worker_kind):
    kind, environment = worker_kind
    process = invocation(target, tmp_path / "state", SLEEP, "worker", environment)
    try:
        started = json.loads(process.stdout.readline())
        worker = started["worker"]
        assert started["kind"] == kind
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked")
def test_a_later_command_is_served_by_the_dbt_server_the_first_left(loaded, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    environment = {"XDG_RUNTIME_DIR": str(runtime)}
    home = tmp_path / "state"
    first, forked = finished(invocation(loaded, home, ["build"], "worker", environment))
    assert first["kind"] == "ForkedWorker" and forked["success"], forked
    marts = fetch(loaded, "SELECT id, key, namespace, value::text FROM unified_memory ORDER BY id")
    # the server left behind is the user's own; it holds none of its first command's descriptors (the
    # command's pipes reached EOF above, in `finished`)
    assert wait_for(lambda: server_sockets(runtime), 30, step=0.05)
    path, = server_sockets(runtime)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    server = server_pid(path)
    # in ps: what it is, not the command line of the command that started it
    assert Path(f"/proc/{server}/cmdline").read_bytes().startswith(b"consolidate dbt server (")
    assert Path(f"/proc/{server}/fd/1").resolve() == Path("/dev/null")
    assert wait_for(lambda: sorted(int(fd) for fd in os.listdir(f"/proc/{server}/fd")) == [0, 1, 2, 3], 5), \
        os.listdir(f"/proc/{server}/fd")   # /dev/null three times and the socket

    try:
        second, served = finished(invocation(loaded, home, ["build", "--full-refresh"], "worker", environment))
        assert second["kind"] == "ServedWorker" and second["parent"] == server
        assert not served["dbt_imported_here"] and served["success"], served
        assert served["passed"] == forked["passed"]
        assert fetch(loaded, "SELECT id, key, namespace, value::text FROM unified_memory ORDER BY id") == marts
        assert gone(second["worker"])   # it ended with its command

        # dbt's output reaches the command's own streams, and a bad argument is reported as from a forked worker
        bad = [finished(invocation(loaded, home, ["build", "--no-such-option"], "worker", {**environment, **switch}))
               for switch in ({}, {"CONSOLIDATE_DBT_SERVER": "off"})]
        assert [first["kind"] for first, _ in bad] == ["ServedWorker", "ForkedWorker"]
        assert bad[0][1] == bad[1][1] and "no-such-option" in bad[0][1]["failures"][0]
        assert server_sockets(runtime) == [path]   # the forked worker with the server off left none
    finally:
        os.kill(server, signal.SIGTERM)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked")
def test_the_dbt_server_ends_when_idle_or_its_socket_is_gone_and_is_never_used_from_a_shared_folder(target, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for idle, end in (("8", "waits"), ("60", "unlinks")):
        environment = {"XDG_RUNTIME_DIR": str(runtime), "CONSOLIDATE_DBT_SERVER_IDLE": idle}
        finished(invocation(target, tmp_path / "state", ["parse"], "worker", environment))
        assert wait_for(lambda: server_sockets(runtime), 30, step=0.05)
        path, = server_sockets(runtime)
        server = server_pid(path)
        if end == "unlinks":   # as when another server takes its place
            path.unlink()
        assert wait_for(lambda pid=server: gone(pid), 30, step=0.1), f"the server outlived its idle time or socket ({end})"
        assert not path.exists()

    # a folder others may write to is never used: no server is left there, and none is connected to
    shared = tmp_path / "shared" / f"consolidate-{os.getuid()}"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    for _ in range(2):
        started, outcome = finished(invocation(target, tmp_path / "state", ["parse"], "worker",
                                               {"XDG_RUNTIME_DIR": str(shared.parent)}))
        assert started["kind"] == "ForkedWorker" and outcome["success"]
    assert server_sockets(shared.parent) == []


def test_the_servers_code_key_changes_with_any_module_of_the_tool(tmp_path, monkeypatch):
    copy = tmp_path / "loader"
    for path in dbt_server.LOADER.rglob("*.py"):
        (copy / path.relative_to(dbt_server.LOADER)).parent.mkdir(parents=True, exist_ok=True)
        (copy / path.relative_to(dbt_server.LOADER)).write_bytes(path.read_bytes())
    monkeypatch.setattr(dbt_server, "LOADER", copy)
    before = dbt_server.code_key()
    assert dbt_server.code_key() == before
    module = copy / "load" / "load.py"
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1))
    assert dbt_server.code_key() != before


def test_a_process_that_ends_while_its_stat_is_read_is_gone(monkeypatch):
    """The race CI met: the worker exits between the open of /proc/PID/stat and its read, which then fails
    with ESRCH. Forced here in that order, on a real process."""
    process = subprocess.Popen(["sleep", "30"])
    real_read_text = Path.read_text

    def read_while_the_process_ends(path, *arguments, **options):
        if path == Path(f"/proc/{process.pid}/stat"):
            with open(path) as stat_file:
                process.kill()
                process.wait()
                return stat_file.read()
        return real_read_text(path, *arguments, **options)

    monkeypatch.setattr(Path, "read_text", read_while_the_process_ends)
    try:
        assert gone(process.pid)
    finally:
        if process.poll() is None:  # gone() no longer reads the stat through Path.read_text
            process.kill()
            process.wait()


def test_a_warm_up_writes_nothing_to_the_callers_output_even_past_a_redirection():
    """dbt's logger keeps the stream it found as it started: a warm-up interrupted as its caller exits logged
    its traceback onto the caller's stdout (a --json document). Inside output_discarded nothing reaches
    file descriptors 1 and 2, whichever way it is written; after it, output flows again."""
    script = (
        "import logging, os, sys\n"
        "from loader.transform.dbt_process import output_discarded\n"
        "held = logging.StreamHandler(sys.stdout)\n"
        "logger = logging.getLogger('dbt-like'); logger.addHandler(held)\n"
        "with output_discarded():\n"
        "    print('print'); logger.warning('logger'); os.write(1, b'fd 1'); os.write(2, b'fd 2')\n"
        "    sys.stderr.write('stderr')\n"
        "print('after')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("after\n", "")
