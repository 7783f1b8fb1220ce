# SPDX-License-Identifier: Apache-2.0
"""The worker: consume a micro-batch, normalize, run the stages, publish, archive, commit.

Delivery guarantee: at-least-once on the output topics, exactly-once in the
archive.  Offsets of a batch are committed only after every output message of
the batch has been acknowledged by Kafka and the batch is archived; a crash at
any point re-delivers the uncommitted batch, whose alerts the archive then
ignores (their broker ids are already stored).

A notice delivered twice (same event, revision and bytes: the same broker
id) is processed once: broker ids are marked done in the shared state store
after the batch is published and archived, and a marked one is skipped
(counted in ``mmbroker_duplicates``).  A crash before the mark re-processes
the batch: at-least-once on the topics, and the archive absorbs it.

Bad input never stops the worker: every message that does not become an alert
goes to ``<prefix>.dlq`` with its original bytes and headers naming the reason
and its source coordinates.  Kafka and archive failures propagate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from broker import __version__
from broker.archive import Archive, ArchivedAlert
from broker.avro import coincidence_fingerprint, encode_alert, encode_coincidence, schema_fingerprint
from broker.config import Settings
from broker.errors import KafkaError
from broker.kafka.clients import ensure_topics, make_consumer, make_producer
from broker.metrics import WorkerMetrics
from broker.model import Alert, Coincidence, SourceMessage
from broker.normalize import DeadLetter, Normalizer, PendingBatch
from broker.pipeline import Pipeline, build_pipeline
from broker.state import StateStore, state_from_settings

log = logging.getLogger(__name__)

#: Commit errors after which the batch will simply be re-delivered to the
#: partition's new owner (the archive absorbs the duplicates).
_REBALANCE_CODES = {
    RdKafkaError.REBALANCE_IN_PROGRESS,
    RdKafkaError.ILLEGAL_GENERATION,
    RdKafkaError.UNKNOWN_MEMBER_ID,
    RdKafkaError._ASSIGNMENT_LOST,
}

#: Largest DLQ value we try before keeping only a prefix of an oversized payload.
_DLQ_TRUNCATE_BYTES = 1024 * 1024


@dataclass
class BatchResult:
    """What one micro-batch did."""

    consumed: int = 0
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    coincidences: list[Coincidence] = field(default_factory=list)
    published: int = 0
    archived_new: int = 0
    committed: dict[tuple[str, int], int] = field(default_factory=dict)


def header_bytes(value: str | bytes | None) -> bytes:
    """A Kafka header value as bytes (librdkafka may give str or None)."""
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def message_headers(m: Message) -> list[tuple[str, bytes]]:
    """The headers of a consumed message as (name, bytes) pairs."""
    raw = m.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
    return [(str(p[0]), header_bytes(p[1])) for p in pairs]


def source_message(m: Message) -> SourceMessage:
    """The Kafka coordinates and bytes of a consumed message."""
    ts_type, ts = m.timestamp()
    headers = tuple(message_headers(m))
    return SourceMessage(
        topic=m.topic() or "",
        partition=m.partition() or 0,
        offset=m.offset() or 0,
        value=m.value() or b"",
        key=m.key(),
        timestamp_ms=ts if ts_type != 0 else None,
        headers=headers,
    )


class Worker:
    """One consumer-group member running the whole chain on micro-batches.

    Parameters
    ----------
    settings
        Process settings (topics, batch bounds, Kafka config).
    archive
        Where alerts are archived before offsets are committed.
    pipeline
        The stage chain; by default the one the settings ask for (:func:`build_pipeline`).
    metrics
        Prometheus metrics; a private registry by default.
    state
        Shared hot state (window, revisions, de-duplication); by default the
        one the settings ask for (``state_backend``), owned and closed by the worker.
    """

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        pipeline: Pipeline | None = None,
        metrics: WorkerMetrics | None = None,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        state: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.metrics = metrics or WorkerMetrics()
        self._own_state = state is None
        self.state = state if state is not None else state_from_settings(settings)
        self.pipeline = pipeline or build_pipeline(settings, self.metrics.registry, self.state)
        self._stop = threading.Event()
        self._known_topics: set[str] = set()
        self._ensure([settings.alerts_topic, settings.dlq_topic, settings.coincidence_topic])
        self.normalize = Normalizer(settings.max_message_bytes, settings.parse_processes)
        self.consumer = consumer or make_consumer(settings)
        self.producer = producer or make_producer(settings)
        self._delivery_errors: list[str] = []
        self._published: Counter[str] = Counter()
        self.assigned = threading.Event()
        """Set once the group has assigned this worker partitions (for callers in other threads)."""
        self.consumer.subscribe(list(settings.input_topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(partitions))
        self.assigned.set()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %d partitions", len(partitions))

    # Control ------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current batch, then stop (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    def run(self, on_batch: Callable[[BatchResult], None] | None = None) -> None:
        """Process batches until :meth:`request_stop`; then flush and close.

        With parse processes, a large batch is parsed in the pool while the
        previous one is published, archived and committed (offsets are still
        committed batch by batch, in order).  Small batches - the low-rate,
        low-latency case - are processed at once.
        """
        pending: PendingBatch | None = None

        def finish(p: PendingBatch) -> None:
            result = self._finish(p)
            if on_batch is not None and result.consumed:
                on_batch(result)

        try:
            while not self._stop.is_set():
                batch = self.poll_batch()
                nxt = self.normalize.submit(batch) if batch else None
                if pending is not None:
                    finish(pending)
                    pending = None
                if nxt is None:
                    continue
                if nxt.in_pool:
                    pending = nxt  # overlaps with the next poll and the previous batch's output
                else:
                    finish(nxt)
            if pending is not None:
                finish(pending)
        finally:
            self.close()

    def close(self) -> None:
        """Flush the producer and leave the consumer group."""
        self.producer.flush(10)
        self.consumer.close()
        self.normalize.close()
        self.pipeline.close()
        if self._own_state:
            self.state.close()

    # One batch ----------------------------------------------------------------
    def poll_batch(self) -> list[SourceMessage]:
        """Consume up to ``batch_size`` messages or for ``batch_timeout_ms``."""
        msgs = self.consumer.consume(self.settings.batch_size, self.settings.batch_timeout_ms / 1000.0)
        out: list[SourceMessage] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == RdKafkaError._PARTITION_EOF:
                    continue
                if err.code() == RdKafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.warning("input topic not available yet: %s", err)
                    continue
                raise KafkaError(f"consume failed: {err}")
            out.append(source_message(m))
        return out

    def _finish(self, pending: PendingBatch) -> BatchResult:
        """Wait for a batch's normalization; run the stages, publish, archive, commit."""
        batch = list(pending.batch)
        result = BatchResult(consumed=len(batch))
        for topic, n in Counter(src.topic for src in batch).items():
            self.metrics.consumed.labels(topic).inc(n)
        good, result.dead_letters = self.normalize.result(pending)
        good, result.duplicates = self._skip_duplicates(good)
        alerts = self.pipeline.run([a for _, a in good])
        result.alerts = alerts
        result.coincidences = [c for a in alerts for c in a.coincidences]
        result.dead_letters.extend(self._filter_dead_letters(good, alerts))
        items = [ArchivedAlert(a, s, encode_alert(a)) for (s, _), a in zip(good, alerts, strict=True)]
        result.published = self.publish(items, result.dead_letters, result.coincidences)
        result.archived_new = self.archive.write_batch(items)
        if result.coincidences:
            self.archive.write_coincidences(result.coincidences)
        self.metrics.archived.inc(result.archived_new)
        self._remember(alerts, result.coincidences)
        result.committed = self.commit(batch)
        self.metrics.batch_seconds.observe(time.perf_counter() - pending.started)
        return result

    def _skip_duplicates(
        self, good: list[tuple[SourceMessage, Alert]]
    ) -> tuple[list[tuple[SourceMessage, Alert]], int]:
        """Drop notices already processed (earlier batches, any worker) or repeated within this batch."""
        if not good:
            return good, 0
        done = self.state.seen({a.broker_id for _, a in good})
        out: list[tuple[SourceMessage, Alert]] = []
        here: set[str] = set()
        for src, a in good:
            if a.broker_id in done or a.broker_id in here:
                log.debug("skipping %s from %s: already processed", a.broker_id, src.coordinates)
                continue
            here.add(a.broker_id)
            out.append((src, a))
        skipped = len(good) - len(out)
        self.metrics.duplicates.inc(skipped)
        return out, skipped

    def _remember(self, alerts: list[Alert], coincidences: list[Coincidence]) -> None:
        """After publish and archive: tags each event went out with, coincidences, and the done marks."""
        tags: dict[str, set[str]] = {}
        for a in alerts:
            if a.tags:
                tags.setdefault(a.event_key, set()).update(a.tags)
        if tags:
            self.state.add_tags(tags)
        if coincidences:
            self.state.put_coincidences(coincidences)
        self.state.mark_done({a.broker_id for a in alerts})

    def _filter_dead_letters(self, good: list[tuple[SourceMessage, Alert]], alerts: list[Alert]) -> list[DeadLetter]:
        """Dead letters for the filters that failed on alerts of this batch (the alerts still go on)."""
        failures = self.pipeline.take_failures()
        if not failures:
            return []
        source = {a.broker_id: src for (src, _), a in zip(good, alerts, strict=True)}
        out = []
        for f in failures:
            src = source.get(f.broker_id)
            if src is None:
                log.error("filter %s failed on unknown alert %s: %s", f.filter, f.broker_id, f.reason)
                continue
            headers = (
                ("filter-name", f.filter.encode()),
                ("filter-version", f.version.encode()),
                ("broker-id", f.broker_id.encode()),
            )
            out.append(DeadLetter(src, "filter_error", f"filter {f.filter} {f.version}: {f.reason}", headers))
        return out

    # Output -------------------------------------------------------------------
    def _on_delivery(self, err: RdKafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, str | bytes | None]]
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)  # local queue full: serve deliveries, retry
        self._published[topic] += 1

    def _ensure(self, topics: Iterable[str]) -> None:
        missing = [t for t in topics if t not in self._known_topics]
        if missing:
            ensure_topics(self.settings, missing)
            self._known_topics.update(missing)

    def publish(
        self, items: list[ArchivedAlert], dead: list[DeadLetter], coincidences: Iterable[Coincidence] = ()
    ) -> int:
        """Produce alerts, tag copies, coincidences and dead letters; wait until all are acknowledged.

        Raises
        ------
        KafkaError
            If any message of the batch was not delivered (offsets then stay
            uncommitted and the batch is re-delivered).
        """
        s = self.settings
        self._ensure({s.tag_topic(t) for i in items for t in (*i.alert.tags, *i.alert.dropped_tags)})
        fp = schema_fingerprint()
        n = 0
        for item in items:
            src, alert, value = item.source, item.alert, item.encoded
            headers: list[tuple[str, str | bytes | None]] = [
                ("content-type", b"application/vnd.mmbroker.alert+avro"),
                ("avro-schema-fingerprint", fp),
                ("broker-id", alert.broker_id.encode()),
                ("event-key", alert.event_key.encode()),
                ("kind", alert.kind.encode()),
                ("source", src.coordinates.encode()),
            ]
            if src.timestamp_ms is not None:
                headers.append(("source-timestamp-ms", str(src.timestamp_ms).encode()))
            if alert.revision_state is not None:
                headers.append(("revision-state", alert.revision_state.encode()))
            if alert.kind == "retraction":
                headers.append(("retraction", b"true"))
            if alert.dropped_tags:
                headers.append(("dropped-tags", ",".join(alert.dropped_tags).encode()))
            key = alert.event_key.encode()
            for topic in (s.alerts_topic, *(s.tag_topic(t) for t in (*alert.tags, *alert.dropped_tags))):
                self._produce(topic, value, key, headers)
                n += 1
        cfp = coincidence_fingerprint()
        for c in coincidences:
            self._produce(
                s.coincidence_topic,
                encode_coincidence(c),
                c.coincidence_id.encode(),
                [
                    ("content-type", b"application/vnd.mmbroker.coincidence+avro"),
                    ("avro-schema-fingerprint", cfp),
                    ("coincidence-id", c.coincidence_id.encode()),
                    ("status", c.status.encode()),
                    ("rule", c.rule.encode()),
                ],
            )
            self.metrics.coincidences.labels(c.status).inc()
            n += 1
        for d in dead:
            self._dead_letter(d)
            n += 1
        self._flush()
        for messenger, k in Counter(i.alert.messenger for i in items).items():
            self.metrics.alerts.labels(messenger).inc(k)
        for topic, k in self._published.items():
            self.metrics.published.labels(topic).inc(k)
        self._published.clear()
        return n

    def _dead_letter(self, d: DeadLetter) -> None:
        src = d.source
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason-code", d.code.encode()),
            ("reason", d.reason.encode("utf-8", "replace")),
            ("source-topic", src.topic.encode()),
            ("source-partition", str(src.partition).encode()),
            ("source-offset", str(src.offset).encode()),
            ("source-size", str(len(src.value)).encode()),
            ("broker-version", __version__.encode()),
            *d.headers,
        ]
        if src.timestamp_ms is not None:
            headers.append(("source-timestamp-ms", str(src.timestamp_ms).encode()))
        value = src.value
        try:
            self._produce(self.settings.dlq_topic, value, src.key, headers)
        except KafkaException as exc:
            # Too large even for the DLQ: keep a prefix, say so, never drop it.
            log.warning("DLQ payload from %s too large (%s); truncating", src.coordinates, exc)
            headers.append(("truncated-to", str(_DLQ_TRUNCATE_BYTES).encode()))
            self._produce(self.settings.dlq_topic, value[:_DLQ_TRUNCATE_BYTES], src.key, headers)
        self.metrics.dead_letters.labels(d.code).inc()

    def _flush(self) -> None:
        remaining = self.producer.flush(30)
        if remaining:
            raise KafkaError(f"{remaining} output messages not delivered within 30 s")
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise KafkaError(f"{len(errors)} output messages failed: {errors[:3]}")

    def commit(self, batch: list[SourceMessage]) -> dict[tuple[str, int], int]:
        """Commit the next offset of every partition in ``batch`` (synchronously)."""
        nxt: dict[tuple[str, int], int] = {}
        for src in batch:
            k = (src.topic, src.partition)
            nxt[k] = max(nxt.get(k, 0), src.offset + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in nxt.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, RdKafkaError) and err.code() in _REBALANCE_CODES:
                log.warning("commit lost to a rebalance (%s); the batch will be re-delivered", err)
                return {}
            raise KafkaError(f"offset commit failed: {exc}") from exc
        return nxt

