# SPDX-License-Identifier: Apache-2.0
"""The remote CDS annotators, with unchanged astroquery talking HTTP to a loopback replay server.

Nothing here contacts CDS: ``tests/cds_replay.py`` serves the recorded real
XMatch responses of ``tests/data/cds-responses`` (see its PROVENANCE.md).

The recorded XMatch response is for the six positions of astroquery's
``posList.csv``, which are not the positions of any alert of our corpus.  The
alerts are therefore real notices of ``tests/data/notices`` parsed with
``broker.formats.parse``, whose region centre is moved to those positions with
``dataclasses.replace`` (everything else about them is real).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from annotators.cds import SimbadAnnotator, UploadColumns, XMatchAnnotator
from annotators.remote import CircuitBreaker, MemoryCache, RedisCache, RemoteAnnotator
from broker.annotate import Annotator
from broker.formats import parse
from broker.model import Alert, Annotation
from broker.replay import guess_topic
from tests.cds_replay import DATA, SYNC_PATH, TABLES_PATH, CdsReplayServer
from tests.corpus import NOTICES
from tests.redis_fixture import RedisProcess, redis_server

__all__ = ["redis_server"]  # the fixture is used by name

RECORDED_POSITIONS = DATA / "xmatch" / "posList.csv"
RECORDED_RESPONSE = DATA / "xmatch" / "query_res.csv"
# as in the recorded request: ra,dec,my_id with ids 1..6 in posList order
RECORDED_UPLOAD = UploadColumns(ra="ra", dec="dec", id="my_id")

NOTICES_AT_RECORDED_POSITIONS = (
    "voevent/swift/SWIFT_bat_position_v2.0_example.xml",
    "voevent/icecube_amon/sample_astrotrack_alert.xml",
    "gcn-json/km3net/alert.example.json",
    "gcn-json/einstein_probe/wxt/alert.example.json",
    "gcn-json/fermi/gbm/trigger.final.example.json",
    "gcn-json/chime/frb.detection.example.json",
)
DUPLICATE_NOTICE = "voevent/integral/finkmm_integral_voevent_number_737.xml"
NO_POSITION_NOTICE = "voevent/snews/gwcelery_snews_gcn.xml"  # SNEWS: no region, no sky map

DEADLINE_S = 0.3
SLOW_S = 1.0
MARGIN_S = 0.4


# --------------------------------------------------------------------------- helpers and fixtures


def _parse(rel: str) -> Alert:
    path = NOTICES / rel
    return parse(path.read_bytes(), guess_topic(path), max_size=16 * 1024 * 1024)


def _recorded_positions() -> list[tuple[float, float]]:
    with RECORDED_POSITIONS.open(newline="") as f:
        return [(float(r["ra"]), float(r["dec"])) for r in csv.DictReader(f)]


def _at(alert: Alert, ra: float, dec: float) -> Alert:
    assert alert.region is not None
    return replace(alert, region=replace(alert.region, ra=ra, dec=dec))


@pytest.fixture(scope="module")
def recorded_alerts() -> list[Alert]:
    """Six real alerts (Swift, IceCube, KM3NeT, EP, Fermi, CHIME) moved to the recorded XMatch positions."""
    return [_at(_parse(rel), ra, dec)
            for rel, (ra, dec) in zip(NOTICES_AT_RECORDED_POSITIONS, _recorded_positions(), strict=True)]


@pytest.fixture(scope="module")
def mixed_batch(recorded_alerts: list[Alert]) -> list[Alert]:
    """The six alerts, a seventh real alert (INTEGRAL) moved onto the first position, and SNEWS (no position)."""
    ra, dec = _recorded_positions()[0]
    return [*recorded_alerts, _at(_parse(DUPLICATE_NOTICE), ra, dec), _parse(NO_POSITION_NOTICE)]


@pytest.fixture
def replay() -> Iterator[CdsReplayServer]:
    with CdsReplayServer(slow_s=SLOW_S) as server:
        yield server


@pytest.fixture
def make(replay: CdsReplayServer) -> Iterator[Callable[..., RemoteAnnotator]]:
    """Build annotators pointed at the replay server; closed at teardown."""
    made: list[RemoteAnnotator] = []

    def factory(kind: str = "xmatch", **kw: object) -> RemoteAnnotator:
        kw.setdefault("url", replay.xmatch_url)
        ann: RemoteAnnotator
        if kind == "xmatch":
            kw.setdefault("upload", RECORDED_UPLOAD)
            ann = XMatchAnnotator(("vizier:II/246/out",), 5.0, **kw)  # type: ignore[arg-type]
        else:
            ann = SimbadAnnotator(5.0, **kw)  # type: ignore[arg-type]
        made.append(ann)
        return ann

    yield factory
    for ann in made:
        ann.close()


class FakeClock:
    """A monotonic clock the test moves by hand (s)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _expected_by_position() -> list[list[tuple[str, float, float, float, float, str]]]:
    """The recorded rows, read independently: per recorded position (id 1..6), nearest first.

    Each row: (2MASS id, RAJ2000, DEJ2000 in deg, separation in deg, Jmag, Qfl).
    """
    out: list[list[tuple[str, float, float, float, float, str]]] = [[] for _ in range(6)]
    with RECORDED_RESPONSE.open(newline="") as f:
        for r in csv.DictReader(f):
            out[int(r["my_id"]) - 1].append(
                (r["2MASS"], float(r["RAJ2000"]), float(r["DEJ2000"]), float(r["angDist"]) / 3600.0,
                 float(r["Jmag"]), r["Qfl"])
            )
    for rows in out:
        rows.sort(key=lambda x: x[3])
    assert sum(len(rows) for rows in out) == 11
    return out


