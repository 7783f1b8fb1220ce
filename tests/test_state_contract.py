# SPDX-License-Identifier: Apache-2.0
"""One contract suite for the hot state, run against both backends: in process and a real ``redis-server``.

Entries are made from the real notices of ``tests/data/notices``: their event
keys, broker ids, revisions, issue and event times, best positions and
regions; the payload is the notice's own bytes (sky-map notices up to ~2 MB).
Expected window contents come from a plain reference model (a dict replayed
in order) and cone results from astropy's angular separation, entry by entry.
"""

from __future__ import annotations

import functools
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pytest
from astropy.coordinates import angular_separation

from broker.errors import ConfigError, RejectedNotice, StateError
from broker.formats import parse
from broker.model import Alert, Circle, Coincidence, Ellipse, Point, Rectangle
from broker.state import CONE_TOLERANCE_DEG, StateStore, Version, WindowEntry, open_state
from broker.state.base import order_key
from tests.corpus import notice_files
from tests.redis_fixture import RedisProcess, persistent_redis_server, redis_server

__all__ = ["persistent_redis_server", "redis_server"]  # the fixtures are used by name

FOREVER = 1e10  # retention (s) longer than the corpus' 8 years of event times


# --------------------------------------------------------------------------- real data


@functools.cache
def corpus() -> tuple[tuple[Alert, bytes], ...]:
    """Every notice that becomes an alert, with its raw bytes, in path order."""
    out = []
    for path in notice_files():
        raw = path.read_bytes()
        try:
            out.append((parse(raw), raw))
        except RejectedNotice:
            continue
    return tuple(out)


def classes_of(a: Alert) -> tuple[str, ...]:
    """Coincidence classes for the tests: the messenger, and messenger-mission."""
    return (a.messenger, f"{a.messenger}-{a.mission.lower().replace(' ', '-')}")


def extent_of(a: Alert) -> float | None:
    """Radius around the best position containing the region (deg); None for sky maps only / no localization."""
    r = a.region
    if isinstance(r, Circle):
        return r.radius
    if isinstance(r, Ellipse):
        return r.semi_major
    if isinstance(r, Point):
        return 0.0
    if isinstance(r, Rectangle):
        ra, dec = zip(*r.corners, strict=True)
        return float(np.max(np.rad2deg(angular_separation(
            np.deg2rad(ra), np.deg2rad(dec), math.radians(r.ra), math.radians(r.dec)))))
    return None


@functools.cache
def entries() -> tuple[WindowEntry, ...]:
    """Window entries of every timed notice of the corpus (payload: the notice bytes)."""
    return tuple(
        WindowEntry.from_alert(a, classes_of(a), extent_of(a), raw) for a, raw in corpus() if a.event_time is not None
    )


def small_entries() -> list[WindowEntry]:
    """The entries whose payload is under 20 kB (no sky maps), one per broker id (identical notices share one)."""
    first: dict[str, WindowEntry] = {}
    for e in entries():
        if len(e.payload) < 20_000:
            first.setdefault(e.broker_id, e)
    return list(first.values())


def reference_window(batches: Sequence[Sequence[WindowEntry]], retention_s: float) -> dict[str, WindowEntry]:
    """The contract replayed on a plain dict: per event the latest (revision, issued), then eviction per batch."""
    win: dict[str, WindowEntry] = {}
    wm = -math.inf
    for batch in batches:
        for e in batch:
            wm = max(wm, e.time)
            if any(x.broker_id == e.broker_id for x in win.values()):
                continue
            cur = win.get(e.event_key)
            if cur is None or order_key(e.revision, e.issued) >= order_key(cur.revision, cur.issued):
                win[e.event_key] = e
        win = {k: v for k, v in win.items() if v.time >= wm - retention_s}
    return win


def in_order(xs: Iterable[WindowEntry]) -> list[WindowEntry]:
    return sorted(xs, key=lambda e: (e.time, e.broker_id))


