# SPDX-License-Identifier: Apache-2.0
"""Benchmark: one worker end to end vs a bare confluent-kafka pass-through.

Replays the real notices of ``tests/data/notices`` at volume into the
embedded broker (or ``KAFKA_BOOTSTRAP_SERVERS``) and prints, in one run:

* alerts/s of one worker (consume, parse, tag, publish to alerts + tag topics,
  archive in SQLite, commit), without annotators and filters; with every
  local annotator on (all bundled catalogs, sky-map regions and galaxy
  ranking); with the built-in filters plus 20 trivial user filters (run in
  the sandbox process);
* messages/s of a bare consume-produce pass-through of the same messages;
* their ratio;
* p50/p99 latency from input produce to arrival on the tagged output topic
  at a fixed input rate.

Usage: ``python bench/bench_worker.py [--messages 20000] [--rate 500] [--seconds 20]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from broker.archive.sqlite import SQLiteArchive
from broker.config import Settings
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.kafka.clients import client_config, ensure_topics
from broker.kafka.embedded import EmbeddedKafka
from broker.kafka.worker import BatchResult, Worker
from broker.model import MESSENGERS
from broker.replay import notice_paths

NOTICES = Path(__file__).resolve().parents[1] / "tests" / "data" / "notices"


def corpus(max_bytes: int) -> list[bytes]:
    """Real notices that become alerts, at most ``max_bytes`` each."""
    out = []
    for f in notice_paths([NOTICES]):
        raw = f.read_bytes()
        if len(raw) > max_bytes:
            continue
        try:
            parse(raw)
        except RejectedNotice:
            continue
        out.append(raw)
    return out


def fill(settings: Settings, topic: str, payloads: list[bytes], n: int) -> None:
    ensure_topics(settings, [topic], 3)
    p = Producer(client_config(settings, "producer"))
    for i in range(n):
        while True:
            try:
                p.produce(topic, payloads[i % len(payloads)])
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def passthrough(settings: Settings, topic: str, n: int, batch: int) -> float:
    """Bare consume -> produce -> flush -> commit loop; messages/s."""
    out = f"{topic}.copy"
    ensure_topics(settings, [out], 3)
    c = Consumer(client_config(settings, "consumer", **{"group.id": f"pt-{uuid.uuid4().hex[:6]}"}))
    p = Producer(client_config(settings, "producer"))
    c.subscribe([topic])
    done, t0 = 0, None
    while done < n:
        msgs = c.consume(batch, 0.05)
        if not msgs:
            continue
        t0 = t0 or time.perf_counter()
        offs: dict[tuple[str, int], int] = {}
        for m in msgs:
            p.produce(out, m.value(), m.key())
            offs[(m.topic(), m.partition())] = m.offset() + 1
        p.flush(30)
        c.commit(offsets=[TopicPartition(t, q, o) for (t, q), o in offs.items()], asynchronous=False)
        done += len(msgs)
    dt = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return n / dt


TRIVIAL = '''
from broker.filtering import Filter


class Trivial{i}(Filter):
    name = "trivial-{i}"
    version = "1.0"
    description = "tags alerts whose event id ends with digit {d} (a trivial user filter)"
    tags = {{"trivial-{i}": "event id ends with {d}"}}

    def run(self, alert):
        return "trivial-{i}" if alert.event_id.endswith("{d}") else None
'''


def trivial_filters(folder: Path, n: int) -> Path:
    """``n`` trivial user filters written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"trivial_{i}.py").write_text(TRIVIAL.format(i=i, d=i % 10))
    return folder


def worker_throughput(settings: Settings, n: int) -> float:
    """alerts/s of ``Worker.run`` (the production loop) over ``n`` queued messages."""
    w = Worker(settings, SQLiteArchive(settings.archive_path))
    done = [0]
    first: list[float] = []

    def count(result: BatchResult) -> None:
        # The clock starts when the first batch is out (group join excluded);
        # that batch is not counted.
        if not first:
            first.extend([time.perf_counter(), result.consumed])
        done[0] += result.consumed
        if done[0] >= n:
            w.request_stop()

    w.run(count)
    return (n - first[1]) / (time.perf_counter() - first[0])


class BareRelay:
    """The baseline: consume -> produce to one output topic -> flush -> commit, nothing else."""

    def __init__(self, settings: Settings, out: str) -> None:
        self.settings, self.out = settings, out
        self.assigned = threading.Event()
        self._stop = threading.Event()
        ensure_topics(settings, [out])

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        s = self.settings
        c = Consumer(client_config(s, "consumer"))
        p = Producer(client_config(s, "producer"))
        c.subscribe(list(s.input_topics), on_assign=lambda *_: self.assigned.set())
        while not self._stop.is_set():
            msgs = c.consume(s.batch_size, s.batch_timeout_ms / 1000)
            offs: dict[tuple[str, int], int] = {}
            for m in msgs:
                if m.error():
                    continue
                ts = str(m.timestamp()[1]).encode()
                p.produce(self.out, m.value(), m.key(), headers=[("source-timestamp-ms", ts)])
                offs[(m.topic(), m.partition())] = m.offset() + 1
            if offs:
                p.flush(30)
                c.commit(offsets=[TopicPartition(t, q, o) for (t, q), o in offs.items()], asynchronous=False)
        c.close()