def _assert_recorded_matches(annotation: Annotation | None, expected: list[tuple[str, float, float, float, float, str]]
                             ) -> None:
    assert annotation is not None
    assert annotation.status == "ok", annotation.reason
    assert annotation.annotator == "cds_xmatch"
    got = [(m.catalog, m.source_id) for m in annotation.matches]
    assert got == [("vizier:II/246/out", e[0]) for e in expected]
    for m, (_, ra, dec, sep, jmag, qfl) in zip(annotation.matches, expected, strict=True):
        assert math.isclose(m.ra, ra, abs_tol=1e-9)
        assert math.isclose(m.dec, dec, abs_tol=1e-9)
        assert math.isclose(m.separation, sep, rel_tol=1e-12)
        assert m.properties["Jmag"] == jmag
        assert m.properties["Qfl"] == qfl
    assert annotation.properties["n_matches"] == len(expected)


# --------------------------------------------------------------------------- (a) normal service


def test_annotators_implement_the_protocol(make: Callable[..., RemoteAnnotator]) -> None:
    for kind in ("xmatch", "simbad"):
        ann = make(kind)
        assert isinstance(ann, Annotator)
        assert ann.needs == "position"


def test_xmatch_matches_are_the_recorded_rows_one_request_then_cache(
    replay: CdsReplayServer, make: Callable[..., RemoteAnnotator], mixed_batch: list[Alert]
) -> None:
    """One XMatch request for the batch, identical to the recorded one; rows mapped back; repeat from cache.

    Alerts: real notices moved to the recorded positions (module docstring),
    plus a duplicate position and an alert without a position.
    """
    ann = make("xmatch")
    out = ann.annotate(mixed_batch)

    assert len(out) == len(mixed_batch)
    assert replay.count(SYNC_PATH, "POST") == 1
    assert replay.count(TABLES_PATH, "GET") == 1  # astroquery's table check, once per annotator
    (post,) = replay.xmatch_posts()
    assert post.form["cat2"] == "vizier:II/246/out"
    assert float(post.form["distMaxArcsec"]) == 5.0
    assert (post.form["colRA1"], post.form["colDec1"], post.form["RESPONSEFORMAT"]) == ("ra", "dec", "csv")
    uploaded = list(csv.DictReader(io.StringIO(post.files["cat1"].decode())))
    with RECORDED_POSITIONS.open(newline="") as f:
        recorded = list(csv.DictReader(f))
    assert [(float(r["ra"]), float(r["dec"]), int(r["my_id"])) for r in uploaded] == [
        (float(r["ra"]), float(r["dec"]), int(r["my_id"])) for r in recorded
    ]  # the duplicate position was uploaded once

    expected = _expected_by_position()
    for annotation, rows in zip(out[:6], expected, strict=True):
        _assert_recorded_matches(annotation, rows)
    assert out[6] == out[0]  # same position, same annotation
    assert out[7] == Annotation("cds_xmatch", "0.1.0", status="skipped", reason="alert has no position")

    again = ann.annotate(mixed_batch)
    assert replay.count(SYNC_PATH) == 1
    assert replay.total() == 2
    assert again == out
    metrics = ann.metrics()
    assert metrics["requests"] == 1
    assert metrics["cache_hits"] == 6
    assert metrics["cache_misses"] == 6
    assert metrics["circuit_state"] == "closed"


