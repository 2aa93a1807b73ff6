"""Invoking dbt: in this process, or in a worker process that gets ready while the caller loads.

A process's first dbt invocation spends about two seconds on dbt's own set-up before its first node
(importing dbt alone takes 1.4 s; then generating its serialization code and reading the parsed project);
later invocations in the same process skip most of it. A one-shot `sync` builds once, so that set-up was
about a third of its time. So a command that builds forks a worker as it starts (`start_worker`, from
loader.cli.main before the rest of the tool is imported): the worker imports dbt on the other core while
the command imports, discovers and loads; `start_ahead` (before the load) has it parse the project once,
a warm-up; and the build is its second invocation. It serves every later invocation of the process too
(each `sync --watch` cycle's). `invoke` runs an invocation in the worker when there is one, else here.

The worker is forked only while the caller is a single thread (forking copies no lock another thread
holds), and only when sys.stdout and sys.stderr are the process's own: the worker writes dbt's output to
the file descriptors it shares with the caller, which a test's capture of sys.stdout would not see.
Otherwise dbt runs in this process, its import started in a thread.

Once it has imported dbt, a forked worker leaves a copy of itself behind, the dbt server
(loader/transform/dbt_server.py); a later command's worker is then forked by that server, dbt already
imported, instead of by the command.

The worker ignores SIGINT: the caller decides (a first Ctrl-C lets a `sync --watch` cycle finish) and
interrupts it with SIGUSR1, which dbt answers as it answers Ctrl-C, by cancelling its queries. It dies
with the caller (PR_SET_PDEATHSIG; a served worker, as the caller's end of its socket closes): a kill -9
of the caller never leaves a build running.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from loader.transform import dbt_server, jinja_cache, schema_cache

PR_SET_PDEATHSIG = 1


@dataclass
class Invocation:
    """What a dbt invocation leaves for its caller (it crosses from the worker by pickle)."""

    success: bool
    exception: str | None  # dbt itself failed (bad arguments, no connection)
    results: list[tuple[str, str, str | None]]  # per node: unique_id, status, message
    invocation_id: str


@contextlib.contextmanager
def temporary_environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` set in the process's environment while the block runs, then restored as they were."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def dbt_argv(arguments: list[str]) -> Iterator[None]:
    """dbt records the process's command line (its logs, `invocation_command` in run_results.json),
    which may hold `--dsn` and its password: while dbt runs, the command line is dbt's own arguments."""
    original = sys.argv
    sys.argv = ["dbt", *arguments]
    try:
        yield
    finally:
        sys.argv = original


def invoke_here(arguments: list[str], environment: dict[str, str], run_results: Path | None,
                to_stderr: bool) -> Invocation:
    """One dbt invocation in this process, with `environment` set while it runs; run_results.json written
    to `run_results` (for a command run with --no-write-json). `to_stderr`: dbt's output goes to stderr."""
    while IMPORTING:
        IMPORTING.pop().join()
    import_dbt()
    from dbt.cli.main import dbtRunner
    from dbt_common.invocation import get_invocation_id

    if environment.get(jinja_cache.FOLDER_VARIABLE):
        jinja_cache.install(Path(environment[jinja_cache.FOLDER_VARIABLE]))
    if environment.get(schema_cache.FOLDER_VARIABLE):
        schema_cache.install(Path(environment[schema_cache.FOLDER_VARIABLE]))
    output = contextlib.redirect_stdout(sys.stderr) if to_stderr else contextlib.nullcontext()
    with temporary_environment(environment), dbt_argv(arguments), output:
        result = dbtRunner().invoke(arguments)
    if isinstance(result.exception, KeyboardInterrupt):  # dbt makes Ctrl-C a failed result: it is Ctrl-C
        raise KeyboardInterrupt
    if run_results is not None and hasattr(result.result, "write"):
        result.result.write(str(run_results))
    # a node's result (build, run, test...) names its node; run-operation's names only its macro
    nodes = [(getattr(getattr(node, "node", None), "unique_id", None) or getattr(node, "unique_id", None) or "",
              str(node.status), node.message)
             for node in getattr(result.result, "results", None) or []]
    return Invocation(success=bool(result.success),
                      exception=None if result.exception is None else str(result.exception),
                      results=nodes, invocation_id=get_invocation_id())


