# SPDX-License-Identifier: Apache-2.0
"""Coincidence search cost per alert against a full recent-alert window.

The window is filled with 100,000 entries made from the real notices of the
corpus that belong to a coincidence class, time-shifted uniformly over the
retention (3 days), plus 100 GW sky maps (the real GW maps of the corpus,
rotated to random positions and spread over the same days).  Then real
point-like alerts (GRB circles, neutrino tracks) and real sky-map alerts (GW
maps, the Fermi GBM targeted-search map) are pushed through the real
:class:`~broker.coincidence.stage.CoincidenceStage`: footprint, window add,
every rule's window query, the spatial tests, the joint FARs and the claims.

A second sky-map figure puts all 100 GW maps inside the searching alert's
time window (the worst case: every map compared).

Aims (issue 5): < 1 ms per point-like alert, < 20 ms per sky-map alert.

Run: ``PYTHONPATH=. python bench/bench_coincidence.py [--redis]``
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np

from broker.coincidence.rules import alert_classes, default_rules
from broker.coincidence.spatial import Footprint, footprint
from broker.coincidence.stage import CoincidenceStage, window_classes
from broker.model import Alert, SkyMap
from broker.state import StateStore, WindowEntry, open_state
from tests.corpus import parsed_alerts

RETENTION_S = 3 * 86400.0
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def rotated(alert: Alert, rng: random.Random) -> Alert:
    """The alert's sky map moved to a random place (pixels rotated by a random RA shift and a Dec mirror)."""
    import healpy as hp

    m = alert.skymap
    if m is None:
        raise ValueError("not a sky-map alert")
    order, ipix = m.order, m.ipix
    # shift in RA by a multiple of 90 deg and optionally mirror in Dec: exact pixel permutations in NESTED
    nside = (1 << order).astype(np.int64)
    out = np.empty_like(ipix)
    shift = rng.choice([0.0, 90.0, 180.0, 270.0])
    for o in np.unique(order):
        sel = order == o
        theta, phi = hp.pix2ang(int(1 << int(o)), ipix[sel], nest=True)
        out[sel] = hp.ang2pix(int(1 << int(o)), theta, phi + np.radians(shift), nest=True)
    uniq = 4 * nside * nside + out
    sm = SkyMap(uniq=uniq, probdensity=m.probdensity, distmu=m.distmu, distsigma=m.distsigma,
                distnorm=m.distnorm, distmean=m.distmean, diststd=m.diststd, source=m.source)
    return replace(alert, skymap=sm)


def entry(alert: Alert, t: float, fp: Footprint, payload: bytes, key: str) -> WindowEntry:
    return WindowEntry(
        broker_id=f"mmb-{key}", event_key=f"bench/{key}", revision=alert.revision, issued=t,
        classes=window_classes(alert), messenger=alert.messenger, time=t, far=alert.far,
        ra=fp.ra, dec=fp.dec, extent=fp.extent, payload=payload,
    )


def fill(state: StateStore, templates: list[Alert], gw_maps: list[Alert], n: int, rng: random.Random,
         maps_at: float | None) -> None:
    t_end = NOW.timestamp()
    fps = [(a, footprint(a)) for a in templates]
    payloads = [fp.to_bytes() for _, fp in fps]
    batch: list[WindowEntry] = []
    for i in range(n):
        k = rng.randrange(len(fps))
        a, fp = fps[k]
        batch.append(entry(a, t_end - rng.uniform(0, RETENTION_S), fp, payloads[k], f"fill{i}"))
        if len(batch) == 5000:
            state.window.add(batch)
            batch = []
    for j, g in enumerate(gw_maps):
        fp = footprint(g)
        t = maps_at + rng.uniform(-0.5, 0.5) if maps_at is not None else t_end - rng.uniform(0, RETENTION_S)
        batch.append(entry(g, t, fp, fp.to_bytes(), f"gw{j}"))
    state.window.add(batch)
    # pin the watermark at NOW so nothing of the fill is evicted while we measure
    state.window.add([entry(templates[0], t_end, fps[0][1], payloads[0], "watermark")])


def measure(stage: CoincidenceStage, alerts: list[Alert], at: float, rng: random.Random) -> list[float]:
    out = []
    for i, a in enumerate(alerts):
        t = datetime.fromtimestamp(at + rng.uniform(-1, 1), UTC)
        probe = replace(a, event_id=f"probe{i}-{rng.random()}", event_time=t, revision_state="first")
        t0 = time.perf_counter()
        stage.process([probe])
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def report(name: str, ms: list[float], aim: float) -> None:
    ms = sorted(ms)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    print(f"{name:<58} n={len(ms):4d}  median {statistics.median(ms):7.3f} ms  p95 {p95:7.3f} ms"
          f"  (aim < {aim:g} ms: {'ok' if statistics.median(ms) < aim else 'MISSED'})")


def run(backend: str, url: str | None) -> None:
    rng = random.Random(20261122)
    corpus = [a for a in parsed_alerts() if alert_classes(a) and a.event_time is not None and not a.is_test]
    tests = [a for a in parsed_alerts() if alert_classes(a) and a.event_time is not None]
    point_like = [a for a in corpus if a.skymap is None and a.region is not None]
    gw = [a for a in tests if a.skymap is not None and a.messenger == "gw"]
    maps = [a for a in tests if a.skymap is not None]
    gw_maps = [rotated(replace(gw[i % len(gw)], is_test=False), rng) for i in range(100)]
    print(f"\n== {backend}: 100,000 window entries from {len(corpus)} real notices + 100 GW maps "
          f"(from {len(gw)} real GW maps); probes: {len(point_like)} point-like, {len(maps)} sky-map notices")
    rules = default_rules()
    probes_pt = [replace(a, is_test=False) for a in point_like] * 4
    probes_map = [replace(a, is_test=False) for a in maps] * 3
    for maps_at, label in ((None, "maps spread over 3 days"), (NOW.timestamp() - 3600.0, "all 100 maps in window")):
        state = open_state(backend, url, RETENTION_S, prefix=f"bench{rng.random()}:")
        t0 = time.perf_counter()
        fill(state, corpus, gw_maps, 100_000, rng, maps_at)
        print(f"   filled window ({label}): {len(state.window)} entries in {time.perf_counter() - t0:.1f} s")
        stage = CoincidenceStage(state, rules)
        at = NOW.timestamp() - 1800.0 if maps_at is None else maps_at
        if maps_at is None:
            report(f"{backend}: point-like alert ({label})", measure(stage, probes_pt, at, rng), 1.0)
        report(f"{backend}: sky-map alert ({label})", measure(stage, probes_map, at, rng), 20.0)
        print(f"   stage stats: {stage.stats}")
        state.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", action="store_true", help="also run against a local redis-server")
    args = ap.parse_args()
    run("memory", None)
    if args.redis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server not found (apt-get install redis-server)")
        with tempfile.TemporaryDirectory() as d:
            port = 6390 + random.randrange(500)
            proc = subprocess.Popen([exe, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d],
                                    stdout=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                run("redis", f"redis://127.0.0.1:{port}/0")
            finally:
                proc.terminate()
                proc.wait(5)


if __name__ == "__main__":
    main()