def test_xmatch_maps_rows_by_echoed_position_when_the_id_is_not_echoed(
    replay: CdsReplayServer, make: Callable[..., RemoteAnnotator], recorded_alerts: list[Alert]
) -> None:
    """Uploading ids under another name: the recorded rows (echoing ``my_id``) map through ra/dec."""
    ann = make("xmatch", upload=UploadColumns(ra="ra", dec="dec", id="row_id"))
    batch = list(reversed(recorded_alerts))
    out = ann.annotate(batch)
    assert replay.count(SYNC_PATH) == 1
    for annotation, rows in zip(out, reversed(_expected_by_position()), strict=True):
        _assert_recorded_matches(annotation, rows)


def test_xmatch_never_maps_a_row_to_the_wrong_alert(
    replay: CdsReplayServer, make: Callable[..., RemoteAnnotator], recorded_alerts: list[Alert]
) -> None:
    """Ids 1..6 uploaded in reverse order: the echoed ``my_id`` disagrees with the echoed position of every row."""
    ann = make("xmatch")
    out = ann.annotate(list(reversed(recorded_alerts)))
    assert replay.count(SYNC_PATH) == 1
    for a in out:
        assert a is not None
        assert a.status == "missing"
        assert a.matches == ()
        assert a.reason == "RemoteServiceError: none of the 11 XMatch rows belongs to an uploaded position"


def test_simbad_one_request_per_batch_and_unusable_response_reported_not_cached(
    replay: CdsReplayServer, make: Callable[..., RemoteAnnotator], mixed_batch: list[Alert]
) -> None:
    """SIMBAD via XMatch ``cat2=simbad``; no SIMBAD recording exists, so the real 2MASS response is served.

    It is the closest real recording (same endpoint, same CSV layout) and lacks
    SIMBAD's ``main_id``: the annotator must say so, not crash nor cache it.
    """
    replay.xmatch_bodies["vizier:simbad"] = "xmatch/query_res.csv"
    ann = make("simbad")
    out = ann.annotate(mixed_batch)

    (post,) = replay.xmatch_posts()
    assert post.form["cat2"] == "vizier:simbad"  # astroquery prefixes names of its table list
    assert float(post.form["distMaxArcsec"]) == 5.0
    assert (post.form["colRA1"], post.form["colDec1"], post.form["RESPONSEFORMAT"]) == ("ra_in", "dec_in", "csv")
    uploaded = list(csv.DictReader(io.StringIO(post.files["cat1"].decode())))
    assert [(float(r["ra_in"]), float(r["dec_in"])) for r in uploaded] == _recorded_positions()
    assert [int(r["id_in"]) for r in uploaded] == [1, 2, 3, 4, 5, 6]

    for a in out[:7]:
        assert a is not None
        assert a.annotator == "simbad"
        assert a.status == "missing"
        assert a.reason == "RemoteServiceError: XMatch response for simbad lacks column(s) main_id"
    assert out[7] is not None
    assert out[7].status == "skipped"

    ann.annotate(mixed_batch)
    assert replay.count(SYNC_PATH) == 2  # a failure is not cached
    assert ann.metrics()["failures"] == 2


# --------------------------------------------------------------------------- (b) slow service


