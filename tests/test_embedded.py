# SPDX-License-Identifier: Apache-2.0
"""The embedded Tansu broker process: it serves Kafka clients and never outlives its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from broker.kafka.embedded import EmbeddedKafka

pytestmark = pytest.mark.kafka


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split()[2] != "Z"


def test_start_serve_stop() -> None:
    with EmbeddedKafka() as kafka:
        meta = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
        assert meta.brokers
        proc = kafka._proc
        assert proc is not None
    assert proc.poll() is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_broker_dies_with_a_killed_owner() -> None:
    code = (
        "import os, time\n"
        "from broker.kafka.embedded import EmbeddedKafka\n"
        "k = EmbeddedKafka().start()\n"
        "print(k._proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    tansu_pid = int(owner.stdout.readline())
    assert _alive(tansu_pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    deadline = time.monotonic() + 10
    while _alive(tansu_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(tansu_pid), "the broker outlived the process that started it"
