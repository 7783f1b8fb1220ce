# SPDX-License-Identifier: Apache-2.0
"""Benchmark: archive search over a million alerts (SQLite), and Elasticsearch indexing.

Builds an SQLite archive of ``--alerts`` (default 1,000,000) alerts made from
the real notices of ``tests/data/notices``, replicated: replica ``g`` of the
corpus is a new set of events (event ids suffixed ``.r<g>``, so the
revisions of one event stay one event), shifted by one random time offset
(up to 10 years back) and rotated by one random rotation of the sky (so the
positions of an event's revisions keep their relative layout and the sky is
covered uniformly).  Replicas carry no sky maps (an alert localized only by
a sky map keeps its peak as a point position): a sky map only makes the Avro
blob bigger (86 kB on average instead of 0.5 kB), it is not searched.  Each
replica is Avro-encoded and written through ``SQLiteArchive.write_batch`` in
batches of 5,000, so the file holds exactly what the worker would write.

Then it times ``archive.search`` (the full call: plan, page, total count,
summaries) for ``--queries`` random cone + time + tag queries (cone radius
1-10 deg anywhere on the sky, a one-year time window, one tag), and prints
the median and 95th percentile, with a few other query shapes for reference.

Finally (unless ``--no-es``) it indexes ``--es-alerts`` replicas into
osmem-server (an in-memory OpenSearch-compatible server; a real
Elasticsearch with ``MMBROKER_BENCH_ES_URL``) through
``ElasticsearchArchive.write_batch`` in batches of 500 and prints alerts/s.

Usage: ``PYTHONPATH=. python bench/bench_archive.py [--alerts 1000000] [--db FILE] [--queries 50]``
(``--db`` keeps the archive, and reuses it if it already holds ``--alerts`` alerts.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from broker.archive import ArchivedAlert, Query
from broker.archive.sqlite import SQLiteArchive
from broker.avro import encode_alert
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.model import Circle, Ellipse, Point, Rectangle, Region, SourceMessage
from broker.pipeline import Pipeline
from broker.replay import guess_topic, notice_paths

NOTICES = Path(__file__).resolve().parents[1] / "tests" / "data" / "notices"
BATCH = 5000
YEAR = timedelta(days=365.25)


def corpus() -> list[ArchivedAlert]:
    """The real notices as the worker archives them, sky maps dropped (see the module docstring)."""
    parsed = []
    for f in notice_paths([NOTICES]):
        raw = f.read_bytes()
        try:
            parsed.append((parse(raw, guess_topic(f)), raw, guess_topic(f)))
        except RejectedNotice:
            continue
    alerts = Pipeline().run([a for a, _, _ in parsed])
    out = []
    for k, (a, (_, raw, topic)) in enumerate(zip(alerts, parsed, strict=True)):
        pos = a.position
        region: Region | None = a.region
        if region is None and pos is not None:
            region = Point(*pos)
        slim = dataclasses.replace(
            a, skymap=None, region=region,
            related=tuple(dataclasses.replace(r, skymap=None) for r in a.related),
        )
        out.append(ArchivedAlert(slim, SourceMessage(topic, 0, k, raw), b""))
    return out


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3-D rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def moved(region: Region, ra: float, dec: float) -> Region:
    """The region re-centred at (ra, dec) deg (rectangle corners follow the centre in RA/Dec)."""
    if isinstance(region, Rectangle):
        d_ra, d_dec = ra - region.ra, dec - region.dec
        corners = tuple(((c[0] + d_ra) % 360.0, float(np.clip(c[1] + d_dec, -90.0, 90.0))) for c in region.corners)
        return dataclasses.replace(region, ra=ra, dec=dec, corners=corners)
    if isinstance(region, Point | Circle | Ellipse):
        return dataclasses.replace(region, ra=ra, dec=dec)
    return region


def replicas(base: list[ArchivedAlert], n: int, seed: int = 1) -> Iterator[ArchivedAlert]:
    """``n`` re-keyed, time-shifted, rotated copies of the corpus (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ra0 = np.array([i.alert.region.ra if i.alert.region else 0.0 for i in base])
    dec0 = np.array([i.alert.region.dec if i.alert.region else 0.0 for i in base])
    r, d = np.radians(ra0), np.radians(dec0)
    vec = np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1)
    group = 0
    made = 0
    while made < n:
        rot = random_rotation(rng)
        v = vec @ rot.T
        ra = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0
        dec = np.degrees(np.arcsin(np.clip(v[:, 2], -1.0, 1.0)))
        shift = -YEAR * float(rng.uniform(0.0, 10.0))
        for k, item in enumerate(base):
            if made >= n:
                return
            a = item.alert
            b = dataclasses.replace(
                a,
                event_id=f"{a.event_id}.r{group}",
                event_time=None if a.event_time is None else a.event_time + shift,
                issued=None if a.issued is None else a.issued + shift,
                region=None if a.region is None else moved(a.region, float(ra[k]), float(dec[k])),
            )
            src = dataclasses.replace(item.source, offset=made)
            yield ArchivedAlert(b, src, encode_alert(b))
            made += 1
        group += 1


