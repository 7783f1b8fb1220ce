# SPDX-License-Identifier: Apache-2.0
"""A real ``redis-server`` on a free loopback port, as a pytest fixture.

Import :func:`redis_server` into a test module (or ``conftest.py``) to use it.
The server keeps nothing on disk (``--save '' --appendonly no``, working
directory in the test's ``tmp_path``).  :func:`persistent_redis_server` is the
same with an append-only file fsynced at every write (``--appendonly yes
--appendfsync always``), so :meth:`RedisProcess.restart` brings it back on the
same port with its data.  Tests may call :meth:`RedisProcess.stop` themselves
to simulate an outage; the fixture stops it at teardown in any case.  When the
binary is not on ``PATH`` the test is skipped with a message saying so.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 10.0


@dataclass
class RedisProcess:
    """A running ``redis-server`` started by the fixture."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    command: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self) -> None:
        """Stop the server if it runs, start it again on the same port with the same options.

        A server started with ``persistent=True`` comes back with its data (its
        append-only file is replayed before it answers PING).

        Raises
        ------
        RuntimeError
            The server exited or did not answer within 10 s (its log is quoted).
        """
        if not self.command:
            raise RuntimeError("this RedisProcess was not started by start_redis: no command to restart")
        self.stop()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(list(self.command), stdout=log, stderr=subprocess.STDOUT)
        if not _wait_ready(self):
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server did not restart on port {self.port}; last log:\n{tail}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait_ready(server: RedisProcess) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and server.process.poll() is None:
        if _ping(server.port):
            return True
        time.sleep(0.02)
    return False


def start_redis(workdir: Path, *, persistent: bool = False) -> RedisProcess:
    """Start ``redis-server`` on a free loopback port and wait until it answers PING.

    Parameters
    ----------
    workdir
        Working directory of the server (its log, and its data when persistent).
    persistent
        Keep the data in an append-only file in ``workdir``, fsynced at every
        write, so that :meth:`RedisProcess.restart` keeps them.

    Raises
    ------
    RuntimeError
        The server exited or did not answer within 10 s (its log is quoted).
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server")
    last_log = ""
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        log_path = workdir / f"redis-{port}.log"
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        command = (exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *aof, "--dir", str(workdir))
        with log_path.open("wb") as log:
            proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT)
        server = RedisProcess(port, proc, log_path, command)
        if _wait_ready(server):
            return server
        server.stop()
        last_log = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"redis-server did not start; last log:\n{last_log}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh ``redis-server`` for one test; skipped when the binary is absent."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found on PATH (Debian: apt-get install redis-server)")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = start_redis(workdir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def persistent_redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh ``redis-server`` whose data survive :meth:`RedisProcess.restart` (AOF, fsync always)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found on PATH (Debian: apt-get install redis-server)")
    workdir = tmp_path / "redis-persistent"
    workdir.mkdir()
    server = start_redis(workdir, persistent=True)
    try:
        yield server
    finally:
        server.stop()
