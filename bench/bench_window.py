# SPDX-License-Identifier: Apache-2.0
"""Benchmark: the recent-alert window of the hot state, in process and in Redis.

Fills a window of 100,000 entries made from the real notices of
``tests/data/notices`` (each copy time-shifted so that the entries span 3 days
and RA-rotated by a random angle; payload: the notice's own bytes, notices
over ``--max-payload`` bytes, i.e. the sky-map notices, left out), in batches
of 500 in stream order, then prints:

* ms per ``add`` of 500 entries while filling, and in steady state (each batch
  also evicts 500 entries past the 3-day retention);
* ms per ``query`` over RAVEN-sized windows (+-10 s, [-600, +60] s, +-500 s,
  +-600 s) centred on random times, alone, with a class filter and with a
  10 deg cone, with the mean number of entries returned.

Both backends: ``memory`` (numpy arrays sorted by time) and ``redis`` (a
``redis-server`` started here on a free loopback port in a temporary
directory; one Lua script per call, so the figure is a loopback round trip
plus the result's transfer and decoding).

Usage: ``PYTHONPATH=. python bench/bench_window.py [--entries 100000] [--queries 2000] [--empty-payload]
[--backends memory redis]``
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import redis

from broker.errors import RejectedNotice
from broker.formats import parse
from broker.model import Circle, Ellipse, Point
from broker.replay import notice_paths
from broker.state import StateStore, WindowEntry, open_state

NOTICES = Path(__file__).resolve().parents[1] / "tests" / "data" / "notices"
SPAN_S = 3 * 86400.0
BATCH = 500
WINDOWS: dict[str, tuple[float, float]] = {
    "+-10 s": (-10.0, 10.0),
    "[-600, +60] s": (-600.0, 60.0),
    "+-500 s": (-500.0, 500.0),
    "+-600 s": (-600.0, 600.0),
}


def corpus_entries(max_payload: int) -> list[WindowEntry]:
    """One window entry per timed notice of the corpus whose bytes fit in ``max_payload``."""
    out = []
    for path in notice_paths([NOTICES]):
        raw = path.read_bytes()
        if len(raw) > max_payload:
            continue
        try:
            a = parse(raw)
        except RejectedNotice:
            continue
        if a.event_time is None:
            continue
        r = a.region
        extent = r.radius if isinstance(r, Circle) else r.semi_major if isinstance(r, Ellipse) else (
            0.0 if isinstance(r, Point) else None)
        mission = a.mission.lower().replace(" ", "-")
        out.append(WindowEntry.from_alert(a, (a.messenger, f"{a.messenger}-{mission}"), extent, raw))
    return out


def make_stream(base: list[WindowEntry], n: int, t0: float, span_s: float, tag: str, seed: int) -> list[WindowEntry]:
    """``n`` entries cycling through ``base``, evenly spread over ``span_s`` from ``t0`` (stream order)."""
    rng = random.Random(seed)
    step = span_s / n
    out = []
    for i in range(n):
        e = base[i % len(base)]
        out.append(replace(
            e, broker_id=f"{e.broker_id}-{tag}{i}", event_key=f"{e.event_key}#{tag}{i}",
            time=t0 + i * step + rng.uniform(0.0, step),
            ra=None if e.ra is None else (e.ra + rng.uniform(0.0, 360.0)) % 360.0,
        ))
    return out


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away ``redis-server`` on a free loopback port; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = (Path(tmp) / "redis.log").open("wb")
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", tmp], stdout=log, stderr=subprocess.STDOUT)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("redis-server did not start") from None
                    time.sleep(0.02)
            client.close()
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def run_backend(name: str, store: StateStore, stream: list[WindowEntry], extra: list[WindowEntry], n_queries: int,
                url: str | None) -> None:
    w = store.window
    fill = [timed(lambda b=stream[i:i + BATCH]: w.add(b)) for i in range(0, len(stream), BATCH)]  # type: ignore[misc]
    steady = [timed(lambda b=extra[i:i + BATCH]: w.add(b)) for i in range(0, len(extra), BATCH)]  # type: ignore[misc]
    print(f"\n== {name}: {len(w)} entries in the window, watermark - first = "
          f"{(w.watermark() or 0) - stream[0].time:.0f} s")
    print(f"add {BATCH}: fill mean {np.mean(fill):.2f} ms (p50 {np.median(fill):.2f}, max {np.max(fill):.2f}); "
          f"steady state with eviction mean {np.mean(steady):.2f} ms")
    if url is not None:
        mem = redis.Redis.from_url(url).info("memory")["used_memory_human"]
        print(f"redis used_memory: {mem}")
    rng = random.Random(5)
    live = w.query(-math.inf, math.inf)
    lo, hi = live[0].time + 600, live[-1].time - 600
    positioned = [e for e in live if e.ra is not None and e.dec is not None]
    print(f"{'window':<15}{'filter':<14}{'ms/query':>10}{'p50':>8}{'p99':>8}{'results':>9}")
    for wname, (dlo, dhi) in WINDOWS.items():
        for fname in ("none", "class gamma", "cone 10 deg"):
            times, counts = [], []
            for _ in range(n_queries):
                t = rng.uniform(lo, hi)
                classes = ["gamma"] if fname == "class gamma" else None
                cone = None
                if fname == "cone 10 deg":
                    c = rng.choice(positioned)
                    cone = (float(c.ra or 0.0), float(c.dec or 0.0), 10.0)
                t0 = time.perf_counter()
                res = w.query(t + dlo, t + dhi, classes=classes, cone=cone)
                times.append((time.perf_counter() - t0) * 1000.0)
                counts.append(len(res))
            print(f"{wname:<15}{fname:<14}{np.mean(times):>10.3f}{np.median(times):>8.3f}"
                  f"{np.percentile(times, 99):>8.3f}{np.mean(counts):>9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000, help="queries per (window, filter) for memory")
    ap.add_argument("--redis-queries", type=int, default=300, help="queries per (window, filter) for Redis")
    ap.add_argument("--max-payload", type=int, default=16384, help="leave out notices larger than this (bytes)")
    ap.add_argument("--empty-payload", action="store_true", help="entries without payload (isolates transfer cost)")
    ap.add_argument("--backends", nargs="+", default=["memory", "redis"], choices=["memory", "redis"])
    args = ap.parse_args()

    base = corpus_entries(args.max_payload)
    if args.empty_payload:
        base = [replace(e, payload=b"") for e in base]
    t0 = 1.7e9
    stream = make_stream(base, args.entries, t0, SPAN_S, "", seed=1)
    n_extra = 10 * BATCH  # the stream goes on at the same rate: each batch evicts as many as it adds
    extra = make_stream(base, n_extra, t0 + SPAN_S, SPAN_S * n_extra / args.entries, "x", seed=2)
    payload = np.mean([len(e.payload) for e in stream])
    print(f"{len(base)} real notices -> {len(stream)} entries over {SPAN_S / 86400:.0f} days "
          f"(mean payload {payload:.0f} B), batches of {BATCH}")
    for backend in args.backends:
        if backend == "memory":
            store = open_state("memory", None, SPAN_S)
            run_backend("memory", store, stream, extra, args.queries, None)
            store.close()
        else:
            with redis_server() as url:
                store = open_state("redis", url, SPAN_S)
                run_backend("redis", store, stream, extra, args.redis_queries, url)
                store.close()


if __name__ == "__main__":
    main()
