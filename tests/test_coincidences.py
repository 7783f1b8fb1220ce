# SPDX-License-Identifier: Apache-2.0
"""Coincidences, revisions and retractions through the pipeline, on both state backends.

The pipeline runs on real notices (``tests/data/notices``); where one side of
a pair is not in the data it is built from a real notice of the same type
(:mod:`tests.coincidence_notices` says which and what was changed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.avro import decode_alert, encode_alert
from broker.coincidence.far import GRB_RATE_HZ
from broker.coincidence.rules import alert_classes, default_rules, load_rules
from broker.coincidence.stage import CoincidenceStage, coincidence_id, window_classes
from broker.config import Settings, load_settings
from broker.errors import ConfigError
from broker.formats import parse
from broker.model import Alert
from broker.pipeline import Pipeline, build_pipeline
from broker.revisions import RevisionPolicy
from broker.state import StateStore, open_state
from tests.coincidence_notices import (
    GRB170817A_TIME,
    GW170817_INITIAL,
    MS181101AB_SEQUENCE,
    gbm_notice,
    grb170817a_notice,
    ms181101ab,
)
from tests.corpus import NOTICES
from tests.redis_fixture import redis_server  # noqa: F401 - fixture

GW_TOPIC = "gcn.classic.voevent.LVC_INITIAL"
GBM_TOPIC = "gcn.classic.voevent.FERMI_GBM_FIN_POS"
IGWN_TOPIC = "igwn.gwalert"


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """A fresh state store of each backend (Redis: a real redis-server on a free port)."""
    if request.param == "memory":
        store = open_state("memory", None, 3 * 86400.0)
    else:
        server = request.getfixturevalue("redis_server")
        store = open_state("redis", server.url, 3 * 86400.0)
    yield store
    store.close()


def make_pipeline(state: StateStore, tmp_path: Path, **overrides: Any) -> Pipeline:
    settings: Settings = load_settings(**{"state_dir": tmp_path / "state", "annotate": False, "filters": False,
                                          **overrides})
    return build_pipeline(settings, state=state)


def run(pipeline: Pipeline, *notices: tuple[bytes, str | None]) -> list[Alert]:
    """Each notice in its own batch, in order (as a single worker sees them), marked done after it as the worker
    does once the batch is published and archived."""
    out = []
    for raw, topic in notices:
        (alert,) = pipeline.run([parse(raw, topic)])
        if isinstance(pipeline.coincidences, CoincidenceStage):
            pipeline.coincidences.state.mark_done({alert.broker_id})
        out.append(alert)
    return out


def gw170817() -> tuple[bytes, str]:
    return GW170817_INITIAL.read_bytes(), GW_TOPIC


def grb170817a() -> tuple[bytes, str]:
    return grb170817a_notice(), GBM_TOPIC


# Classes and rules ----------------------------------------------------------------------------------
def test_real_notices_fall_in_the_expected_classes() -> None:
    gw = parse(*gw170817())
    grb = parse(*grb170817a())
    assert alert_classes(gw) == ("gw-cbc",)
    assert alert_classes(grb) == ("grb",)
    sub = parse((NOTICES / "voevent/fermi/gwcelery_fermi_subthresh_grb_gcn.xml").read_bytes(), GBM_TOPIC)
    assert alert_classes(sub) == ("grb-subthreshold-fermi",)
    snews = parse((NOTICES / "voevent/snews/gwcelery_snews_gcn.xml").read_bytes(), "gcn.classic.voevent.SNEWS")
    assert alert_classes(snews) == ("sn-neutrino",)
    retraction = parse(ms181101ab("retraction"), IGWN_TOPIC)
    assert alert_classes(retraction) == ()


def test_default_rules_are_ravens_windows_in_the_igwn_sign_convention() -> None:
    rules = {r.name: r for r in default_rules((-100.0, 200.0))}
    assert rules["gw-cbc/grb"].window == (-1.0, 5.0)  # RAVEN [-5, +1] s as t_gw - t_grb
    assert rules["gw-cbc/grb-subthreshold-fermi"].window == (-1.0, 11.0)
    assert rules["gw-cbc/grb-subthreshold-swift"].window == (-10.0, 20.0)
    assert rules["gw-burst/grb"].window == (-60.0, 600.0)
    assert rules["gw-burst/sn-neutrino"].window == (-10.0, 10.0)
    assert rules["gw-cbc/neutrino"].window == (-500.0, 500.0)
    assert rules["neutrino/grb"].window == (-100.0, 200.0)


def test_rules_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {a: gw-cbc, b: gamma-burst, window: [-1, 5], tag: x}\n")
    with pytest.raises(ConfigError, match="unknown alert class 'gamma-burst'"):
        load_rules(bad)
    bad.write_text("rules:\n  - {a: gw-cbc, b: grb, window: [5, -1], tag: x}\n")
    with pytest.raises(ConfigError, match="inverted"):
        load_rules(bad)
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - {a: neutrino, b: grb, window: [-3600, 3600], tag: nu-grb-hour}\n")
    (rule,) = load_rules(good)
    assert (rule.name, rule.window, rule.tag) == ("neutrino/grb", (-3600.0, 3600.0), "nu-grb-hour")


# GW170817 / GRB 170817A ---------------------------------------------------------------------------
@pytest.mark.parametrize("gw_first", [True, False], ids=["gw-first", "grb-first"])
def test_gw170817_and_grb170817a_are_found_at_2_02_s(state: StateStore, tmp_path: Path, gw_first: bool) -> None:
    """The real GW170817 Initial notice and GRB 170817A's GBM notice (built from a real GBM Final Position
    notice with the published trigger time and position): one coincidence, Δt = +2.02 s, whichever comes first."""
    pipeline = make_pipeline(state, tmp_path)
    first, second = (gw170817(), grb170817a()) if gw_first else (grb170817a(), gw170817())
    older, newer = run(pipeline, first, second)
    assert older.coincidences == ()
    (c,) = newer.coincidences
    gw, grb = (older, newer) if gw_first else (newer, older)
    assert (c.rule, c.tag, c.status) == ("gw-cbc/grb", "gw-grb", "active")
    assert (c.a_event_key, c.b_event_key) == ("LVK/G298048", "Fermi/524666471")
    assert (c.a_broker_id, c.b_broker_id) == (gw.broker_id, grb.broker_id)
    assert c.time_difference == pytest.approx(2.02, abs=0.005)
    assert c.time_difference == pytest.approx((GRB170817A_TIME - gw.event_time).total_seconds(), abs=1e-6)
    assert c.spatial_test == "none"  # the 2017 LVC Initial VOEvent carries no sky map, only its URL
    assert c.overlap is None
    # RAVEN: FAR_c = (th - tl) * R_grb * FAR_gw with R_grb = 310 / yr
    assert c.far_temporal == pytest.approx(6.0 * (310.0 / (365.0 * 86400.0)) * 3.47773444765e-12, rel=1e-12)
    assert pytest.approx(310.0 / (365.0 * 86400.0)) == GRB_RATE_HZ
    assert c.coincidence_id == coincidence_id(next(r for r in default_rules() if r.name == "gw-cbc/grb"),
                                              "LVK/G298048", "Fermi/524666471")
    assert {"coincidence", "gw-grb"} <= set(newer.tags)
    assert "coincidence" not in older.tags


@pytest.mark.parametrize(("offset_s", "found"), [(-1.5, False), (-0.9, True), (4.9, True), (5.5, False)])
def test_window_edges_of_the_cbc_grb_rule(state: StateStore, tmp_path: Path, offset_s: float, found: bool) -> None:
    """GBM notices built from a real one at t_gw + offset (no real pair exists at these offsets)."""
    gw_alert = parse(*gw170817())
    assert gw_alert.event_time is not None
    grb = gbm_notice(gw_alert.event_time + timedelta(seconds=offset_s), 176.8, -39.8, 11.6)
    _, newer = run(make_pipeline(state, tmp_path), gw170817(), (grb, GBM_TOPIC))
    assert bool(newer.coincidences) is found


def test_test_alerts_never_pair_with_real_ones(state: StateStore, tmp_path: Path) -> None:
    gw_alert = parse(*gw170817())
    assert gw_alert.event_time is not None
    drill = gbm_notice(gw_alert.event_time + timedelta(seconds=2), 176.8, -39.8, 11.6, role="test")
    _, newer = run(make_pipeline(state, tmp_path), gw170817(), (drill, GBM_TOPIC))
    assert newer.is_test
    assert newer.coincidences == ()


def test_no_coincidence_when_the_sky_maps_exclude_it(state: StateStore, tmp_path: Path) -> None:
    """MS181101ab's sky map (user-guide sample) and a GBM notice 2.02 s later: inside the 90 % region it pairs,
    on the opposite side of the sky it does not (both GBM notices built from a real one, role test)."""
    gw = parse(ms181101ab("preliminary"), IGWN_TOPIC)
    assert gw.skymap is not None
    assert gw.event_time is not None
    ra, dec = gw.skymap.max_position()
    t = gw.event_time + timedelta(seconds=2.02)
    inside = gbm_notice(t, ra, dec, 3.0, role="test", trigger_id=1)
    far_away = gbm_notice(t, (ra + 180.0) % 360.0, -dec, 3.0, role="test", trigger_id=2)
    pipeline = make_pipeline(state, tmp_path)
    _, hit, miss = run(pipeline, (ms181101ab("preliminary"), IGWN_TOPIC), (inside, GBM_TOPIC), (far_away, GBM_TOPIC))
    (c,) = hit.coincidences
    assert c.spatial_test == "skymap-point"
    assert c.overlap is not None
    assert c.overlap > 1.0  # the GRB sits at the map's peak: more likely than a random sky position
    assert c.far_spatiotemporal == pytest.approx(c.far_temporal / c.overlap)
    assert miss.coincidences == ()


# Revisions and retractions ----------------------------------------------------------------------------
def test_ms181101ab_sequence_is_one_event_with_its_versions(state: StateStore, tmp_path: Path) -> None:
    pipeline = make_pipeline(state, tmp_path)
    alerts = run(pipeline, *[(ms181101ab(n), IGWN_TOPIC) for n in MS181101AB_SEQUENCE])
    assert {a.event_key for a in alerts} == {"LVK/MS181101ab"}
    assert [a.revision_state for a in alerts] == ["first", "update", "update", "update", "update", "retraction"]
    assert [a.previous_broker_id for a in alerts] == [None] + [a.broker_id for a in alerts[:-1]]
    assert len({a.broker_id for a in alerts}) == len(alerts)
    assert "retraction" in alerts[-1].tags
    assert "test" in alerts[-1].tags  # a mock event: its topics are ``test`` ones, and the retraction follows


def test_retraction_withdraws_the_coincidence_and_reaches_its_topics(state: StateStore, tmp_path: Path) -> None:
    """MS181101ab with a GBM notice at +2.02 s (as in the user guide's ext-update; built from a real GBM notice,
    role test, at the sky-map peak), then the real retraction."""
    gw = parse(ms181101ab("preliminary"), IGWN_TOPIC)
    assert gw.skymap is not None
    assert gw.event_time is not None
    ra, dec = gw.skymap.max_position()
    grb = gbm_notice(gw.event_time + timedelta(seconds=2.02), ra, dec, 3.0, role="test", trigger_id=3)
    pipeline = make_pipeline(state, tmp_path)
    prelim, grb_alert = run(pipeline, (ms181101ab("preliminary"), IGWN_TOPIC), (grb, GBM_TOPIC))
    (found,) = grb_alert.coincidences
    state.put_coincidences([found])  # what the worker does once the batch is published
    state.add_tags({a.event_key: set(a.tags) for a in (prelim, grb_alert)})
    (retraction,) = run(pipeline, (ms181101ab("retraction"), IGWN_TOPIC))
    (withdrawn,) = retraction.coincidences
    assert withdrawn.coincidence_id == found.coincidence_id
    assert withdrawn.status == "withdrawn"
    assert "LVK/MS181101ab retracted" in (withdrawn.reason or "")
    assert {"coincidence", "gw-grb", "retraction", *prelim.tags} <= set(retraction.tags)
    assert state.window.get_event("LVK/MS181101ab") is None
    # after the retraction the GW is gone from the window: a new GBM notice finds nothing
    late = gbm_notice(gw.event_time + timedelta(seconds=3), ra, dec, 3.0, role="test", trigger_id=4)
    (late_alert,) = run(pipeline, (late, GBM_TOPIC))
    assert late_alert.coincidences == ()


def test_out_of_order_revision_is_stale_and_silent(state: StateStore, tmp_path: Path) -> None:
    """The GW170817 Initial notice (revision 1) arriving after a revision-2 copy of itself."""
    pipeline = make_pipeline(state, tmp_path)
    raw = GW170817_INITIAL.read_bytes()
    param = b'name="Pkt_Ser_Num" dataType="string" value='
    newer = raw.replace(param + b'"1"', param + b'"2"')
    assert newer != raw
    second, first = run(pipeline, (newer, GW_TOPIC), (raw, GW_TOPIC))
    assert (second.revision, first.revision) == (2, 1)
    assert second.revision_state == "first"
    assert first.revision_state == "stale"
    assert first.tags == ()
    assert first.previous_broker_id == second.broker_id
    entry = state.window.get_event("LVK/G298048")
    assert entry is not None
    assert entry.broker_id == second.broker_id  # the window keeps the newest version


def test_update_of_an_unseen_event_is_its_first_version(state: StateStore, tmp_path: Path) -> None:
    (update,) = run(make_pipeline(state, tmp_path), (ms181101ab("update"), IGWN_TOPIC))
    assert update.kind == "update"
    assert update.revision_state == "first"
    assert "test" in update.tags


def test_retraction_of_an_unknown_event(state: StateStore, tmp_path: Path) -> None:
    (r,) = run(make_pipeline(state, tmp_path), (ms181101ab("retraction"), IGWN_TOPIC))
    assert r.revision_state == "unknown_retraction"
    assert set(r.tags) == {"test", "retraction"}
    assert r.coincidences == ()
    assert len(state.window) == 0


def test_notices_after_a_retraction_are_silent(state: StateStore, tmp_path: Path) -> None:
    pipeline = make_pipeline(state, tmp_path)
    run(pipeline, (ms181101ab("preliminary"), IGWN_TOPIC), (ms181101ab("retraction"), IGWN_TOPIC))
    (late,) = run(pipeline, (ms181101ab("update"), IGWN_TOPIC))
    assert late.revision_state == "after_retraction"
    assert late.tags == ()
    assert state.window.get_event("LVK/MS181101ab") is None


def test_reprocessing_a_batch_gives_the_same_result(state: StateStore, tmp_path: Path) -> None:
    """A crash before the commit re-delivers the batch: same revision states, the same coincidence re-claimed."""
    pipeline = make_pipeline(state, tmp_path)
    run(pipeline, gw170817())
    batch = [parse(*grb170817a())]
    once = pipeline.run(batch)
    again = pipeline.run(batch)
    assert [a.revision_state for a in again] == [a.revision_state for a in once] == ["first"]
    assert again[0].coincidences == once[0].coincidences
    assert len(once[0].coincidences) == 1


def test_two_workers_racing_publish_a_pair_once(state: StateStore, tmp_path: Path) -> None:
    """Two pipelines sharing the state, in the worst interleaving: worker 2 adds the GRB to the window, worker 1
    adds the GW and searches (finds the GRB), then worker 2 searches (finds the GW): the pair is published once."""
    p1, p2 = make_pipeline(state, tmp_path / "1"), make_pipeline(state, tmp_path / "2")
    assert p2.revisions is not None
    assert isinstance(p2.coincidences, CoincidenceStage)
    (grb,) = p2.revisions.process([parse(*grb170817a())])
    state.window.add([p2.coincidences._entry(grb, window_classes(grb))])
    (gw,) = p1.run([parse(*gw170817())])
    (grb_out,) = p2.coincidences.process([grb])
    assert len(gw.coincidences) == 1
    assert grb_out.coincidences == ()
    assert p2.coincidences.stats.claimed_elsewhere == 1


def test_alerts_without_time_or_class_stay_out_of_the_window(state: StateStore, tmp_path: Path) -> None:
    """A Fermi LAT flare (no coincidence class) and a GW notice stripped of its time stay out; the GW notice enters."""
    pipeline = make_pipeline(state, tmp_path)
    lat_file = next((NOTICES / "gcn-json/fermi/lat").glob("*.json"))
    lat = parse(lat_file.read_bytes(), "gcn.notices.fermi.lat")
    assert alert_classes(lat) == ()
    no_time = replace(parse(*gw170817()), event_time=None, event_id="G298048-no-time")
    pipeline.run([lat, no_time])
    assert len(state.window) == 0
    pipeline.run([parse(*gw170817())])
    assert len(state.window) == 1


# Dropped tags ---------------------------------------------------------------------------------------
SWIFT_BAT = NOTICES / "gcn-json" / "gwcelery_test_alerts"


def test_an_update_that_loses_a_tag_names_it_and_goes_to_that_topic(state: StateStore, tmp_path: Path) -> None:
    """gwcelery's real Swift BAT notices of trigger 694215995: revision 3 with a 0.03 deg position (tagged
    ``grb-well-localized`` by the bundled filter), then the same revision without a position, then again with one.
    The update without a position drops the tag, says so, and is routed to that topic too."""
    pipeline = make_pipeline(state, tmp_path, filters=True)
    try:
        (loc,) = run(pipeline, ((SWIFT_BAT / "kafka_alert_swift.json").read_bytes(), None))
        assert loc.revision_state == "first"
        assert "grb-well-localized" in loc.tags
        assert loc.dropped_tags == ()
        _published(state, loc)
        (noloc,) = run(pipeline, ((SWIFT_BAT / "kafka_alert_swift_noloc.json").read_bytes(), None))
        assert (noloc.revision_state, noloc.region) == ("update", None)
        assert "grb-well-localized" not in noloc.tags
        assert noloc.dropped_tags == ("grb-well-localized",)
        assert decode_alert(encode_alert(noloc)).dropped_tags == ("grb-well-localized",)
        _published(state, noloc)
        (again,) = run(pipeline, ((SWIFT_BAT / "kafka_alert_swift_wskymap.json").read_bytes(), None))
        assert again.revision_state == "update"
        assert "grb-well-localized" in again.tags
        assert again.dropped_tags == ()
    finally:
        pipeline.close()


def test_dropped_tags_spare_routing_and_active_coincidence_tags(state: StateStore, tmp_path: Path) -> None:
    """GRB 170817A found with GW170817, then an update of the GRB without any tag of its own: the messenger tag and
    the tags of the still-active coincidence are not dropped; once the coincidence is withdrawn, they are; and a
    test update never announces drops."""
    pipeline = make_pipeline(state, tmp_path)
    _, grb = run(pipeline, gw170817(), grb170817a())
    (c,) = grb.coincidences
    state.put_coincidences([c])
    state.add_tags({grb.event_key: {*grb.tags, "grb-well-localized"}})
    policy = RevisionPolicy(state)
    bare = replace(grb, tags=("gamma",), coincidences=(), revision_state="update")
    (update,) = policy.process([bare])
    assert update.dropped_tags == ("grb-well-localized",)
    state.put_coincidences([c.withdrawn("test")])
    (update,) = policy.process([bare])
    assert update.dropped_tags == ("coincidence", "grb-well-localized", "gw-grb")
    (test_update,) = policy.process([replace(bare, is_test=True, tags=("test",))])
    assert test_update.dropped_tags == ()


# Retraction racing an update on another worker -------------------------------------------------------
def _published(state: StateStore, alert: Alert) -> None:
    """What the worker records once the alert's batch is published and archived."""
    state.put_coincidences(list(alert.coincidences))
    state.add_tags({alert.event_key: set(alert.tags)})
    state.mark_done({alert.broker_id})


