# SPDX-License-Identifier: Apache-2.0
"""One contract, every backend: the archive on the real notices.

Each test runs on SQLite and on Elasticsearch (a real server when
``MMBROKER_TEST_ES_URL`` is set, else osmem-server: see ``tests/es_fixture.py``).
Expected results come from an independent oracle written here: a plain
Python scan over the archived alerts, with astropy's angular separation for
cones, so both backends are checked against the same truth, and are also
compared with each other row by row.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.coordinates import angular_separation
from astropy.io.votable import parse_single_table

from broker.archive import Archive, ArchivedAlert, Page, Query, QueryError
from broker.archive.elastic import ElasticsearchArchive
from broker.archive.export import export
from broker.archive.query import TOTAL_LIMIT, AlertSummary
from broker.archive.sqlite import _SCHEMA_V0, SQLiteArchive
from broker.avro import encode_alert
from broker.errors import ArchiveError, RejectedNotice
from broker.formats import parse
from broker.model import Alert, Circle, Coincidence, Ellipse, Provenance, SourceMessage
from broker.pipeline import Pipeline
from broker.replay import guess_topic
from tests.corpus import NOTICES, notice_files
from tests.es_fixture import EsEndpoint, es_endpoint

BACKENDS = ["sqlite", "elasticsearch"]
MS181101AB = NOTICES / "igwn/kafka-json"
MS181101AB_ORDER = ("earlywarning", "preliminary", "initial", "update", "ext-update", "retraction")
MS181101AB_STATES = ("first", "update", "update", "update", "update", "retraction")


# Data --------------------------------------------------------------------------------------------------------------
def archived(paths: list[Path], offset0: int = 0) -> list[ArchivedAlert]:
    """The alerts of these notice files as the worker archives them (built-in tags, Avro, source message)."""
    parsed: list[tuple[Alert, bytes, str]] = []
    for p in paths:
        raw = p.read_bytes()
        try:
            parsed.append((parse(raw, guess_topic(p)), raw, guess_topic(p)))
        except RejectedNotice:
            continue
    alerts = Pipeline().run([a for a, _, _ in parsed])
    return [
        ArchivedAlert(a, SourceMessage(topic, 0, offset0 + k, raw), encode_alert(a))
        for k, (a, (_, raw, topic)) in enumerate(zip(alerts, parsed, strict=True))
    ]


def rekeyed(item: ArchivedAlert, suffix: str, shift: timedelta) -> ArchivedAlert:
    """A copy of an archived alert as another event, shifted in time (a new broker id)."""
    a = item.alert
    b = dataclasses.replace(
        a, event_id=f"{a.event_id}{suffix}",
        event_time=None if a.event_time is None else a.event_time + shift,
        issued=None if a.issued is None else a.issued + shift,
    )
    return ArchivedAlert(b, item.source, encode_alert(b))


@pytest.fixture(scope="module")
def corpus() -> list[ArchivedAlert]:
    """Every real notice of the corpus that becomes an alert."""
    items = archived(notice_files())
    assert len(items) > 100
    return items


@pytest.fixture(scope="module")
def es(request: pytest.FixtureRequest) -> Iterator[EsEndpoint]:
    with es_endpoint(request) as ep:
        yield ep


def new_archive(backend: str, request: pytest.FixtureRequest, folder: Path) -> Archive:
    if backend == "sqlite":
        return SQLiteArchive(folder / "archive.sqlite3")
    endpoint: EsEndpoint = request.getfixturevalue("es")
    return endpoint.archive()


@pytest.fixture(scope="module", params=BACKENDS)
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, corpus: list[ArchivedAlert]
) -> Iterator[Archive]:
    """The corpus archived in two overlapping batches (the second redelivers the first)."""
    a = new_archive(request.param, request, tmp_path_factory.mktemp(request.param))
    assert a.write_batch(corpus[:60]) == 60
    assert a.write_batch(corpus) == len(corpus) - 60
    yield a
    a.close()


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """An empty archive of each backend, for tests that write."""
    a = new_archive(request.param, request, tmp_path)
    yield a
    a.close()


# The oracle --------------------------------------------------------------------------------------------------------
def t_of(a: Alert) -> datetime:
    t = a.event_time or a.issued
    assert t is not None, "every corpus alert has an event or issue time"
    return t


def numeric(a: Alert) -> dict[str, float]:
    out = {k: float(v) for k, v in a.properties.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    out.update({f"classification.{k}": float(v) for k, v in a.classification.items()})
    r = a.region
    radius = r.radius if isinstance(r, Circle) else r.semi_major if isinstance(r, Ellipse) else None
    for name, v in (("far", a.far), ("error_radius", radius), ("revision", a.revision)):
        out.pop(name, None)
        if v is not None:
            out[name] = float(v)
    return out


def latest_ids(items: list[ArchivedAlert]) -> set[str]:
    """Per event, the non-stale version with the highest (revision, issued, arrival)."""
    best: dict[str, tuple[Any, ...]] = {}
    for arrival, i in enumerate(items):
        a = i.alert
        if a.revision_state == "stale":
            continue
        key = (-1 if a.revision is None else a.revision, a.issued or datetime.min.replace(tzinfo=UTC), arrival)
        if a.event_key not in best or key > best[a.event_key][0]:
            best[a.event_key] = (key, a.broker_id)
    return {v[1] for v in best.values()}


def in_cone(a: Alert, ra: float, dec: float, radius: float) -> bool:
    pos = a.position
    if pos is None:
        return False
    sep = angular_separation(*np.radians([pos[0], pos[1], ra, dec]))
    return bool(np.degrees(sep) <= radius)


def expected(items: list[ArchivedAlert], q: Query) -> list[str]:
    """Broker ids matching ``q``, in result order, by brute force."""
    latest = latest_ids(items) if q.latest_only else set()
    out = []
    for i in items:
        a = i.alert
        t = t_of(a)
        if q.time_min is not None and t < q.time_min:
            continue
        if q.time_max is not None and t > q.time_max:
            continue
        if not set(q.tags) <= set(a.tags):
            continue
        if q.messengers and a.messenger not in q.messengers:
            continue
        if q.missions and not {m.lower() for m in q.missions} & {a.mission.lower(), (a.instrument or "").lower()}:
            continue
        props = numeric(a)
        if any(p.name not in props or (p.low is not None and props[p.name] < p.low)
               or (p.high is not None and props[p.name] > p.high) for p in q.properties):
            continue
        if q.text is not None:
            hay = [a.event_id, a.event_name, a.broker_id, a.mission, *a.upstream_ids]
            if not any(q.text.lower() in h.lower() for h in hay if h):
                continue
        if q.latest_only and a.broker_id not in latest:
            continue
        if q.cone is not None and not in_cone(a, *q.cone):
            continue
        out.append(a)
    out.sort(key=lambda a: (t_of(a), a.broker_id), reverse=q.sort == "time_desc")
    return [a.broker_id for a in out]


def collect(archive: Archive, q: Query) -> tuple[list[AlertSummary], list[Page]]:
    """Every page of ``q``; asserts each hit comes once."""
    pages = [archive.search(q)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 500
        pages.append(archive.search(dataclasses.replace(q, cursor=pages[-1].next_cursor)))
    items = [s for p in pages for s in p.items]
    assert len({s.broker_id for s in items}) == len(items), "a hit came twice"
    return items, pages


# Writing -----------------------------------------------------------------------------------------------------------
def test_writes_are_idempotent_and_everything_reads_back(archive: Archive, corpus: list[ArchivedAlert]) -> None:
    assert archive.count() == len(corpus)
    assert archive.write_batch(corpus[100:]) == 0  # redelivery
    assert archive.count() == len(corpus)
    for item in corpus[::17]:
        assert archive.get(item.alert.broker_id) == item.alert
        assert archive.raw(item.alert.provenance.raw_sha256) == item.source.value
    assert archive.get("mmb-nope") is None
    assert archive.raw("0" * 64) is None


def test_known_tags_count_the_alerts(archive: Archive, corpus: list[ArchivedAlert]) -> None:
    want: dict[str, int] = {}
    for i in corpus:
        for t in set(i.alert.tags):
            want[t] = want.get(t, 0) + 1
    assert archive.known_tags() == want


def test_recent_is_newest_archived_first(archive: Archive, corpus: list[ArchivedAlert]) -> None:
    recent = archive.recent(10)
    # the second batch arrived last, in batch order (its first 60 were redeliveries, ignored)
    assert [s.broker_id for s in recent] == [i.alert.broker_id for i in reversed(corpus[-10:])]
    assert all(recent[k].ingested > recent[k + 1].ingested for k in range(9))


# Cone search -------------------------------------------------------------------------------------------------------
CONES = [
    (345.8, 9.0, 2.0),       # IceCube-230416A's region
    (194.3042, -17.857, 1.0),  # MS181101ab's sky-map peak
    (143.2, -68.0, 0.5),
    (29.0, -63.0, 15.0),
    (0.0, 0.0, 60.0),
    (180.0, 89.0, 5.0),      # north pole
    (0.0, 90.0, 25.0),       # centred on the pole
    (45.0, -90.0, 40.0),     # south pole
    (359.5, 10.0, 30.0),     # across RA 0/360
    (0.2, -30.0, 45.0),      # across RA 0/360 from the other side
    (100.0, 20.0, 120.0),    # more than a hemisphere
    (10.0, 10.0, 180.0),     # the whole sky
]


@pytest.mark.parametrize(("ra", "dec", "radius"), CONES)
def test_cone_equals_brute_force(archive: Archive, corpus: list[ArchivedAlert], ra: float, dec: float,
                                 radius: float) -> None:
    q = Query(cone=(ra, dec, radius), limit=7)
    items, pages = collect(archive, q)
    want = expected(corpus, q)
    assert [s.broker_id for s in items] == want
    if radius == 180.0:
        assert len(want) == sum(i.alert.position is not None for i in corpus)
    for s in items:
        assert s.separation is not None
        assert s.ra is not None
        assert s.dec is not None
        assert s.separation <= radius
        assert s.separation == pytest.approx(
            math.degrees(angular_separation(*np.radians([s.ra, s.dec, ra, dec]))), abs=1e-9)
    assert pages[0].total == len(want)


def test_known_cones_find_their_events(archive: Archive) -> None:
    ids = {s.event_key for s in archive.search(Query(cone=(345.8, 9.0, 2.0))).items}
    assert "IceCube/137840_57034692" in ids  # IceCube-230416A
    gw = {s.event_key for s in archive.search(Query(cone=(194.3042, -17.857, 1.0), tags=("test",), limit=100)).items}
    assert "LVK/MS181101ab" in gw


# Every criterion, against the oracle -------------------------------------------------------------------------------
QUERIES: list[dict[str, Any]] = [
    {},
    {"sort": "time_asc"},
    {"tag": "gw"},
    {"tag": ["gamma", "retraction"]},
    {"tag": "test", "messenger": "gw"},
    {"messenger": ["neutrino", "xray"]},
    {"mission": "fermi"},
    {"mission": ["BAT", "icecube"]},  # an instrument, a mission
    {"prop": "far::1e-7"},
    {"prop": "far:1e-12:", "messenger": "gw"},
    {"prop": "signalness:0.3:"},
    {"prop": "error_radius:0:1"},
    {"prop": "revision:2:"},
    {"prop": "classification.BNS:0.5:"},
    {"prop": ["energy_tev::1000", "signalness::1"]},
    {"text": "MS181101"},
    {"text": "s230"},
    {"text": "grb"},
    {"since": "2023-01-01", "until": "2024-06-30T12:00:00"},
    {"since": "60000"},  # MJD 60000 = 2023-02-25
    {"until": "2019-01-01T00:00:00Z"},
    {"latest": "true"},
    {"latest": "true", "tag": "gw"},
    {"latest": "true", "text": "MS181101ab"},
    {"ra": "29", "dec": "-63", "radius": "40", "tag": "gamma", "since": "2015-01-01"},
    {"ra": "180", "dec": "0", "radius": "90", "messenger": "gamma", "prop": "error_radius::10", "sort": "time_asc"},
]


@pytest.mark.parametrize("params", QUERIES, ids=[json.dumps(p, sort_keys=True) for p in QUERIES])
def test_search_equals_brute_force(archive: Archive, corpus: list[ArchivedAlert], params: dict[str, Any]) -> None:
    q = Query.from_params(limit="9", **params)
    items, pages = collect(archive, q)
    want = expected(corpus, q)
    assert [s.broker_id for s in items] == want
    assert {p.total for p in pages} == {len(want)}
    assert all(len(p.items) == 9 for p in pages[:-1])


def test_queries_select_something(corpus: list[ArchivedAlert]) -> None:
    """The oracle queries are not vacuous: each selects some alerts, and fewer than all."""
    sizes = {json.dumps(p, sort_keys=True): len(expected(corpus, Query.from_params(**p))) for p in QUERIES}
    assert all(n > 0 for n in sizes.values()), sizes
    narrow = {k: n for k, n in sizes.items() if k not in ("{}", '{"sort": "time_asc"}')}
    assert all(n < len(corpus) for n in narrow.values()), narrow


def test_latest_only_gives_one_version_per_event(archive: Archive, corpus: list[ArchivedAlert]) -> None:
    items, _ = collect(archive, Query(latest_only=True, limit=50))
    keys = [s.event_key for s in items]
    assert len(keys) == len(set(keys)) == len({i.alert.event_key for i in corpus})


def test_summaries_carry_the_alert(archive: Archive, corpus: list[ArchivedAlert]) -> None:
    by_id = {i.alert.broker_id: i.alert for i in corpus}
    items, _ = collect(archive, Query(limit=200))
    assert len(items) == len(corpus)
    for s in items:
        a = by_id[s.broker_id]
        assert (s.event_key, s.event_id, s.event_name, s.mission, s.instrument, s.messenger, s.kind, s.revision,
                s.is_test, s.event_time, s.issued, s.far, s.tags) == (
            a.event_key, a.event_id, a.event_name, a.mission, a.instrument, a.messenger, a.kind, a.revision,
            a.is_test, a.event_time, a.issued, a.far, a.tags)
        pos = a.position
        assert (s.ra, s.dec) == ((None, None) if pos is None else (pytest.approx(pos[0]), pytest.approx(pos[1])))


# Pagination ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sort", ["time_desc", "time_asc"])
def test_pagination_returns_every_hit_once_in_order(archive: Archive, corpus: list[ArchivedAlert], sort: str) -> None:
    q = Query.from_params(sort=sort, limit="10")
    items, pages = collect(archive, q)
    assert [s.broker_id for s in items] == expected(corpus, q)
    assert len(pages) == math.ceil(len(corpus) / 10)
    times = [(s.time, s.broker_id) for s in items]
    assert times == sorted(times, reverse=sort == "time_desc")


def test_cursor_is_stable_under_inserts(fresh: Archive, corpus: list[ArchivedAlert]) -> None:
    fresh.write_batch(corpus)
    q = Query(limit=10)
    first = fresh.search(q)
    assert first.next_cursor is not None
    # new alerts: some newer than everything, some between the first page and the rest, some older
    newest = max(t_of(i.alert) for i in corpus)
    middle = t_of(next(i.alert for i in corpus if i.alert.broker_id == first.items[-1].broker_id))
    extra = [rekeyed(corpus[k], f"-new{k}", newest - t_of(corpus[k].alert) + timedelta(days=k + 1))
             for k in range(5)]
    extra += [rekeyed(corpus[k], f"-mid{k}", middle - t_of(corpus[k].alert) - timedelta(seconds=k + 1))
              for k in range(5, 10)]
    assert fresh.write_batch(extra) == 10
    rest, _ = collect(fresh, dataclasses.replace(q, cursor=first.next_cursor))
    everything = expected([*corpus, *extra], Query(limit=10))
    cut = everything.index(first.items[-1].broker_id) + 1
    assert [s.broker_id for s in rest] == everything[cut:]
    assert not {s.broker_id for s in first.items} & {s.broker_id for s in rest}


def test_backends_agree_row_by_row(request: pytest.FixtureRequest, tmp_path: Path,
                                   corpus: list[ArchivedAlert]) -> None:
    sqlite, es = (new_archive(b, request, tmp_path) for b in BACKENDS)
    for a in (sqlite, es):
        a.write_batch(corpus[:50])
        a.write_batch(corpus[50:])
    queries = [Query.from_params(limit="7", **p) for p in QUERIES] + [Query(cone=c, limit=7) for c in CONES]
    for q in queries:
        page_s, page_e = sqlite.search(q), es.search(q)
        while True:
            epoch = datetime(1970, 1, 1, tzinfo=UTC)  # ingestion times differ: written at different moments
            strip = [dataclasses.replace(s, ingested=epoch) for s in page_s.items]
            assert strip == [dataclasses.replace(s, ingested=epoch) for s in page_e.items], q
            assert (page_s.total, page_s.next_cursor) == (page_e.total, page_e.next_cursor), q
            if page_s.next_cursor is None:
                break
            nxt = dataclasses.replace(q, cursor=page_s.next_cursor)
            page_s, page_e = sqlite.search(nxt), es.search(nxt)
    sqlite.close()
    es.close()


# Bad input ----------------------------------------------------------------------------------------------------------
BAD = [
    ({"ra": "400", "dec": "0", "radius": "1"}, "ra 400 deg is outside [0, 360)"),
    ({"ra": "-0.5", "dec": "0", "radius": "1"}, "ra -0.5 deg is outside [0, 360)"),
    ({"ra": "10", "dec": "91", "radius": "1"}, "dec 91 deg is outside [-90, 90]"),
    ({"ra": "10", "dec": "0", "radius": "0"}, "radius 0 deg must be > 0"),
    ({"ra": "10", "dec": "0", "radius": "-2"}, "radius -2 deg must be > 0"),
    ({"ra": "10", "dec": "0"}, "a cone needs ra, dec and radius (deg): radius missing"),
    ({"ra": "ten", "dec": "0", "radius": "1"}, "ra 'ten' is not a number"),
    ({"since": "2020-01-02", "until": "2020-01-01"}, "inverted time range"),
    ({"since": "yesterday"}, "since 'yesterday' is not a time"),
    ({"prop": "far:1"}, "prop 'far:1' must be name:low:high"),
    ({"prop": "far:low:1"}, "prop far low bound 'low' is not a number"),
    ({"prop": "far:2:1"}, "property far: low bound 2 is above high bound 1"),
    ({"prop": "f a r:1:2"}, "property name 'f a r' is not allowed"),
    ({"messenger": "photon"}, "unknown messenger 'photon'"),
    ({"limit": "0"}, "limit 0 must be an integer from 1 to 1000"),
    ({"sort": "random"}, "sort 'random' is not one of time_desc, time_asc"),
    ({"cursor": "not-a-cursor"}, "cursor is not valid"),
    ({"latest": "maybe"}, "latest 'maybe' must be true or false"),
    ({"colour": "red"}, "unknown search parameter 'colour'"),
]


@pytest.mark.parametrize(("params", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_parameters_raise_clear_errors(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError) as info:
        Query.from_params(**params)
    assert message in str(info.value)


def test_queries_made_in_code_are_validated_too() -> None:
    with pytest.raises(QueryError, match=r"ra 360 deg is outside \[0, 360\)"):
        Query(cone=(360.0, 0.0, 1.0))
    with pytest.raises(QueryError, match="radius 200 deg must be <= 180"):
        Query(cone=(10.0, 0.0, 200.0))
    with pytest.raises(QueryError, match="inverted time range"):
        Query(time_min=datetime(2020, 1, 2, tzinfo=UTC), time_max=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(QueryError, match="limit True must be an integer"):
        Query(limit=True)
    with pytest.raises(QueryError, match="limit 1001 must be an integer from 1 to 1000"):
        Query(limit=1001)
    q = Query(tags="gw", messengers="gw", limit=np.int64(5), cone=[10, 20, 1])  # type: ignore[arg-type]
    assert (q.tags, q.messengers, q.limit, q.cone) == (("gw",), ("gw",), 5, (10.0, 20.0, 1.0))
    naive = Query(time_min=datetime(2020, 1, 1))  # noqa: DTZ001 - a naive time means UTC
    assert naive.time_min == datetime(2020, 1, 1, tzinfo=UTC)
    mjd = Query.from_params(since="58000.5")
    assert mjd.time_min == datetime(2017, 9, 4, 12, tzinfo=UTC)


def test_unknown_tag_is_refused_by_every_backend(archive: Archive) -> None:
    with pytest.raises(QueryError, match=r"unknown tag 'grb-nope': known tags are .*gamma") as info:
        archive.search(Query(tags=("gw", "grb-nope")))
    assert "retraction" in str(info.value)


def test_cursor_of_another_sort_order_is_refused(archive: Archive) -> None:
    page = archive.search(Query(limit=3))
    assert page.next_cursor is not None
    with pytest.raises(QueryError, match="cursor belongs to sort time_desc"):
        Query(limit=3, sort="time_asc", cursor=page.next_cursor)


# Export -------------------------------------------------------------------------------------------------------------
def test_export_json_csv_votable(archive: Archive) -> None:
    page = archive.search(Query(cone=(0.0, 0.0, 60.0), limit=40))
    items = page.items
    assert 5 < len(items) < 40
    as_json = json.loads(export(items, "json"))
    assert [r["broker_id"] for r in as_json] == [s.broker_id for s in items]
    assert as_json[0]["ra"] == items[0].ra
    rows = list(csv.DictReader(io.StringIO(export(items, "csv").decode())))
    assert [r["broker_id"] for r in rows] == [s.broker_id for s in items]
    assert [r["tags"] for r in rows] == [";".join(s.tags) for s in items]
    table = parse_single_table(io.BytesIO(export(items, "votable"))).to_table()
    assert len(table) == len(items)
    assert str(table["ra"].unit) == "deg"
    assert str(table["far"].unit) == "Hz"
    assert str(table["separation"].unit) == "deg"
    assert str(table["event_mjd"].unit) == "d"
    assert list(table["broker_id"]) == [s.broker_id for s in items]
    assert np.allclose(np.asarray(table["dec"], dtype=float), np.array([s.dec for s in items], dtype=float))
    with_far = [k for k, s in enumerate(items) if s.far is not None]
    without_far = [k for k, s in enumerate(items) if s.far is None]
    assert with_far
    assert without_far
    assert np.allclose([table["far"][k] for k in with_far], np.array([items[k].far for k in with_far], dtype=float))
    assert all(table["far"].mask[k] for k in without_far)
    mjd0 = datetime(1858, 11, 17, tzinfo=UTC)
    for k, s in enumerate(items):
        if s.event_time is not None:
            assert table["event_mjd"][k] == pytest.approx((s.event_time - mjd0).total_seconds() / 86400, abs=1e-8)
    empty = parse_single_table(io.BytesIO(export((), "votable"))).to_table()
    assert len(empty) == 0


# Revisions and the latest version ----------------------------------------------------------------------------------
def ms181101ab_sequence() -> list[ArchivedAlert]:
    """The MS181101ab Kafka JSON notices in publication order, with the states a revision tracker gives them."""
    items = archived([MS181101AB / f"MS181101ab-{n}.json" for n in MS181101AB_ORDER])
    assert [i.alert.kind for i in items] == ["early_warning", "preliminary", "initial", "update", "update",
                                             "retraction"]
    out = []
    for i, state in zip(items, MS181101AB_STATES, strict=True):
        a = dataclasses.replace(i.alert, revision_state=state)  # type: ignore[arg-type]
        out.append(ArchivedAlert(a, i.source, encode_alert(a)))
    return out


def test_revisions_and_latest_follow_the_ms181101ab_sequence(fresh: Archive) -> None:
    seq = ms181101ab_sequence()
    key = "LVK/MS181101ab"
    seen: list[str] = []
    for item in seq:  # one notice per batch, as they were published
        fresh.write_batch([item])
        seen.append(item.alert.broker_id)
        latest = fresh.latest(key)
        assert latest is not None
        assert latest.broker_id == item.alert.broker_id  # each notice supersedes the previous one
        assert [a.broker_id for a in fresh.revisions(key)] == seen
    assert fresh.latest(key) == seq[-1].alert
    assert seq[-1].alert.kind == "retraction"
    # initial, update and ext-update share their issue time: arrival order decides
    assert seq[2].alert.issued == seq[3].alert.issued == seq[4].alert.issued
    # a stale version (an older notice delivered late, here re-issued with a later time) never becomes latest
    late = seq[1].alert
    retracted_at = seq[-1].alert.issued
    assert retracted_at is not None
    stale = dataclasses.replace(
        late, revision_state="stale", issued=retracted_at + timedelta(hours=1),
        provenance=Provenance(late.provenance.source_format, late.provenance.parser_version, "f" * 64, 1),
    )
    assert fresh.write_batch([ArchivedAlert(stale, seq[1].source, encode_alert(stale))]) == 1
    assert fresh.latest(key) == seq[-1].alert
    assert fresh.revisions(key)[-1].broker_id == stale.broker_id  # the stale one is the newest by issue time
    latest_page = fresh.search(Query(latest_only=True, text="ms181101ab"))
    assert [s.broker_id for s in latest_page.items] == [seq[-1].alert.broker_id]
    assert latest_page.items[0].revision_state == "retraction"
    assert fresh.latest("LVK/nothing") is None
    assert fresh.revisions("LVK/nothing") == []


def test_latest_of_a_whole_batch(fresh: Archive) -> None:
    seq = ms181101ab_sequence()
    fresh.write_batch(seq[::-1][:3] + seq[:3])  # shuffled inside one batch
    assert fresh.latest("LVK/MS181101ab") == seq[-1].alert
    flagged = fresh.search(Query(latest_only=True))
    assert [s.broker_id for s in flagged.items] == [seq[-1].alert.broker_id]


# Coincidences -------------------------------------------------------------------------------------------------------
def test_coincidences_upsert_and_count_on_summaries(fresh: Archive, corpus: list[ArchivedAlert]) -> None:
    seq = ms181101ab_sequence()
    grb = next(i for i in corpus if i.alert.event_key == "Fermi/745121685")
    other = next(i for i in corpus if i.alert.event_key.startswith("IceCube/"))
    fresh.write_batch([*seq[:3], grb, other])
    gw = seq[2].alert

    def coinc(b: Alert, status: str, **kw: Any) -> Coincidence:
        return Coincidence(
            coincidence_id=f"gw-cbc/grb:{gw.event_key}:{b.event_key}", rule="gw-cbc/grb", tag="gw-grb",
            status=status, a_broker_id=gw.broker_id, a_event_key=gw.event_key,  # type: ignore[arg-type]
            a_messenger="gw", b_broker_id=b.broker_id, b_event_key=b.event_key, b_messenger=b.messenger,
            time_difference=2.0, window=(-1.0, 5.0), spatial_test="skymap-point", overlap=3.5, **kw)

    first = coinc(grb.alert, "active")
    second = coinc(other.alert, "active")
    fresh.write_coincidences([first, second])
    assert fresh.coincidences(gw.event_key) == [second, first]  # last written first
    assert fresh.coincidences(grb.alert.event_key) == [first]
    assert fresh.coincidences() == [second, first]
    assert fresh.coincidences(limit=1) == [second]
    page = fresh.search(Query(text="ms181101ab"))
    assert {s.n_coincidences for s in page.items} == {2}
    withdrawn = first.withdrawn("MS181101ab retracted")
    fresh.write_coincidences([withdrawn])
    assert fresh.coincidences(grb.alert.event_key) == [withdrawn]
    assert fresh.coincidences() == [withdrawn, second]
    counts = {s.event_key: s.n_coincidences for s in fresh.search(Query()).items}
    assert counts == {gw.event_key: 1, grb.alert.event_key: 0, other.alert.event_key: 1}
    assert fresh.coincidences("Nobody/0") == []


# Failures -----------------------------------------------------------------------------------------------------------
def test_sqlite_file_unreadable_raises_archive_error(tmp_path: Path, corpus: list[ArchivedAlert]) -> None:
    path = tmp_path / "a.sqlite3"
    a = SQLiteArchive(path)
    a.write_batch(corpus[:5])
    for f in tmp_path.iterdir():  # the database, its WAL and shared memory: all overwritten
        f.write_bytes(b"\xa5" * max(f.stat().st_size, 4096))
    for call in (lambda: a.search(Query()), a.ping, a.count, a.known_tags, lambda: a.get("x"),
                 lambda: a.write_batch(corpus[5:6])):
        with pytest.raises(ArchiveError, match="file is not a database"):
            call()
    with pytest.raises(ArchiveError, match=f"cannot open archive {path}"):
        SQLiteArchive(path)
    with pytest.raises(ArchiveError, match="cannot open archive"):
        SQLiteArchive(tmp_path)  # a folder


def test_elasticsearch_down_raises_archive_error(request: pytest.FixtureRequest, corpus: list[ArchivedAlert]) -> None:
    with es_endpoint(request) as ep:
        a = ep.archive(request_timeout=2.0, max_retries=1)
        a.write_batch(corpus[:5])
        a.ping()
        if ep.stop is None:
            pytest.skip("a real Elasticsearch cannot be stopped from the tests (see the credentials test)")
        ep.stop()  # the osmem clone stops serving: connections are refused
        for call in (a.ping, lambda: a.search(Query()), a.count, a.known_tags, lambda: a.get("x"),
                     lambda: a.write_batch(corpus[5:6]), lambda: a.recent(3)):
            with pytest.raises(ArchiveError, match=r"archive http://127\.0\.0\.1:\d+"):
                call()
        with pytest.raises(ArchiveError, match="setting up the indices failed"):
            ElasticsearchArchive(ep.url, index="again", client_options=ep.client_options, max_retries=0)


def test_elasticsearch_credentials_never_appear_in_errors() -> None:
    with pytest.raises(ArchiveError) as info:
        ElasticsearchArchive("http://elastic:s3cret@127.0.0.1:9", index="x", max_retries=0, request_timeout=1.0)
    assert "s3cret" not in str(info.value)
    assert "http://127.0.0.1:9" in str(info.value)


# Backend specifics --------------------------------------------------------------------------------------------------
def test_elasticsearch_templates_have_explicit_mappings(es: EsEndpoint) -> None:
    a = es.archive()
    client = es.client()
    try:
        templates = client.indices.get_index_template(name=a.alerts_index)["index_templates"]
        mappings = templates[0]["index_template"]["template"]["mappings"]
        assert mappings["dynamic"] == "strict"
        props = mappings["properties"]
        assert props["avro"]["type"] == "binary"
        assert props["props"]["type"] == "nested"
        assert props["hpx"]["type"] == "long"
        assert props["tags"]["type"] == "keyword"
        assert props["event_time"]["type"] == "date"
        live = client.indices.get_mapping(index=a.alerts_index)[a.alerts_index]["mappings"]["properties"]
        assert live["props"]["type"] == "nested"
        assert live["broker_id"]["type"] == "keyword"
    finally:
        client.close()
        a.close()


def test_sqlite_plans_use_the_indexes(tmp_path: Path, corpus: list[ArchivedAlert],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    a = SQLiteArchive(tmp_path / "a.sqlite3")
    a.write_batch(corpus)

    def plan(q: Query) -> str:
        source = a._plan(q)
        where, params = a._filters(q, source[0])
        rows = a._db.execute(
            f"EXPLAIN QUERY PLAN SELECT 1 FROM {source[1]} WHERE {' AND '.join(where) or '1'}",  # noqa: S608
            [*source[2], *params],
        ).fetchall()
        return " | ".join(r[-1] for r in rows)

    cone = plan(Query(cone=(10.0, 20.0, 5.0), tags=("gamma",), time_min=datetime(2020, 1, 1, tzinfo=UTC)))
    assert "USING INDEX alerts_hpx_t (hpx>? AND hpx<?)" in cone
    assert "SEARCH g2 USING PRIMARY KEY (tag=? AND t_us=? AND broker_id=?)" in cone
    tag = plan(Query(tags=("gamma",), time_min=datetime(2020, 1, 1, tzinfo=UTC)))
    assert "SEARCH g USING PRIMARY KEY (tag=? AND t_us>?)" in tag
    assert "SCAN" not in tag
    assert "alerts_t" in plan(Query(messengers=("gw",)))
    text = plan(Query(text="MS181101", tags=("gw",)))
    assert a._plan(Query(text="MS181101"))[0] == "text"
    assert "SEARCH a USING INDEX sqlite_autoindex_alerts_1 (broker_id=?)" in text
    assert a._plan(Query(text="fermi"))[0] == "text"
    monkeypatch.setattr("broker.archive.sqlite.TEXT_DRIVE_MAX", 5)  # "fermi" is now a common needle
    assert a._plan(Query(text="fermi"))[0] == "time"
    items, _ = collect(a, Query(text="fermi", limit=4))
    assert [s.broker_id for s in items] == expected(corpus, Query(text="fermi"))
    assert "USING COVERING INDEX alerts_t" in plan(Query(messengers=("gw",), latest_only=True))
    a.close()


def test_sqlite_migrates_a_version_0_archive(tmp_path: Path, corpus: list[ArchivedAlert]) -> None:
    """A file written before search existed (schema version 0) opens, migrated, and answers queries."""
    import sqlite3

    import healpy as hp

    def us(t: datetime | None) -> int | None:
        return None if t is None else int(round(t.timestamp() * 1e6))

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V0)
    for k, item in enumerate(corpus):  # the rows the version-0 writer made
        a = item.alert
        pos = a.position
        r = a.region
        radius = r.radius if isinstance(r, Circle) else r.semi_major if isinstance(r, Ellipse) else None
        hpx = None if pos is None else int(hp.ang2pix(1 << 14, pos[0], pos[1], nest=True, lonlat=True))
        db.execute(
            "INSERT INTO alerts VALUES (" + ",".join("?" * 24) + ")",  # noqa: S608 - fixed text
            (a.broker_id, a.event_key, a.mission, a.event_id, a.revision, a.kind, int(a.is_test), a.messenger,
             a.instrument, a.notice_type, us(a.event_time), us(a.issued), 1_700_000_000_000_000 + k,
             None if pos is None else pos[0], None if pos is None else pos[1], radius, hpx, a.far,
             json.dumps(list(a.tags)), a.provenance.raw_sha256, "t", 0, k, item.encoded),
        )
        db.executemany("INSERT OR IGNORE INTO alert_tags VALUES (?, ?)", [(t, a.broker_id) for t in a.tags])
    db.commit()
    db.close()
    archive = SQLiteArchive(path)
    assert archive.count() == len(corpus)
    for q in [Query.from_params(limit="9", **p) for p in QUERIES[:12]] + [Query(cone=c, limit=9) for c in CONES[:5]]:
        items, _ = collect(archive, q)
        assert [s.broker_id for s in items] == expected(corpus, q), q
    assert archive.latest("LVK/MS181101ab") is not None
    archive.close()
    again = SQLiteArchive(path)  # already migrated: opens as is
    assert again.count() == len(corpus)
    again.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1


def test_total_is_none_past_the_limit(archive: Archive, corpus: list[ArchivedAlert],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("broker.archive.sqlite", "broker.archive.elastic"):
        monkeypatch.setattr(f"{module}.TOTAL_LIMIT", 20)
    assert archive.search(Query(limit=5)).total is None
    assert archive.search(Query(tags=("gw",), limit=5)).total == len(expected(corpus, Query(tags=("gw",))))
    assert archive.search(Query(cone=(345.8, 9.0, 2.0))).total == 1
    assert archive.search(Query(cone=(0.0, 0.0, 90.0), limit=5)).total is None  # more than 20
    assert archive.search(Query(cone=(0.0, 0.0, 90.0), limit=50)).total == 42  # all on the first page: known
    assert TOTAL_LIMIT == 10_000
