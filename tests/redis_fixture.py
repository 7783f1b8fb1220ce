# SPDX-License-Identifier: Apache-2.0
"""A real ``redis-server`` on a free loopback port, as a pytest fixture.

Import :func:`redis_server` into a test module (or ``conftest.py``) to use it.
The server keeps nothing on disk (``--save '' --appendonly no``, working
directory in the test's ``tmp_path``).  Tests may call
:meth:`RedisProcess.stop` themselves to simulate an outage; the fixture stops
it at teardown in any case.  When the binary is not on ``PATH`` the test is
skipped with a message saying so.
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


def start_redis(workdir: Path) -> RedisProcess:
    """Start ``redis-server`` on a free loopback port and wait until it answers PING.

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
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(workdir)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        server = RedisProcess(port, proc, log_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _ping(port):
                return server
            time.sleep(0.02)
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