def build(path: Path, n: int, base: list[ArchivedAlert]) -> float:
    """Write ``n`` replicas to ``path`` through ``write_batch``; return the seconds it took."""
    archive = SQLiteArchive(path)
    t0 = time.perf_counter()
    batch: list[ArchivedAlert] = []
    done = 0
    for item in replicas(base, n):
        batch.append(item)
        if len(batch) == BATCH:
            done += archive.write_batch(batch)
            batch = []
            if done % 100_000 == 0:
                print(f"  {done:>9,} alerts archived, {done / (time.perf_counter() - t0):,.0f}/s", flush=True)
    if batch:
        done += archive.write_batch(batch)
    archive.close()
    return time.perf_counter() - t0


def timed(archive: SQLiteArchive, queries: list[Query]) -> tuple[list[float], list[int]]:
    times, hits = [], []
    for q in queries:
        t0 = time.perf_counter()
        page = archive.search(q)
        times.append(time.perf_counter() - t0)
        hits.append(page.total if page.total is not None else -1)
    return times, hits


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def report(name: str, times: list[float], hits: list[int]) -> None:
    print(f"{name:46} median {1e3 * statistics.median(times):7.1f} ms   p95 {1e3 * p95(times):7.1f} ms   "
          f"max {1e3 * max(times):7.1f} ms   matches median {int(statistics.median(hits))}")