@pytest.mark.parametrize("done_in_time", [True, False])
def test_retraction_waits_for_an_update_another_worker_is_processing(
    state: StateStore, tmp_path: Path, done_in_time: bool
) -> None:
    """MS181101ab Preliminary and a GBM notice at +2.02 s (built from a real GBM notice, role test) are published;
    worker A then processes the real Update, which re-finds the GRB, while worker B takes the real Retraction.
    B waits until A's Update is done and withdraws the pair A found (what one worker would do); if A never
    finishes, B gives up after ``settle_s`` and withdraws what is stored."""
    import threading

    gw = parse(ms181101ab("preliminary"), IGWN_TOPIC)
    assert gw.skymap is not None
    assert gw.event_time is not None
    ra, dec = gw.skymap.max_position()
    grb = gbm_notice(gw.event_time + timedelta(seconds=2.02), ra, dec, 3.0, role="test", trigger_id=5)
    worker_a, worker_b = make_pipeline(state, tmp_path), make_pipeline(state, tmp_path)
    for raw, topic in ((ms181101ab("preliminary"), IGWN_TOPIC), (grb, GBM_TOPIC)):
        (alert,) = worker_a.run([parse(raw, topic)])
        _published(state, alert)
    (update,) = worker_a.run([parse(ms181101ab("update"), IGWN_TOPIC)])  # not published yet
    (found,) = update.coincidences
    assert found.a_broker_id == update.broker_id
    assert isinstance(worker_b.coincidences, CoincidenceStage)
    worker_b.coincidences.settle_s = 5.0 if done_in_time else 0.5
    result: list[Alert] = []
    b = threading.Thread(target=lambda: result.extend(worker_b.run([parse(ms181101ab("retraction"), IGWN_TOPIC)])))
    b.start()
    time.sleep(0.3)
    assert b.is_alive()  # B is waiting for A's update
    if done_in_time:
        _published(state, update)
    b.join(10)
    assert not b.is_alive()
    (retraction,) = result
    assert retraction.revision_state == "retraction"
    (withdrawn,) = retraction.coincidences
    assert withdrawn.status == "withdrawn"
    assert withdrawn.coincidence_id == found.coincidence_id
    # in time: the pair A found; too late: the pair stored before (Preliminary and GRB)
    assert (withdrawn.a_broker_id == update.broker_id) is done_in_time
