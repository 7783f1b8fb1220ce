# SPDX-License-Identifier: Apache-2.0
"""The live feed: a background Kafka consumer keeping the most recent alerts.

The feed reads ``<prefix>.alerts`` directly, so it keeps working when the
archive is down.  It uses manual partition assignment (no consumer group, no
committed offsets): at start it reads back the last ``capacity`` messages of
each partition, then follows new ones.  When the cluster is unreachable, or
the topic does not exist yet, it retries every few seconds and reports why in
:attr:`FeedSnapshot.error`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from broker.avro import decode_alert
from broker.config import Settings
from broker.errors import BrokerError, KafkaError
from broker.kafka.clients import client_config
from broker.model import Alert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedItem:
    """One alert of the feed and when it was published on the topic (ms since the epoch, UTC)."""

    alert: Alert
    timestamp_ms: int
    partition: int
    offset: int


@dataclass(frozen=True)
class FeedSnapshot:
    """The state of the feed at one moment.

    Attributes
    ----------
    items
        The most recent alerts, newest first.
    received
        Messages received since the feed started (read-back included).
    connected
        Whether partitions of the topic are assigned and being read.
    error
        Why the feed is not connected (or the last decode error), if anything.
    bootstrap_servers, topic
        Where it reads.
    """

    items: tuple[FeedItem, ...]
    received: int
    connected: bool
    error: str | None
    bootstrap_servers: str | None
    topic: str


class LiveFeed:
    """Follows the alerts topic in a daemon thread.

    Parameters
    ----------
    settings
        Called on every (re)connection for the current settings: the cluster
        address may appear later (``mmbroker up`` started after the dashboard).
    capacity
        Number of alerts kept (and read back at start).
    retry_s
        Pause between connection attempts (s).
    """

    def __init__(self, settings: Callable[[], Settings], capacity: int = 500, retry_s: float = 3.0) -> None:
        self._settings = settings
        self.capacity = capacity
        self.retry_s = retry_s
        self._items: deque[FeedItem] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._received = 0
        self._connected = False
        self._error: str | None = "not started"
        self._bootstrap: str | None = None
        self._topic = ""
        self._next: dict[int, int] = {}  # partition -> next offset to read (resumed after a reconnection)
        self._thread: threading.Thread | None = None

    def start(self) -> LiveFeed:
        """Start the consumer thread (once)."""
        if self._thread is None:
            try:
                self._target()
                self._set(False, "connecting")
            except BrokerError as exc:
                self._set(False, str(exc))
            self._thread = threading.Thread(target=self._run, name="mmbroker-ui-feed", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> FeedSnapshot:
        """The current feed, newest first."""
        with self._lock:
            items = sorted(self._items, key=lambda i: (i.timestamp_ms, i.partition, i.offset), reverse=True)
            return FeedSnapshot(tuple(items), self._received, self._connected, self._error, self._bootstrap,
                                self._topic)

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` alerts are held or ``timeout`` s passed; whether they are."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._items) >= n:
                    return True
            time.sleep(0.05)
        with self._lock:
            return len(self._items) >= n

    # ---- thread

    def _set(self, connected: bool, error: str | None) -> None:
        with self._lock:
            self._connected, self._error = connected, error

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except BrokerError as exc:
                self._set(False, str(exc))
            except Exception as exc:  # librdkafka errors: report, retry
                self._set(False, f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.retry_s)

    def _consumer(self, settings: Settings) -> Consumer:
        def on_error(err: Any) -> None:
            # librdkafka reconnects by itself; "all brokers down" means nothing can arrive until it does
            down = err.code() == RdKafkaError._ALL_BROKERS_DOWN
            with self._lock:
                self._connected = self._connected and not down
                self._error = f"Kafka: {err}"

        conf: dict[str, Any] = client_config(
            settings, "consumer", **{"group.id": "mmbroker-ui", "enable.partition.eof": "false"}
        )
        conf["error_cb"] = on_error
        return Consumer(conf)

    def _target(self) -> Settings:
        """The current settings (topic and cluster recorded); KafkaError if no cluster is known."""
        settings = self._settings()
        with self._lock:
            self._bootstrap = settings.bootstrap_servers or None
            self._topic = settings.alerts_topic
        if not settings.bootstrap_servers and not settings.gcn_client_id and "bootstrap.servers" not in settings.kafka:
            raise KafkaError("no Kafka cluster: start 'mmbroker up' or set KAFKA_BOOTSTRAP_SERVERS")
        return settings

    def _follow(self) -> None:
        settings = self._target()
        consumer = self._consumer(settings)
        try:
            self._assign(consumer, settings.alerts_topic)
            self._set(True, None)
            while not self._stop.is_set():
                m = consumer.poll(0.5)
                if m is None:
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == RdKafkaError._PARTITION_EOF:
                        continue
                    if err.fatal():
                        raise KafkaError(f"reading {settings.alerts_topic}: {err}")
                    self._set(self._connected, f"Kafka: {err}")  # transient: librdkafka retries
                    continue
                partition, offset = m.partition() or 0, m.offset() or 0
                with self._lock:
                    self._connected = True
                    if offset < self._next.get(partition, 0):
                        continue  # read again after a reconnection: the feed has it
                    self._next[partition] = offset + 1
                try:
                    alert = decode_alert(m.value() or b"")
                except BrokerError as exc:
                    self._set(True, f"undecodable message {m.topic()}[{partition}]@{offset}: {exc}")
                    continue
                _, ts = m.timestamp()
                item = FeedItem(alert, int(ts) if ts and ts > 0 else int(time.time() * 1000), partition, offset)
                with self._lock:
                    self._items.append(item)
                    self._received += 1
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer, topic: str) -> None:
        """Assign every partition of ``topic``: where the feed stopped (after a reconnection), else from
        ``capacity`` messages before its end."""
        md = consumer.list_topics(topic, timeout=5.0)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            why = t.error if t is not None and t.error is not None else "no partitions"
            raise KafkaError(f"topic {topic} is not available yet ({why})")
        assignment = []
        for p in sorted(t.partitions):
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5.0)
            start = max(lo, hi - self.capacity) if hi >= 0 else OFFSET_END
            with self._lock:
                resume = self._next.get(p)
            if resume is not None and resume >= lo:
                start = resume
            assignment.append(TopicPartition(topic, p, start))
        consumer.assign(assignment)
