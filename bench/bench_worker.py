# SPDX-License-Identifier: Apache-2.0
"""Benchmark: one worker end to end vs a bare confluent-kafka pass-through.

Replays the real notices of ``tests/data/notices`` at volume into the
embedded broker (or ``KAFKA_BOOTSTRAP_SERVERS``) and prints, in one run:

* alerts/s of one worker (consume, parse, tag, publish to alerts + tag topics,
  archive in SQLite, commit);
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
from broker.kafka.worker import Worker
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


def worker_throughput(settings: Settings, n: int) -> float:
    w = Worker(settings, SQLiteArchive(settings.archive_path))
    done, t0 = 0, None
    while done < n:
        r = w.step()
        if r.consumed:
            t0 = t0 or time.perf_counter() - 0.0
            done += r.consumed
    dt = time.perf_counter() - (t0 or time.perf_counter())
    w.close()
    return n / dt


def latency(settings: Settings, payloads: list[bytes], rate: float, seconds: float) -> tuple[float, float, int]:
    """p50, p99 (ms) from input produce to arrival on the tag topics, at ``rate`` messages/s."""
    w = Worker(settings, SQLiteArchive(settings.archive_path))
    stop = threading.Event()
    th = threading.Thread(target=lambda: w.run(), daemon=True)
    sub = Consumer(client_config(settings, "consumer", **{"group.id": f"lat-{uuid.uuid4().hex[:6]}"}))
    tag_topics = [settings.tag_topic(t) for t in (*MESSENGERS, "test", "retraction")]
    ensure_topics(settings, tag_topics)
    sub.subscribe(tag_topics)
    while not sub.assignment():
        sub.poll(0.1)
    th.start()
    time.sleep(3.0)  # group join of the worker
    p = Producer(client_config(settings, "producer", **{"linger.ms": "0"}))
    sent: dict[bytes, float] = {}
    lat: list[float] = []

    def produce() -> None:
        period, t_next = 1.0 / rate, time.perf_counter()
        for i in range(int(rate * seconds)):
            key = f"k{i}".encode()
            sent[key] = time.time()
            p.produce(settings.input_topics[0], payloads[i % len(payloads)], key=key)
            p.poll(0)
            t_next += period
            time.sleep(max(0.0, t_next - time.perf_counter()))
        p.flush(10)
        stop.set()

    prod = threading.Thread(target=produce, daemon=True)
    prod.start()
    deadline = time.time() + seconds + 20
    expected = int(rate * seconds)
    while len(lat) < expected and time.time() < deadline:
        for m in sub.consume(1000, 0.05):
            if m.error():
                continue
            hdr = dict(m.headers() or [])
            src = hdr.get("source-timestamp-ms")
            if src is not None:
                lat.append(time.time() * 1000 - float(src))
    w.request_stop()
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
    args = ap.parse_args()

    payloads = corpus(args.max_notice_bytes)
    tmp = Path(tempfile.mkdtemp(prefix="mmbroker-bench-"))
    embedded = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        embedded = EmbeddedKafka(log_path=tmp / "tansu.log").start()
        bootstrap = embedded.bootstrap_servers
    try:
        def settings(tag: str) -> Settings:
            return Settings(bootstrap_servers=bootstrap, prefix=f"bench{tag}", group_id=f"bench{tag}",
                            input_topics=(f"bench{tag}.input",), archive_path=tmp / f"{tag}.sqlite3")

        s1 = settings("t")
        fill(s1, s1.input_topics[0], payloads, args.messages)
        pt = passthrough(s1, s1.input_topics[0], args.messages, s1.batch_size)
        wk = worker_throughput(s1, args.messages)
        s2 = settings("l")
        ensure_topics(s2, [s2.input_topics[0]], 3)
        p50, p99, n = latency(s2, payloads, args.rate, args.seconds)
    finally:
        if embedded is not None:
            embedded.stop()
    sizes = np.array([len(x) for x in payloads])
    print(f"corpus: {len(payloads)} distinct real notices that become alerts "
          f"(median {np.median(sizes):.0f} B, max {sizes.max()} B), {args.messages} messages")
    print(f"worker end to end         : {wk:10.0f} alerts/s")
    print(f"bare consume-produce pass : {pt:10.0f} msgs/s")
    print(f"ratio worker / pass-through: {wk / pt:9.3f}")
    print(f"latency produce -> {s2.prefix}.tag.* at {args.rate:.0f}/s over {args.seconds:.0f} s "
          f"({n} alerts): p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
