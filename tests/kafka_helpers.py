# SPDX-License-Identifier: Apache-2.0
"""Reading topics back and running workers in tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from broker.config import Settings
from broker.kafka.clients import client_config


@dataclass(frozen=True)
class Record:
    """One message read back from a topic."""

    topic: str
    partition: int
    offset: int
    value: bytes
    headers: dict[str, str]


def topics_with_prefix(settings: Settings, prefix: str) -> list[str]:
    """Existing topics whose name starts with ``prefix``."""
    admin = AdminClient(client_config(settings, "admin"))
    return sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix))


def read_topic(settings: Settings, topic: str, timeout_s: float = 30.0, idle_s: float = 2.0) -> list[Record]:
    """Every message of ``topic`` from the beginning to its current end.

    Tansu's high watermark (ListOffsets LATEST) can lag behind the last
    offset of batched produces, so the watermark is only a lower bound: we
    also read until the topic has been idle for ``idle_s`` seconds.
    """
    conf = client_config(settings, "consumer", **{"group.id": f"reader-{uuid.uuid4().hex[:8]}"})
    c = Consumer(conf)
    meta = c.list_topics(topic, timeout=10).topics[topic]
    ends = {}
    for p in meta.partitions:
        _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends[p] = hi
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[Record] = []
    pos = dict.fromkeys(ends, 0)
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while time.monotonic() < deadline and (
        any(pos[p] < ends[p] for p in ends) or time.monotonic() - last < idle_s
    ):
        for m in c.consume(1000, 0.2):
            last = time.monotonic()
            if m.error():
                continue
            p = m.partition() or 0
            pos[p] = (m.offset() or 0) + 1
            hdr = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
            out.append(Record(topic, p, m.offset() or 0, m.value() or b"", hdr))
    c.close()
    assert all(pos[p] >= ends[p] for p in ends), f"could not read {topic} to its end"
    return out


def run_until(worker_run: Callable[[], None], stop: Callable[[], None], done: Callable[[], bool],
              timeout_s: float = 120.0) -> None:
    """Run a worker in a thread until ``done()``; then stop it and join."""
    t = threading.Thread(target=worker_run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.1)
    stop()
    t.join(30)
    assert done(), "worker did not process every message in time"