def import_dbt() -> None:
    """Import dbt, its serialization code compiled as each class is first used: mashumaro compiles every
    dataclass's to_dict and from_dict as the class is defined, most of them for classes a build never
    serializes (0.5-0.9 s of the import on a 2-core machine)."""
    if "dbt.cli.main" not in sys.modules:
        import mashumaro.config

        mashumaro.config.BaseConfig.lazy_compilation = True
    importlib.import_module("dbt.cli.main")


# dbt imports started in a thread, which invoke_here waits for.
IMPORTING: list[threading.Thread] = []


class WorkerGone(RuntimeError):
    """The worker process exited before answering."""


class Worker:
    """A process that runs this process's dbt invocations, one at a time: forked by this process (ForkedWorker)
    or by the dbt server (ServedWorker)."""

    connection: Connection
    pid: int
    warmed_up = False

    def alive(self) -> bool:
        raise NotImplementedError

    def exit_code(self) -> int | None:
        return None

    def wait(self, timeout: float) -> None:
        """Wait at most `timeout` seconds for the worker to end."""
        raise NotImplementedError

    def warm_up(self, arguments: list[str], environment: dict[str, str]) -> None:
        """Have the worker run `arguments` (a parse) once, its output discarded, before the next
        invocation."""
        self.connection.send(("warm up", (arguments, environment, None, False)))
        self.warmed_up = True

    def invoke(self, arguments: list[str], environment: dict[str, str], run_results: Path | None,
               to_stderr: bool) -> Invocation:
        try:
            self.connection.send(("invoke", (arguments, environment, run_results, to_stderr)))
            return self.connection.recv()
        except (EOFError, OSError) as error:
            self.wait(timeout=5)
            WORKERS.clear()
            raise WorkerGone(f"dbt's worker process exited (code {self.exit_code()}) before its "
                             "invocation finished") from error
        except BaseException:
            self.interrupt()
            raise

    def interrupt(self) -> None:
        """Interrupt the invocation under way (as Ctrl-C would: dbt cancels its queries) and let the
        worker end; it is not used again."""
        WORKERS.clear()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGUSR1)
        self.connection.close()
        self.wait(timeout=30)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class ForkedWorker(Worker):
    """A worker this process forks: it imports dbt itself (and leaves a dbt server behind for later
    commands, loader/transform/dbt_server.py)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.connection, worker_end = context.Pipe()
        self.process = context.Process(target=serve, args=(worker_end, self.connection, os.getpid()), name="dbt",
                                       daemon=True)
        self.process.start()
        self.pid = self.process.pid
        worker_end.close()
        # As this process exits, wherever the worker is (a warm-up for a build that was skipped, or waiting):
        # it ends on its own and releases the semaphores dbt took, of which a kill would leave a warning.
        atexit.register(self.interrupt)

    def alive(self) -> bool:
        return self.process.is_alive()

    def exit_code(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float) -> None:
        self.process.join(timeout=timeout)


class ServedWorker(Worker):
    """A worker the dbt server forked for this process, dbt already imported."""

    def __init__(self, connection: Connection, pid: int) -> None:
        self.connection, self.pid = connection, pid
        atexit.register(self.interrupt)

    def alive(self) -> bool:
        return not gone(self.pid)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.01)


def gone(pid: int) -> bool:
    """Whether `pid` has exited: no such process, or a zombie not yet reaped. A process that ends while
    its stat is read makes the read fail with ESRCH (ProcessLookupError): gone as well."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