@pytest.mark.parametrize("kind", ["xmatch", "simbad"])
def test_slow_service_batch_proceeds_at_the_deadline(
    kind: str, replay: CdsReplayServer, make: Callable[..., RemoteAnnotator], recorded_alerts: list[Alert]
) -> None:
    """The XMatch request hangs for 1 s; the batch returns after the 0.3 s deadline with reasons.

    XMatch: the late answer still fills the cache and the next batch is served
    from it (the server is still slow: a request would time out again).
    SIMBAD (late answer unusable): nothing is cached, the next batch asks again.
    """
    replay.xmatch_bodies["vizier:simbad"] = "xmatch/query_res.csv"
    replay.faulty_paths = {SYNC_PATH}
    replay.mode = "slow"
    ann = make(kind, deadline_s=DEADLINE_S)

    t0 = time.monotonic()
    out = ann.annotate(recorded_alerts)
    elapsed = time.monotonic() - t0

    assert elapsed < DEADLINE_S + MARGIN_S, f"annotate took {elapsed:.2f} s"
    assert elapsed >= DEADLINE_S * 0.9
    for a in out:
        assert a is not None
        assert a.status == "missing"
        assert a.reason == f"timeout after {DEADLINE_S} s"
    assert replay.count(SYNC_PATH) == 1
    assert ann.metrics()["timeouts"] == 1

    limit = time.monotonic() + 5 * SLOW_S
    while ann.counters.late_results < 1 and time.monotonic() < limit:
        time.sleep(0.02)
    assert ann.counters.late_results == 1

    t0 = time.monotonic()
    again = ann.annotate(recorded_alerts)
    elapsed = time.monotonic() - t0
    if kind == "xmatch":
        assert replay.count(SYNC_PATH) == 1
        assert elapsed < 0.2
        for annotation, rows in zip(again, _expected_by_position(), strict=True):
            _assert_recorded_matches(annotation, rows)
    else:
        assert replay.count(SYNC_PATH) == 2
        assert all(a is not None and a.reason == f"timeout after {DEADLINE_S} s" for a in again)


# --------------------------------------------------------------------------- (c) HTTP 500 and the breaker


@pytest.mark.parametrize("kind", ["xmatch", "simbad"])
def test_http_500_opens_the_circuit_and_a_trial_follows_the_reset_time(
    kind: str, replay: CdsReplayServer, make: Callable[..., RemoteAnnotator], recorded_alerts: list[Alert]
) -> None:
    replay.xmatch_bodies["vizier:simbad"] = "xmatch/query_res.csv"
    replay.faulty_paths = {SYNC_PATH}
    replay.mode = "http500"
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=30.0, clock=clock)
    ann = make(kind, breaker=breaker)
    http500 = f"HTTP 500 from {replay.xmatch_url}"

    def reasons() -> set[str | None]:
        return {a.reason for a in ann.annotate(recorded_alerts) if a is not None and a.status == "missing"}

    assert reasons() == {http500}
    assert breaker.state == "closed"
    assert reasons() == {http500}
    assert breaker.state == "open"
    assert replay.count(SYNC_PATH) == 2
    before = replay.total()

    (open_reason,) = reasons()
    assert open_reason is not None
    assert open_reason.startswith("circuit open since ")
    assert f"after 2 consecutive failures: {http500}" in open_reason
    clock.advance(29.9)
    assert len(reasons()) == 1
    assert replay.total() == before  # no request reached the server
    assert ann.metrics()["circuit_rejections"] == 2

    clock.advance(0.2)  # half-open: one trial, which fails -> open again
    assert breaker.state == "half_open"
    assert reasons() == {http500}
    assert replay.count(SYNC_PATH) == 3
    assert breaker.state == "open"
    assert all(r is not None and r.startswith("circuit open") for r in reasons())
    assert replay.count(SYNC_PATH) == 3

    clock.advance(30.0)
    replay.mode = "normal"
    out = ann.annotate(recorded_alerts)  # the trial goes through
    assert replay.count(SYNC_PATH) == 4
    if kind == "xmatch":
        assert breaker.state == "closed"
        assert breaker.consecutive_failures == 0
        for annotation, rows in zip(out, _expected_by_position(), strict=True):
            _assert_recorded_matches(annotation, rows)
    else:  # the served body has no SIMBAD columns: the trial fails, the circuit re-opens
        assert breaker.state == "open"
        assert all(a is not None and a.status == "missing" and "main_id" in (a.reason or "") for a in out)
        ann.annotate(recorded_alerts)
        assert replay.count(SYNC_PATH) == 4