def latency(relay: Worker | BareRelay, settings: Settings, outputs: list[str], payloads: list[bytes],
            rate: float, seconds: float, warmup_s: float = 3.0) -> tuple[float, float, int]:
    """p50, p99 (ms) from input produce to arrival on ``outputs`` at ``rate`` messages/s.

    The first ``warmup_s`` seconds of input (producer initialization, group
    joins, metadata) are sent but not measured.
    """
    sub = Consumer(client_config(settings, "consumer", **{"group.id": f"lat-{uuid.uuid4().hex[:6]}"}))
    ensure_topics(settings, outputs)
    sub.subscribe(outputs)
    th = threading.Thread(target=relay.run, daemon=True)
    th.start()
    relay.assigned.wait(60)
    p = Producer(client_config(settings, "producer", **{"linger.ms": "0"}))
    measure_from_ms = [float("inf")]

    def produce() -> None:
        period, t_next, t0 = 1.0 / rate, time.perf_counter(), time.time()
        i = 0
        while time.time() - t0 < warmup_s + seconds:
            if measure_from_ms[0] == float("inf") and time.time() - t0 >= warmup_s:
                measure_from_ms[0] = time.time() * 1000
            p.produce(settings.input_topics[0], payloads[i % len(payloads)])
            p.poll(0)
            i += 1
            t_next += period
            time.sleep(max(0.0, t_next - time.perf_counter()))
        p.flush(10)

    prod = threading.Thread(target=produce, daemon=True)
    prod.start()
    lat: list[float] = []
    last = time.time()
    while prod.is_alive() or time.time() - last < 3.0:
        for m in sub.consume(1000, 0.05):
            if m.error():
                continue
            last = time.time()
            src = dict(m.headers() or []).get("source-timestamp-ms")
            if src is not None and float(src) >= measure_from_ms[0]:
                lat.append(time.time() * 1000 - float(src))
    relay.request_stop()
    th.join(20)
    sub.close()
    arr = np.array(lat)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-notice-bytes", type=int, default=200_000)
    ap.add_argument("--parse-processes", type=int, default=2, help="parse processes of the second worker run")
    args = ap.parse_args()

    payloads = corpus(args.max_notice_bytes)
    tmp = Path(tempfile.mkdtemp(prefix="mmbroker-bench-"))
    embedded = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        embedded = EmbeddedKafka(log_path=tmp / "tansu.log").start()
        bootstrap = embedded.bootstrap_servers
    try:
        def settings(tag: str, **more: object) -> Settings:
            return Settings(bootstrap_servers=bootstrap, prefix=f"bench{tag}", group_id=f"bench{tag}",
                            input_topics=(f"bench{tag}.input",), archive_path=tmp / f"{tag}.sqlite3",
                            **more)  # type: ignore[arg-type]

        s1 = settings("t", annotate=False, filters=False)
        fill(s1, s1.input_topics[0], payloads, args.messages)
        pt = passthrough(s1, s1.input_topics[0], args.messages, s1.batch_size)
        wk = worker_throughput(s1, args.messages)
        s5 = settings("a", filters=False)
        fill(s5, s5.input_topics[0], payloads, args.messages)
        wka = worker_throughput(s5, args.messages)
        s6 = settings("f", annotate=False, filter_dir=trivial_filters(tmp / "user-filters", 20))
        fill(s6, s6.input_topics[0], payloads, args.messages)
        wkf = worker_throughput(s6, args.messages)
        s4 = settings("p", parse_processes=args.parse_processes, annotate=False, filters=False)
        fill(s4, s4.input_topics[0], payloads, args.messages)
        wkp = worker_throughput(s4, args.messages)
        s2 = settings("l", annotate=False, filters=False)
        ensure_topics(s2, [s2.input_topics[0]], 3)
        tags = [s2.tag_topic(t) for t in (*MESSENGERS, "test", "retraction")]
        p50, p99, n = latency(Worker(s2, SQLiteArchive(s2.archive_path)), s2, tags, payloads, args.rate, args.seconds)
        s3 = settings("b")
        ensure_topics(s3, [s3.input_topics[0]], 3)
        out = f"{s3.prefix}.copy"
        b50, b99, bn = latency(BareRelay(s3, out), s3, [out], payloads, args.rate, args.seconds)
    finally:
        if embedded is not None:
            embedded.stop()
    sizes = np.array([len(x) for x in payloads])
    print(f"corpus: {len(payloads)} distinct real notices that become alerts "
          f"(median {np.median(sizes):.0f} B, max {sizes.max()} B), {args.messages} messages")
    print(f"worker end to end, parsing in-process       : {wk:8.0f} alerts/s")
    print(f"worker end to end, {args.parse_processes} parse processes        : {wkp:8.0f} alerts/s")
    print(f"worker end to end, every local annotator on : {wka:8.0f} alerts/s "
          f"({wka / wk:.2f} of the same run without annotators)")
    print(f"worker end to end, built-in + 20 user filters: {wkf:8.0f} alerts/s "
          f"({wkf / wk:.2f} of the same run without filters)")
    print(f"bare consume-produce pass-through           : {pt:8.0f} msgs/s")
    print(f"ratio worker / pass-through                 : {wk / pt:8.3f} (in-process), {wkp / pt:.3f} (pool)")
    print(f"latency produce -> worker -> tag topics at {args.rate:.0f}/s over {args.seconds:.0f} s "
          f"({n} arrivals): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"latency produce -> bare relay -> topic (same broker, same rate, {bn} arrivals): "
          f"p50 {b50:.1f} ms, p99 {b99:.1f} ms")


if __name__ == "__main__":
    main()