def sample_alerts(path: Path, n: int, rng: random.Random) -> list[tuple[float, float, datetime, str, str]]:
    """(ra, dec, time, a tag, event id) of ``n`` random archived alerts with a position (read directly)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    top = db.execute("SELECT max(rowid) FROM alerts").fetchone()[0]
    out: list[tuple[float, float, datetime, str, str]] = []
    while len(out) < n:
        row = db.execute("SELECT ra, dec, t_us, tags, event_id FROM alerts WHERE rowid = ? AND ra IS NOT NULL",
                         (rng.randint(1, top),)).fetchone()
        if row is not None:
            t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=row[2])
            out.append((row[0], row[1], t, rng.choice(json.loads(row[3])), row[4]))
    db.close()
    return out


def cone_queries(samples: list[tuple[float, float, datetime, str, str]], rng: random.Random,
                 at_alerts: bool) -> list[Query]:
    """Cone (1-10 deg) + one-year window + one tag: centred on the sampled alerts (each query matches at least
    that alert), or at random sky positions with the window and tag of the sampled alerts."""
    out = []
    for ra, dec, t, tag, _ in samples:
        if not at_alerts:
            ra = rng.uniform(0.0, 360.0)
            dec = float(np.degrees(np.arcsin(rng.uniform(-1.0, 1.0))))
        out.append(Query(cone=(ra % 360.0, dec, rng.uniform(1.0, 10.0)), time_min=t - YEAR / 2,
                         time_max=t + YEAR / 2, tags=(tag,)))
    return out


def bench_es(base: list[ArchivedAlert], n: int) -> None:
    url = os.environ.get("MMBROKER_BENCH_ES_URL")
    from broker.archive.elastic import ElasticsearchArchive

    server = None
    options = {}
    what = f"Elasticsearch at {url}"
    if not url:
        from osmem_server import OsmemServer

        from tests.es_fixture import CompatibleJsonNode

        server = OsmemServer.start(japanese=False)
        url, options, what = server.url, {"node_class": CompatibleJsonNode}, f"osmem-server {server.version}"
    try:
        archive = ElasticsearchArchive(url, index=f"mmbbench-{int(time.time())}", client_options=options)
        items = list(replicas(base, n, seed=2))
        t0 = time.perf_counter()
        for k in range(0, n, 500):
            archive.write_batch(items[k:k + 500])
        dt = time.perf_counter() - t0
        print(f"{what}: indexed {archive.count():,} alerts in {dt:.1f} s = {n / dt:,.0f} alerts/s "
              f"(batches of 500, refresh=wait_for)")
        rng = random.Random(3)
        qs = []
        for item in rng.sample(items, 20):
            a = item.alert
            when = a.event_time or a.issued or datetime(2020, 1, 1, tzinfo=UTC)
            pos = a.position or (0.0, 0.0)
            qs.append(Query(cone=(pos[0], pos[1], rng.uniform(1.0, 10.0)), time_min=when - YEAR / 2,
                            time_max=when + YEAR / 2, tags=(rng.choice(a.tags),)))
        took: list[float] = []
        hits: list[int] = []
        for q in qs:
            t0 = time.perf_counter()
            page = archive.search(q)
            took.append(time.perf_counter() - t0)
            hits.append(page.total or 0)
        report(f"  cone+time+tag over {n:,} ({what.split()[0]})", took, hits)
        archive.close()
    finally:
        if server is not None:
            server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, help="archive file to keep (reused if it holds --alerts alerts)")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--es-alerts", type=int, default=10_000)
    ap.add_argument("--no-es", action="store_true")
    args = ap.parse_args()

    base = corpus()
    print(f"corpus: {len(base)} real alerts, replicated to {args.alerts:,}")
    tmp = None
    path = args.db
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="mmb-bench-")
        path = Path(tmp.name) / "archive.sqlite3"
    if path.exists() and SQLiteArchive(path).count() == args.alerts:
        print(f"reusing {path}")
    else:
        if path.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        dt = build(path, args.alerts, base)
        print(f"built {path} in {dt:.0f} s ({args.alerts / dt:,.0f} alerts/s through write_batch, batches of {BATCH})")
    print(f"file size {path.stat().st_size / 2**30:.2f} GiB")

    archive = SQLiteArchive(path)
    first = archive.search(Query(limit=1, sort="time_asc")).items[0].time
    last = archive.search(Query(limit=1)).items[0].time
    print(f"{archive.count():,} alerts from {first:%Y-%m-%d} to {last:%Y-%m-%d}; tags {archive.known_tags()}")
    rng = random.Random(42)
    samples = sample_alerts(path, args.queries, rng)
    at_alerts = cone_queries(samples, rng, at_alerts=True)
    anywhere = cone_queries(samples, rng, at_alerts=False)
    cold, _ = timed(archive, at_alerts[:1])
    print(f"first query (cold cache): {1e3 * cold[0]:.1f} ms")
    print(f"search() wall time, {len(samples)} queries each (page of 50 + total + summaries):")
    t, h = timed(archive, at_alerts)
    report("cone(1-10 deg) + 1 yr + tag, at archived alerts", t, h)
    t, h = timed(archive, anywhere)
    report("cone(1-10 deg) + 1 yr + tag, anywhere", t, h)
    t, h = timed(archive, [dataclasses.replace(q, time_min=None, time_max=None) for q in at_alerts])
    report("cone(1-10 deg) + tag", t, h)
    t, h = timed(archive, [Query(tags=q.tags, time_min=q.time_min, time_max=q.time_max) for q in at_alerts])
    report("tag + 1 yr", t, h)
    t, h = timed(archive, [Query(messengers=("neutrino",), latest_only=True)] * 5)
    report("messenger + latest only", t, h)
    t, h = timed(archive, [Query(text=s[4]) for s in samples[:10]])
    report("free text: an event id", t, h)
    t, h = timed(archive, [Query(text="fermi")] * 3)
    report("free text: 'fermi' (a sixth of the archive)", t, h)
    pages = [archive.search(Query(limit=100, tags=("gamma",)))]
    for _ in range(9):
        pages.append(archive.search(Query(limit=100, tags=("gamma",), cursor=pages[-1].next_cursor)))
    t, h = timed(archive, [Query(limit=100, tags=("gamma",), cursor=p.next_cursor) for p in pages])
    report("tag, pages 2-11 of 100 by cursor", t, h)
    print("(matches: the total; -1 when above 10,000 and not counted)")
    archive.close()
    if not args.no_es and args.es_alerts > 0:
        bench_es(base, args.es_alerts)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