def test_whole_service_down_reports_the_table_list_and_recovers(
    replay: CdsReplayServer, make: Callable[..., RemoteAnnotator], recorded_alerts: list[Alert]
) -> None:
    """Every path answers 500: the failing table-list check is reported and retried, never remembered."""
    replay.mode = "http500"
    ann = make("xmatch")
    out = ann.annotate(recorded_alerts)
    reason = out[0].reason if out[0] is not None else None
    assert reason is not None
    assert reason.startswith(f"HTTP 500 from http://127.0.0.1:{replay.port}{TABLES_PATH}")
    assert (replay.count(TABLES_PATH), replay.count(SYNC_PATH)) == (1, 0)

    replay.mode = "normal"
    out = ann.annotate(recorded_alerts)
    assert (replay.count(TABLES_PATH), replay.count(SYNC_PATH)) == (2, 1)
    for annotation, rows in zip(out, _expected_by_position(), strict=True):
        _assert_recorded_matches(annotation, rows)


def test_breaker_and_memory_cache_units() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, reset_after_s=10.0, clock=clock)
    for _ in range(2):
        b.record_failure("boom")
    assert b.state == "closed"
    b.record_success()
    for _ in range(3):
        assert b.allow()
        b.record_failure("boom")
    assert (b.state, b.allow()) == ("open", False)
    clock.advance(10.0)
    assert b.allow()  # the single trial
    assert not b.allow()  # no second call while the trial is in flight
    b.record_success()
    assert (b.state, b.allow()) == ("closed", True)

    cache = MemoryCache(max_entries=2, clock=clock)
    cache.set_many({"a": [1], "b": [2]}, ttl_s=5.0)
    assert cache.get_many(["a"]) == {"a": [1]}  # "a" is now the most recently used
    cache.set_many({"c": []}, ttl_s=5.0)
    assert cache.get_many(["a", "b", "c"]) == {"a": [1], "c": []}
    clock.advance(5.0)
    assert cache.get_many(["a", "c"]) == {}
    assert len(cache) == 0


# --------------------------------------------------------------------------- (d) Redis


def test_redis_cache_is_shared_between_annotator_instances(
    redis_server: RedisProcess, replay: CdsReplayServer, make: Callable[..., RemoteAnnotator],
    recorded_alerts: list[Alert],
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    first = make("xmatch", cache=RedisCache(redis_server.url, prefix))
    out = first.annotate(recorded_alerts)
    assert replay.count(SYNC_PATH) == 1

    client = redis.Redis.from_url(redis_server.url)
    keys = sorted(k.decode() for k in client.scan_iter(match=prefix + "*"))
    assert len(keys) == 6
    assert all(0 < client.pttl(k) <= 7 * 86400 * 1000 for k in keys)
    stored = [json.loads(v) for v in client.mget(keys) if v is not None]
    assert sorted(len(v) for v in stored) == [1, 1, 1, 1, 2, 5]
    client.close()

    second_cache = RedisCache(redis_server.url, prefix)
    second = make("xmatch", cache=second_cache)
    again = second.annotate(recorded_alerts)
    assert replay.count(SYNC_PATH) == 1  # nothing asked: all from Redis
    assert again == out
    assert second.metrics()["cache_hits"] == 6
    assert second_cache.hits == 6


def test_redis_outage_is_a_miss_not_an_error(
    redis_server: RedisProcess, replay: CdsReplayServer, make: Callable[..., RemoteAnnotator],
    recorded_alerts: list[Alert],
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    cache = RedisCache(redis_server.url, prefix, retry_after_s=60.0)
    ann = make("xmatch", cache=cache)
    ann.annotate(recorded_alerts)
    ann.annotate(recorded_alerts)
    assert replay.count(SYNC_PATH) == 1
    assert cache.errors == 0

    redis_server.stop()
    assert not redis_server.running

    t0 = time.monotonic()
    out = ann.annotate(recorded_alerts)  # read fails (miss), XMatch is asked, write is skipped
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0
    assert replay.count(SYNC_PATH) == 2
    for annotation, rows in zip(out, _expected_by_position(), strict=True):
        _assert_recorded_matches(annotation, rows)
    assert cache.errors == 1
    assert cache.skipped == 1  # Redis left alone for retry_after_s after the error

    fresh = make("xmatch", cache=RedisCache(redis_server.url, prefix))
    out = fresh.annotate(recorded_alerts)
    assert all(a is not None and a.status == "ok" for a in out)
    assert replay.count(SYNC_PATH) == 3


def test_redis_fixture_is_reusable(redis_server: RedisProcess, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    client.close()
    assert redis_server.log_path.is_relative_to(tmp_path)