def coincidence(cid: str, a: WindowEntry, b: WindowEntry, **kw: Any) -> Coincidence:
    """A coincidence between two real entries (only fields the contract needs are meaningful)."""
    values: dict[str, Any] = {
        "coincidence_id": cid, "rule": "test/rule", "tag": "test-rule", "status": "active",
        "a_broker_id": a.broker_id, "a_event_key": a.event_key, "a_messenger": a.messenger,
        "b_broker_id": b.broker_id, "b_event_key": b.event_key, "b_messenger": b.messenger,
        "time_difference": b.time - a.time, "window": (-1000.0, 1000.0), "spatial_test": "none",
    }
    values.update(kw)
    names = {f.name for f in fields(Coincidence)}
    return Coincidence(**{k: v for k, v in values.items() if k in names})


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., StateStore]]:
    """Open a store of the backend under test (Redis: a real server, one key prefix per test)."""
    url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    opened: list[StateStore] = []

    def make(retention_s: float = FOREVER, **kw: Any) -> StateStore:
        s = open_state(backend, url, retention_s, prefix=prefix, **kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    return open_store()


@pytest.fixture
def peer(store: StateStore, backend: str, open_store: Callable[..., StateStore]) -> StateStore:
    """A second handle on the same state: another client for Redis, the same object in memory."""
    return store if backend == "memory" else open_store()


# --------------------------------------------------------------------------- window


def test_add_keeps_latest_revision_per_event_in_time_order(store: StateStore) -> None:
    es = list(entries())
    random.Random(7).shuffle(es)
    batches = [es[i:i + 25] for i in range(0, len(es), 25)]
    for b in batches:
        store.window.add(b)
    want = in_order(reference_window(batches, FOREVER).values())
    got = store.window.query(-math.inf, math.inf)
    assert [e.broker_id for e in got] == [e.broker_id for e in want]
    assert got == want  # every field, payload bytes included (sky-map notices of ~1 MB among them)
    assert len(store.window) == len({e.event_key for e in es})
    assert store.window.watermark() == max(e.time for e in es)


def test_older_revision_does_not_replace_newer(store: StateStore) -> None:
    fermi = sorted((e for e in entries() if e.event_key == "Fermi/745121685"), key=lambda e: e.revision or 0)
    assert [e.revision for e in fermi] == [1, 2, 3, 4, 5, 6, 7]
    store.window.add([fermi[6]])
    store.window.add(fermi[:6])
    assert store.window.get_event("Fermi/745121685") == fermi[6]
    # equal (revision, issued) with another broker id is "not older": it replaces
    newest_issued = fermi[6].issued
    assert newest_issued is not None
    twin = replace(fermi[6], broker_id="mmb-twin", payload=b"other")
    store.window.add([twin])
    assert store.window.get_event("Fermi/745121685") == twin
    # revision None ranks lowest
    store.window.add([replace(fermi[6], broker_id="mmb-norev", revision=None, issued=newest_issued + 1e6)])
    assert store.window.get_event("Fermi/745121685") == twin


def test_issued_breaks_revision_ties_and_none_ranks_lowest(store: StateStore) -> None:
    ep = [e for e in entries() if e.event_key == "Einstein Probe/01709015181"]
    no_issued = next(e for e in ep if e.issued is None)
    with_issued = next(e for e in ep if e.issued is not None)
    assert with_issued.issued is not None
    store.window.add([with_issued, no_issued])
    assert store.window.get_event(with_issued.event_key) == with_issued
    later = replace(with_issued, broker_id="mmb-later", issued=with_issued.issued + 0.001)
    store.window.add([later])
    assert store.window.get_event(with_issued.event_key) == later


def test_readding_a_broker_id_is_a_no_op(store: StateStore) -> None:
    e = small_entries()[0]
    store.window.add([e])
    store.window.add([replace(e, payload=b"changed", revision=(e.revision or 0) + 10, ra=1.0)])
    assert store.window.get_event(e.event_key) == e
    assert len(store.window) == 1


def test_ordering_by_time_then_broker_id_and_exact_times(store: StateStore) -> None:
    base = small_entries()[:6]
    t0 = base[0].time + 1e-6  # microsecond offsets survive: float64 end to end
    same = [replace(e, event_key=f"tie/{i}", broker_id=f"mmb-{5 - i:02d}", time=t0) for i, e in enumerate(base)]
    store.window.add(same)
    got = store.window.query(t0, t0)
    assert [e.broker_id for e in got] == sorted(e.broker_id for e in same)
    assert all(e.time == t0 for e in got)
    assert store.window.query(np.nextafter(t0, math.inf), math.inf) == []
    assert store.window.query(-math.inf, np.nextafter(t0, -math.inf)) == []
    assert store.window.query(t0 + 1, t0 - 1) == []


def test_time_range_and_class_filter_match_brute_force(store: StateStore) -> None:
    es = list(reference_window([entries()], FOREVER).values())
    store.window.add(list(entries()))
    rng = random.Random(3)
    all_classes = sorted({c for e in es for c in e.classes})
    times = sorted(e.time for e in es)
    for _ in range(30):
        t_min, t_max = sorted(rng.sample(times, 2))
        cls = set(rng.sample(all_classes, rng.randint(1, 4)))
        want = in_order(e for e in es if t_min <= e.time <= t_max and cls & set(e.classes))
        assert store.window.query(t_min, t_max, classes=cls) == want
    assert store.window.query(-math.inf, math.inf, classes=["no-such-class"]) == []
    assert store.window.query(-math.inf, math.inf, classes=[]) == []
    gw = store.window.query(-math.inf, math.inf, classes=["gw"])
    assert {e.event_key for e in gw} == {e.event_key for e in es if e.messenger == "gw"}


def test_class_filter_with_more_than_64_classes(store: StateStore) -> None:
    base = small_entries()[:100]
    made = [replace(e, event_key=f"cls/{i}", classes=(f"c{i % 70}", f"d{i % 3}")) for i, e in enumerate(base)]
    store.window.add(made)
    for k in (0, 5, 63, 64, 69):
        want = in_order(e for e in made if f"c{k}" in e.classes)
        assert store.window.query(-math.inf, math.inf, classes=[f"c{k}"]) == want
    want = in_order(e for e in made if {"c66", "d1"} & set(e.classes))
    assert store.window.query(-math.inf, math.inf, classes={"c66", "d1"}) == want


def test_cone_filter_matches_brute_force_separation(store: StateStore) -> None:
    es = list(reference_window([entries()], FOREVER).values())
    store.window.add(list(entries()))
    rng = random.Random(11)
    positioned = [e for e in es if e.ra is not None]
    n_hits = 0
    for _ in range(60):
        c = rng.choice(positioned)
        assert c.ra is not None
        assert c.dec is not None
        ra0, dec0 = (c.ra + rng.uniform(-20, 20)) % 360, max(-90.0, min(90.0, c.dec + rng.uniform(-20, 20)))
        radius = rng.choice([0.0, 0.5, 5.0, 30.0, 90.0])
        want = []
        for e in es:
            if e.ra is None or e.dec is None or e.extent is None:
                want.append(e)
                continue
            sep = math.degrees(angular_separation(math.radians(e.ra), math.radians(e.dec),
                                                  math.radians(ra0), math.radians(dec0)))
            assert abs(sep - (radius + e.extent)) > 1e-7, "a random cone fell on a boundary: reseed"
            if sep <= radius + e.extent:
                want.append(e)
                n_hits += e.extent is not None
        assert store.window.query(-math.inf, math.inf, cone=(ra0, dec0, radius)) == in_order(want)
    assert n_hits > 0


@pytest.mark.parametrize(("ra0", "dec0", "along"), [(123.4, 31.7, "dec"), (359.75, 0.0, "ra"), (200.0, 89.2, "dec")])
def test_cone_boundary_is_inclusive(store: StateStore, ra0: float, dec0: float, along: str) -> None:
    """Entries exactly at radius + extent pass, 1e-6 deg further do not (RA wrap and the pole included)."""
    proto = small_entries()[0]
    radius, extent = 1.25, 0.5
    edge = radius + extent
    made = []
    for i, d in enumerate([-edge, edge, edge + 1e-6, edge - 1e-6]):
        if along == "dec":  # along the meridian
            ra, dec = ra0, dec0 + d
            if dec > 90:  # over the pole: same distance, opposite meridian
                ra, dec = (ra0 + 180) % 360, 180 - dec
        else:  # along the equator (dec0 = 0), across RA 0
            ra, dec = (ra0 + d) % 360, 0.0
        made.append(replace(proto, broker_id=f"mmb-b{i}", event_key=f"edge/{i}", ra=ra, dec=dec, extent=extent))
    store.window.add(made)
    seps = [math.degrees(angular_separation(math.radians(e.ra or 0), math.radians(e.dec or 0),
                                            math.radians(ra0), math.radians(dec0))) for e in made]
    # the constructed positions really are on, beyond and inside the boundary
    assert abs(seps[0] - edge) < 1e-9
    assert abs(seps[1] - edge) < 1e-9
    assert seps[2] > edge + 5e-7
    assert seps[3] < edge - 5e-7
    got = {e.broker_id for e in store.window.query(-math.inf, math.inf, cone=(ra0, dec0, radius))}
    assert got == {"mmb-b0", "mmb-b1", "mmb-b3"}
    assert CONE_TOLERANCE_DEG < 1e-6


def test_cone_passes_entries_without_position_or_extent(store: StateStore) -> None:
    proto = small_entries()[0]
    made = [
        replace(proto, broker_id="mmb-nopos", event_key="x/nopos", ra=None, dec=None, extent=2.0),
        replace(proto, broker_id="mmb-noext", event_key="x/noext", ra=10.0, dec=0.0, extent=None),
        replace(proto, broker_id="mmb-far", event_key="x/far", ra=10.0, dec=0.0, extent=2.0),
        replace(proto, broker_id="mmb-near", event_key="x/near", ra=187.0, dec=0.0, extent=2.0),
    ]
    store.window.add(made)
    got = store.window.query(-math.inf, math.inf, cone=(190.0, 0.0, 1.0))
    assert {e.broker_id for e in got} == {"mmb-nopos", "mmb-noext", "mmb-near"}


def test_retention_evicts_by_watermark(open_store: Callable[..., StateStore]) -> None:
    retention = 3600.0
    store = open_store(retention)
    base = small_entries()[:5]
    t0 = base[0].time
    made = [replace(e, event_key=f"ret/{i}", time=t0 + 900.0 * i) for i, e in enumerate(base)]  # 0..3600 s
    store.window.add(made[:4])
    assert len(store.window) == 4
    store.window.add([made[4]])  # watermark t0 + 3600: the entry at exactly t0 stays (time < cutoff is evicted)
    assert len(store.window) == 5
    later = replace(base[0], broker_id="mmb-late", event_key="ret/late", time=t0 + 3600.0 + 900.5)
    store.window.add([later])
    assert store.window.watermark() == later.time
    assert [e.event_key for e in store.window.query(-math.inf, math.inf)] == ["ret/2", "ret/3", "ret/4", "ret/late"]
    assert store.window.get_event("ret/0") is None
    # an entry already older than the cutoff is evicted at once; the watermark never goes back
    store.window.add([replace(base[1], broker_id="mmb-old", event_key="ret/old", time=t0)])
    assert store.window.get_event("ret/old") is None
    assert store.window.watermark() == later.time
    # an evicted event can come back with a newer time (a revision with a corrected time)
    store.window.add([replace(made[0], broker_id="mmb-back", time=later.time - 10)])
    assert store.window.get_event("ret/0") is not None


def test_remove_and_get_event(store: StateStore) -> None:
    es = small_entries()[:10]
    store.window.add(es)
    victim = es[3]
    assert store.window.get_event(victim.event_key) == victim
    assert store.window.remove_event(victim.event_key) == victim
    assert store.window.get_event(victim.event_key) is None
    assert store.window.remove_event(victim.event_key) is None
    assert victim not in store.window.query(-math.inf, math.inf)
    assert len(store.window) == len({e.event_key for e in es}) - 1
    store.window.add([victim])  # it can be added again after an explicit removal
    assert store.window.get_event(victim.event_key) == victim


def test_window_is_shared_and_concurrent_adds_keep_the_newest(store: StateStore, peer: StateStore) -> None:
    proto = small_entries()[0]
    revs = [replace(proto, broker_id=f"mmb-r{r:03d}", revision=r) for r in range(60)]
    odd, even = revs[1::2][::-1], revs[0::2][::-1]  # newest first: every later add must be refused

    def run(s: StateStore, xs: list[WindowEntry]) -> None:
        for x in xs:
            s.window.add([x])

    threads = [threading.Thread(target=run, args=(s, xs)) for s, xs in ((store, odd), (peer, even))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peer.window.get_event(proto.event_key) == revs[-1]
    assert len(store.window) == 1


def test_from_alert_needs_an_event_time() -> None:
    untimed = next(a for a, _ in corpus() if a.event_time is None)
    with pytest.raises(StateError, match="no event time"):
        WindowEntry.from_alert(untimed, ("gw",), None)
    timed = next(a for a, _ in corpus() if a.event_time is not None and a.position is not None)
    e = WindowEntry.from_alert(timed, ("x",), 1.0)
    assert timed.event_time is not None
    assert e.time == timed.event_time.timestamp()
    assert (e.ra, e.dec) == timed.position


# --------------------------------------------------------------------------- event registry


def versions_of(es: Sequence[WindowEntry]) -> list[Version]:
    return [Version(e.broker_id, e.revision, e.issued, False) for e in es]


def test_record_versions_appends_once_in_first_seen_order(store: StateStore) -> None:
    lvk = [e for e in entries() if e.event_key == "LVK/MS181101ab"]
    vs = list(dict.fromkeys(versions_of(lvk)))  # identical notices in two folders share a broker id
    assert len(vs) >= 8
    got = store.record_versions([("LVK/MS181101ab", v) for v in vs[:4]])
    assert got["LVK/MS181101ab"].versions == tuple(vs[:4])
    got = store.record_versions([("LVK/MS181101ab", v) for v in vs[2:] + vs[:2]])
    assert got["LVK/MS181101ab"].versions == tuple(vs)
    assert store.record_versions([("LVK/MS181101ab", vs[0])])["LVK/MS181101ab"].versions == tuple(vs)
    retraction = Version("mmb-retract", 5, 1.5e9, True)
    st = store.record_versions([("LVK/MS181101ab", retraction), ("Swift/1118357", retraction)])
    assert set(st) == {"LVK/MS181101ab", "Swift/1118357"}
    assert st["LVK/MS181101ab"].versions[-1] == retraction
    assert st["Swift/1118357"].versions == (retraction,)


def test_events_returns_known_events_only(store: StateStore) -> None:
    e = small_entries()[0]
    v = versions_of([e])[0]
    store.record_versions([(e.event_key, v)])
    store.add_tags({"tags-only/1": ["t"]})
    got = store.events([e.event_key, "unknown/1", "tags-only/1"])
    assert set(got) == {e.event_key, "tags-only/1"}
    assert got[e.event_key].versions == (v,)
    assert got["tags-only/1"].versions == ()
    assert store.events([]) == {}


def test_concurrent_record_versions_lose_nothing(store: StateStore, peer: StateStore) -> None:
    key = "Fermi/745121685"
    shared = [Version(f"mmb-shared-{i}", i, None, False) for i in range(10)]
    work = [(s, [Version(f"mmb-{n}-{i}", 100 * n + i, 1.7e9 + i, False) for i in range(40)])
            for n, s in enumerate((store, peer), start=1)]
    barrier = threading.Barrier(2)

    def run(s: StateStore, own: list[Version]) -> None:
        barrier.wait()
        for i, v in enumerate(own):
            s.record_versions([(key, v), (key, shared[i % len(shared)])])

    threads = [threading.Thread(target=run, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.events([key])[key].versions
    ids = [v.broker_id for v in final]
    assert len(ids) == len(set(ids))
    assert set(final) == set(shared) | set(work[0][1]) | set(work[1][1])
    for _, own in work:  # each writer's versions in its own order
        assert [v for v in final if v in own] == own


def test_tags_are_a_union(store: StateStore, peer: StateStore) -> None:
    store.add_tags({"A/1": ["gw", "bns"], "B/2": ["grb"]})
    peer.add_tags({"A/1": {"bns", "kilonova"}})
    barrier = threading.Barrier(2)

    def run(s: StateStore, prefix: str) -> None:
        barrier.wait()
        for i in range(50):
            s.add_tags({"A/1": [f"{prefix}{i}"]})

    threads = [threading.Thread(target=run, args=(s, p)) for s, p in ((store, "x"), (peer, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = peer.events(["A/1", "B/2"])
    assert got["A/1"].tags == {"gw", "bns", "kilonova"} | {f"{p}{i}" for p in "xy" for i in range(50)}
    assert got["B/2"].tags == {"grb"}


def test_seen_and_mark_done(store: StateStore, peer: StateStore) -> None:
    ids = [e.broker_id for e in small_entries()[:6]]
    assert store.seen(ids) == set()
    store.mark_done(ids[:3])
    assert peer.seen(ids) == set(ids[:3])
    peer.mark_done(ids[2:4])
    assert store.seen(ids) == set(ids[:4])
    assert store.seen([]) == set()


def test_claim_first_wins(store: StateStore, peer: StateStore) -> None:
    assert store.claim("coinc:A/1|B/2", "worker-a")
    assert store.claim("coinc:A/1|B/2", "worker-a")  # the holder re-claims
    assert not peer.claim("coinc:A/1|B/2", "worker-b")
    assert peer.claim("coinc:other", "worker-b")
    barrier = threading.Barrier(2)
    won: dict[str, list[str]] = {"a": [], "b": []}

    def run(s: StateStore, owner: str) -> None:
        barrier.wait()
        for i in range(100):
            if s.claim(f"race:{i}", owner):
                won[owner].append(f"race:{i}")

    threads = [threading.Thread(target=run, args=(s, o)) for s, o in ((store, "a"), (peer, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won["a"] + won["b"]) == sorted(f"race:{i}" for i in range(100))  # each key exactly once


def test_coincidences_stored_replaced_and_found_from_either_side(store: StateStore, peer: StateStore) -> None:
    gw = next(e for e in entries() if e.messenger == "gw")
    grbs = [e for e in small_entries() if e.messenger == "gamma"][:2]
    c1 = coincidence("gw-grb:1", gw, grbs[0], far_temporal=1e-8, separation=3.5)
    c2 = coincidence("gw-grb:2", gw, grbs[1])
    store.put_coincidences([c1, c2])
    assert peer.coincidences_of(gw.event_key) == [c1, c2]
    assert peer.coincidences_of(grbs[0].event_key) == [c1]
    assert store.coincidences_of("unknown/0") == []
    withdrawn = c1.withdrawn("GRB retracted")
    peer.put_coincidences([withdrawn])
    assert store.coincidences_of(grbs[0].event_key) == [withdrawn]
    assert store.coincidences_of(gw.event_key) == [withdrawn, c2]
    st = store.events([gw.event_key, grbs[0].event_key])
    assert st[gw.event_key].coincidence_ids == {"gw-grb:1", "gw-grb:2"}
    assert st[grbs[0].event_key].coincidence_ids == {"gw-grb:1"}


def test_ttl_expires_event_state_done_keys_claims_and_coincidences(open_store: Callable[..., StateStore]) -> None:
    store = open_store(ttl_s=0.3)
    e1, e2 = small_entries()[:2]
    store.record_versions([(e1.event_key, versions_of([e1])[0])])
    store.mark_done(["k"])
    assert store.claim("c", "me")
    store.put_coincidences([coincidence("c:1", e1, e2)])
    assert store.seen(["k"]) == {"k"}
    time.sleep(0.6)
    assert store.seen(["k"]) == set()
    assert store.claim("c", "someone-else")
    assert store.events([e1.event_key, e2.event_key]) == {}
    assert store.coincidences_of(e1.event_key) == []


# --------------------------------------------------------------------------- opening and Redis specifics


def test_open_state_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="unknown state backend"):
        open_state("sqlite", None, 10.0)
    with pytest.raises(ConfigError, match="Redis URL"):
        open_state("redis", None, 10.0)


def test_redis_prefixes_isolate_brokers(redis_server: RedisProcess) -> None:
    a = open_state("redis", redis_server.url, FOREVER, prefix="a:")
    b = open_state("redis", redis_server.url, FOREVER, prefix="b:")
    try:
        a.window.add(small_entries()[:3])
        a.mark_done(["k"])
        assert len(b.window) == 0
        assert b.seen(["k"]) == set()
        assert len(a.window) == 3
    finally:
        a.close()
        b.close()


def _restart_later(server: RedisProcess, delay_s: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        server.restart()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_redis_restart_mid_operation(persistent_redis_server: RedisProcess) -> None:
    server = persistent_redis_server
    store = open_state("redis", server.url, FOREVER, retry_s=30.0)
    try:
        es = list(entries())
        store.window.add(es)
        before = store.window.query(-math.inf, math.inf)
        lvk = [e for e in es if e.event_key == "LVK/MS181101ab"]
        vs = list(dict.fromkeys(versions_of(lvk)))
        store.record_versions([("LVK/MS181101ab", v) for v in vs[:-1]])
        store.mark_done(["done-1"])
        assert store.claim("claim-1", "worker-a")

        server.stop()
        assert not server.running
        restarter = _restart_later(server, 1.0)
        t0 = time.monotonic()
        st = store.record_versions([("LVK/MS181101ab", vs[-1])])  # retries until the server is back
        waited = time.monotonic() - t0
        restarter.join()
        assert waited >= 0.9
        assert st["LVK/MS181101ab"].versions == tuple(vs)

        server.stop()
        restarter = _restart_later(server, 1.0)
        extra = replace(small_entries()[0], broker_id="mmb-during-outage", event_key="outage/1")
        store.window.add([extra])
        restarter.join()

        assert store.window.query(-math.inf, math.inf) == in_order([*before, extra])
        assert store.window.watermark() == max(e.time for e in es)
        assert store.seen(["done-1", "done-2"]) == {"done-1"}
        assert not store.claim("claim-1", "worker-b")
    finally:
        store.close()


def test_redis_outage_longer_than_retry_budget_raises_state_error(redis_server: RedisProcess) -> None:
    store = open_state("redis", redis_server.url, FOREVER, retry_s=0.5)
    try:
        store.window.add(small_entries()[:2])
        redis_server.stop()
        t0 = time.monotonic()
        with pytest.raises(StateError, match=r"window\.query failed"):
            store.window.query(-math.inf, math.inf)
        assert 0.5 <= time.monotonic() - t0 < 3.0
    finally:
        store.close()
