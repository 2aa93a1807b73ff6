"""A process that keeps dbt imported, so that the next command's dbt worker starts ready.

Importing dbt takes 2.4 s of CPU on a 2-core machine, and a one-shot `sync` waited for it: under the
command's own start-up it was the longest part of the sync's critical path. So the first worker a command
forks (loader/transform/dbt_process.py), once it has imported dbt, forks a copy of itself that stays: it
detaches (its own session, standard streams on /dev/null, every inherited descriptor closed) and listens
on a Unix socket. A later command connects instead of forking its own worker; the server forks a child
for it, ready at once, which runs that command's invocations exactly as its own worker would:

- it takes the command's standard output and error (passed over the socket), working directory and whole
  environment;
- it answers only a process of the same user (the socket's folder is the user's own, mode 0700, and the
  peer's credentials are checked);
- it ends with the command: when the command's end of the socket closes (its exit, a kill -9 included),
  the child interrupts itself as a Ctrl-C of the command interrupts its worker (dbt cancels its queries),
  and kills itself if it has not ended 10 s later.

The server runs the code of the command that started it, so it is found by a key of that code: the
interpreter, the versions of dbt's packages and every module file of this package (path, size and
modification time). A command whose code differs finds no server and starts its own. The
server ends after IDLE_SECONDS without a connection, or when another server took its socket.
`CONSOLIDATE_DBT_SERVER=off` turns it off: each command forks and imports as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing.util
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from loader.transform import cache_files

SWITCH_VARIABLE = "CONSOLIDATE_DBT_SERVER"
IDLE_VARIABLE = "CONSOLIDATE_DBT_SERVER_IDLE"
IDLE_SECONDS = 900.0
LOADER = Path(__file__).resolve().parent.parent
HELLO = b"consolidate-dbt"


def enabled() -> bool:
    return os.environ.get(SWITCH_VARIABLE, "on").strip().lower() not in ("0", "off", "no", "false")


def code_key() -> str:
    """What a server must share with a command to serve it: the interpreter, dbt's packages and this
    package's module files."""
    parts = [sys.executable, *cache_files.dbt_versions()]
    for path in sorted(LOADER.rglob("*.py")):
        status = path.stat()
        parts.append(f"{path}:{status.st_size}:{status.st_mtime_ns}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def address() -> Path | None:
    """The server's socket for this code, in a folder that is the user's own (None when there is none)."""
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"consolidate-{os.getuid()}"
    if not cache_files.private_folder(folder):
        return None
    with contextlib.suppress(OSError):
        folder.chmod(0o700)
    return folder / f"dbt-{code_key()}.sock"


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """`path` as an address to bind or connect to: a Unix socket's address holds at most 107 bytes, so a
    longer one is reached through a descriptor of its folder (/proc/self/fd/N/name)."""
    if len(os.fsencode(path)) <= 100:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def peer_credentials(connection: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)


def connect(timeout: float = 5.0) -> tuple[Connection, int] | None:
    """A served worker for this process: the connection to it and its pid, or None (no server for this
    code, or it did not answer in `timeout` seconds)."""
    if not enabled():
        return None
    path = address()
    if path is None or not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with socket_address(path) as reachable:
            sock.connect(reachable)
        if peer_credentials(sock)[1] != os.getuid():
            raise OSError("the dbt server is another user's")
        socket.send_fds(sock, [HELLO], [sys.stdout.fileno(), sys.stderr.fileno()])
        sock.settimeout(None)
    except OSError:
        sock.close()
        return None
    connection = Connection(sock.detach())
    try:
        connection.send({"cwd": os.getcwd(), "environ": dict(os.environ), "umask": current_umask(),
                         "streams": [(stream.encoding, stream.errors) for stream in (sys.stdout, sys.stderr)]})
        if not connection.poll(timeout):
            raise OSError("the dbt server did not answer")
        return connection, connection.recv()
    except (OSError, EOFError):
        connection.close()
        return None


def current_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def spawn(serve: Callable[[Connection], None]) -> None:
    """From a worker that has just imported dbt (single-threaded, before its first invocation): leave a
    server behind, a copy of this process, that serves later commands with `serve`."""
    if not enabled() or threading.active_count() != 1:
        return
    path = address()
    if path is None:
        return
    first = os.fork()
    if first:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(first, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        detach()
        listen(path, serve)
    finally:
        os._exit(0)


def detach() -> None:
    """Standard streams on /dev/null and no other inherited descriptor: the server must not hold a pipe
    its first command's caller waits on, nor that command's end of its worker's pipe."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        os.dup2(devnull, descriptor)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped as they end


def listen(path: Path, serve: Callable[[Connection], None]) -> None:
    """Bind `path` (replacing a server there before) and fork a served worker for each connection."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    with socket_address(temporary) as reachable:
        listener.bind(reachable)
    temporary.chmod(0o600)
    listener.listen(16)
    os.replace(temporary, path)
    idle = float(os.environ.get(IDLE_VARIABLE) or IDLE_SECONDS)
    name_process(f"consolidate dbt server ({path}, ends after {idle:g} s without a command)")
    inode = path.stat().st_ino
    listener.settimeout(min(idle, 5.0))
    last = time.monotonic()
    while True:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            if time.monotonic() - last > idle or not still_at(path, inode):
                break
            continue
        last = time.monotonic()
        if os.fork() == 0:
            listener.close()
            served(connection, serve)
        connection.close()
    if still_at(path, inode):
        with contextlib.suppress(OSError):
            path.unlink()


def name_process(title: str) -> None:
    """What `ps` shows for this process: a fork keeps the command line of the command it came from,
    which would show a finished `consolidate sync ...` as still running. Only cosmetic: never fatal."""
    with contextlib.suppress(Exception):
        import setproctitle

        setproctitle.setproctitle(title)


def still_at(path: Path, inode: int) -> bool:
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False


def served(sock: socket.socket, serve: Callable[[Connection], None]) -> None:
    """A forked child of the server: take the command's streams, directory and environment, tell it this
    pid, then `serve` it (which returns when the command closes its end, or interrupts it with SIGUSR1)."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        caller, uid, _ = peer_credentials(sock)
        if uid != os.getuid():
            return
        message, descriptors, _, _ = socket.recv_fds(sock, len(HELLO), 2)
        if message != HELLO or len(descriptors) != 2:
            return
        for target, received in zip((1, 2), descriptors):
            os.dup2(received, target)
            os.close(received)
        connection = Connection(sock.detach())
        name_process(f"consolidate dbt worker (served to pid {caller})")
        hello = connection.recv()
        os.chdir(hello["cwd"])
        os.environ.clear()
        os.environ.update(hello["environ"])
        os.umask(hello["umask"])
        (out_encoding, out_errors), (err_encoding, err_errors) = hello["streams"]
        sys.stdout = sys.__stdout__ = open(1, "w", encoding=out_encoding, errors=out_errors, closefd=False,
                                           buffering=1)
        sys.stderr = sys.__stderr__ = open(2, "w", encoding=err_encoding, errors=err_errors, closefd=False,
                                           buffering=1)
        threading.Thread(target=end_with_caller, args=(connection.fileno(),), name="caller", daemon=True).start()
        connection.send(os.getpid())
        serve(connection)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        # what a process ending normally runs: multiprocessing's finalizers release the semaphores dbt took
        multiprocessing.util._exit_function()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        os._exit(0)


def end_with_caller(descriptor: int, grace: float = 10.0) -> None:
    """As the caller's end of the socket closes (it exited, or was killed): interrupt this process as the
    caller's Ctrl-C would (dbt cancels its queries), and kill it if it has not ended `grace` seconds later."""
    poller = select.poll()
    poller.register(descriptor, select.POLLRDHUP)
    poller.poll()
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(grace)
    os.kill(os.getpid(), signal.SIGKILL)