class Interrupted:
    """The worker's SIGUSR1 handler: KeyboardInterrupt in dbt, and the worker ends after it. Only the first
    signal interrupts: a second one (a served worker's caller closing its end as it interrupts) must not
    break into dbt's cancelling of its queries."""

    def __init__(self) -> None:
        self.requested = False

    @classmethod
    def install(cls) -> Interrupted:
        """The worker's signals: SIGINT ignored (the caller decides), SIGUSR1 handled by a new instance."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupted = cls()
        signal.signal(signal.SIGUSR1, interrupted)
        return interrupted

    def __call__(self, signum, frame) -> None:
        if self.requested:
            return
        self.requested = True
        raise KeyboardInterrupt


def serve(connection: Connection, callers_end: Connection, parent: int) -> None:
    """The forked worker: dies with `parent`, imports dbt, leaves a dbt server behind, then serves."""
    callers_end.close()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return
    interrupted = Interrupted.install()
    try:
        import_dbt()
    except KeyboardInterrupt:
        return
    # dbt's modules never become garbage: not scanned by the collections to come (the caller imports with
    # the collector off, loader/cli/__init__.py, and this process inherits that)
    gc.freeze()
    gc.enable()
    dbt_server.spawn(serve_requests)
    serve_requests(connection, interrupted)


@contextlib.contextmanager
def output_discarded() -> Iterator[None]:
    """This process's stdout and stderr, file descriptors included, sent nowhere while the block runs: dbt's
    logger writes to the streams it found as it started, past contextlib.redirect_stdout, and a warm-up the
    caller interrupts (it exits) logs dbt's traceback onto the caller's stdout (its --json document)."""
    with contextlib.suppress(ValueError, OSError):
        sys.stdout.flush()
        sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    nowhere = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(nowhere, 1)
        os.dup2(nowhere, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (*saved, nowhere):
            os.close(descriptor)


def serve_requests(connection: Connection, interrupted: Interrupted | None = None) -> None:
    """Run what the caller sends until it closes its end or interrupts the worker (SIGUSR1): warm-ups
    (output discarded) and invocations (answered)."""
    if interrupted is None:
        interrupted = Interrupted.install()
    try:
        while not interrupted.requested:
            kind, request = connection.recv()
            if kind == "warm up":
                with output_discarded(), contextlib.suppress(Exception):
                    invoke_here(*request)
                continue
            try:
                answer = invoke_here(*request)
            except Exception as error:  # the caller reports it as dbt failing
                answer = Invocation(success=False, exception=f"{type(error).__name__}: {error}", results=[],
                                    invocation_id="")
            if not interrupted.requested:
                connection.send(answer)
    except (EOFError, OSError, KeyboardInterrupt):
        return


# The worker of this process, once started.
WORKERS: list[Worker] = []


def can_fork() -> bool:
    return (hasattr(os, "fork") and threading.active_count() == 1 and "dbt.cli.main" not in sys.modules
            and sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__)


def running_worker() -> Worker | None:
    if WORKERS and WORKERS[0].alive():
        return WORKERS[0]
    WORKERS.clear()
    return None


def start_worker() -> None:
    """Start the worker now, when it can be: served by the dbt server when there is one for this code
    (dbt already imported), else forked (it starts importing dbt)."""
    if running_worker() is None and can_fork():
        served = dbt_server.connect()
        WORKERS.append(ForkedWorker() if served is None else ServedWorker(*served))


def start_ahead(warm_up: list[str], environment: dict[str, str]) -> None:
    """Before other work (a load), get dbt ready for the build that follows: the worker (started now
    when it is not yet) warmed up with the `warm_up` invocation (a parse with the build's profile and
    target path), or else dbt's import in a thread. Nothing more when dbt is already imported here."""
    start_worker()
    worker = running_worker()
    if worker is not None:
        if not worker.warmed_up:
            worker.warm_up(warm_up, environment)
        return
    if "dbt.cli.main" in sys.modules:
        return
    thread = threading.Thread(target=import_dbt, name="import-dbt", daemon=True)
    thread.start()
    IMPORTING.append(thread)


def invoke(arguments: list[str], environment: dict[str, str], run_results: Path | None,
           to_stderr: bool) -> Invocation:
    """A dbt invocation: by the worker when one is running, else in this process."""
    worker = running_worker()
    if worker is not None:
        return worker.invoke(arguments, environment, run_results, to_stderr)
    return invoke_here(arguments, environment, run_results, to_stderr)
