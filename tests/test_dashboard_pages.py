# SPDX-License-Identifier: Apache-2.0
"""The dashboard's page logic (Streamlit AppTest) and its sky plots, on real notices.

The archive is built once per module from the bundled real notices, run
through the real pipeline (annotators and filters, which also write the
filter statistics file), and written by the real SQLite archive.  Each page
runs in Streamlit's AppTest with the settings in ``MMBROKER_*`` variables,
as ``mmbroker ui`` passes them.  The browser test (``test_dashboard_browser``)
drives the same pages in Chromium against ``mmbroker up``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import healpy as hp
import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from broker.archive import ArchivedAlert, open_archive
from broker.avro import encode_alert
from broker.config import Settings
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.model import Alert, Coincidence, SourceMessage
from broker.pipeline import build_pipeline
from broker.replay import guess_topic, notice_paths, sample_dir
from ui import skyplot

NOTICES = Path(__file__).parent / "data" / "notices"


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """AppTest runs the page scripts as ``__main__`` and leaves that module installed: a later
    ``multiprocessing`` spawn (the filter sandbox, the parse pool) would then re-run the page script in
    its child and die.  Put the real ``__main__`` back after each test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@dataclass(frozen=True)
class Demo:
    """An archive of the bundled real notices, annotated and filtered, and the settings pointing at it."""

    settings: Settings
    alerts: tuple[Alert, ...]

    def by_event(self, event_id: str) -> list[Alert]:
        return [a for a in self.alerts if a.event_id == event_id]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("dashboard")
    settings = Settings(
        state_dir=root / "state", archive_path=root / "state" / "archive.sqlite3", coincidences=False,
        filter_dir=root / "no-user-filters",
    )
    parsed: list[tuple[Alert, SourceMessage]] = []
    for i, path in enumerate(notice_paths([sample_dir()])):
        payload = path.read_bytes()
        try:
            alert = parse(payload)
        except RejectedNotice:
            continue
        parsed.append((alert, SourceMessage(guess_topic(path), 0, i, payload)))
    pipeline = build_pipeline(settings)
    try:
        alerts = pipeline.run([a for a, _ in parsed])
    finally:
        pipeline.close()  # writes the filter statistics file
    archive = open_archive(settings)
    try:
        archive.write_batch([
            ArchivedAlert(a, src, encode_alert(a)) for a, (_, src) in zip(alerts, parsed, strict=True)
        ])
    finally:
        archive.close()
    return Demo(settings, tuple(alerts))


@pytest.fixture
def env(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> Iterator[Demo]:
    """The dashboard's environment: the demo archive, no Kafka cluster; fresh Streamlit caches."""
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "MMBROKER_BOOTSTRAP_SERVERS", "MMBROKER_CONFIG", "MMBROKER_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MMBROKER_STATE_DIR", str(demo.settings.state_dir))
    monkeypatch.setenv("MMBROKER_ARCHIVE_PATH", str(demo.settings.archive_path))
    monkeypatch.setenv("MMBROKER_FILTER_DIR", str(demo.settings.filter_dir))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield demo
    st.cache_resource.clear()  # stops the live feed's thread
    st.cache_data.clear()


def page_test(page: Callable[[], None], **query: str) -> AppTest:
    """Run one page function in AppTest, with the app's pages registered (for links) and query parameters."""

    def script(name: str) -> None:
        import importlib

        import streamlit as st

        from ui import shared

        pages = {key: st.Page(lambda: None, title=key, url_path=key) for key in
                 ("feed", "sky", "alert", "filters", "search", "subscribe")}
        shared.register_pages(pages)
        module, func = name.rsplit(":", 1)
        getattr(importlib.import_module(module), func)()

    at = AppTest.from_function(script, args=(f"{page.__module__}:{page.__name__}",), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def texts(at: AppTest) -> str:
    """Every markdown, caption, info, warning and error text of the page, joined."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.warning] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


# --------------------------------------------------------------------------------------------- pages


def test_feed_falls_back_to_the_archive_without_kafka(env: Demo) -> None:
    from ui.views.feed import feed_page

    at = page_test(feed_page)
    assert not at.exception
    assert not at.error  # the archive is up
    body = texts(at)
    assert "not connected" in [m.value for m in at.metric if m.label == "Kafka"][0]
    assert "no Kafka cluster" in body  # the reason, as a warning
    archived = [m.value for m in at.metric if m.label == "Archived alerts"][0]
    assert int(archived) == len({a.broker_id for a in env.alerts})
    assert "from the archive (Kafka feed not connected)" in body
    assert "S230518h" in body  # a real GW event of the bundled notices, listed with a link
    assert 'href="alert?broker_id=' in body


def test_feed_shows_the_archive_banner_when_the_archive_is_missing(env: Demo, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from ui.views.feed import feed_page

    monkeypatch.setenv("MMBROKER_ARCHIVE_PATH", str(tmp_path / "gone" / "archive.sqlite3"))
    at = page_test(feed_page)
    assert not at.exception
    assert any("Archive unavailable" in e.value and "does not exist" in e.value for e in at.error)
    assert not (tmp_path / "gone").exists()  # the dashboard never creates an archive


def test_search_bad_parameters_show_the_query_error(env: Demo) -> None:
    from ui.views.search import search_page

    cases = {
        ("q_ra", "400"): "RA",
        ("q_radius", "-1"): "radius",
        ("q_since", "2023-05-19"): "time",  # with until before it: an inverted range
        ("q_tag", "no-such-tag"): "no-such-tag",
    }
    for (field, value), needle in cases.items():
        at = page_test(search_page)
        at.text_input(key="q_ra").input("10")
        at.text_input(key="q_dec").input("20")
        at.text_input(key="q_radius").input("5")
        if field == "q_since":
            at.text_input(key="q_until").input("2023-05-18")
        at.text_input(key=field).input(value)
        at.button[0].click()  # the form's submit button
        at.run()
        assert not at.exception, (field, at.exception)
        errors = [e.value for e in at.error]
        assert len(errors) == 1, (field, errors)
        assert errors[0].startswith("Invalid search:"), errors
        assert needle.lower() in errors[0].lower(), (field, errors)


def test_search_finds_an_event_and_offers_downloads(env: Demo) -> None:
    from ui.views.search import search_page

    at = page_test(search_page)
    at.text_input(key="q_text").input("S230524x")
    at.button[0].click()
    at.run()
    assert not at.exception
    assert not at.error
    body = texts(at)
    expected = [a for a in env.alerts if "S230524x" in (a.event_id, a.event_name)]
    assert expected
    for a in expected:
        assert a.broker_id in body
    labels = sorted(b.label for b in at.get("download_button"))
    assert labels == ["CSV", "JSON", "VOTable"]


def test_search_cone_lists_only_alerts_inside(env: Demo) -> None:
    from ui.views.search import search_page

    at = page_test(search_page)
    ra, dec, radius = 140.05, -39.05, 2.0  # a GBM localization of the bundled notices
    for key, value in (("q_ra", ra), ("q_dec", dec), ("q_radius", radius)):
        at.text_input(key=key).input(str(value))
    at.number_input(key="q_limit").set_value(1000)
    at.button[0].click()
    at.run()
    assert not at.error
    body = texts(at)
    inside = set()
    for a in env.alerts:
        pos = a.position
        if pos is not None and np.degrees(hp.rotator.angdist([ra, dec], list(pos), lonlat=True))[0] <= radius:
            inside.add(a.broker_id)
    assert inside
    shown = {b for b in {a.broker_id for a in env.alerts} if b in body}
    assert shown == inside


def test_alert_page_shows_revisions_matches_and_raw_notice(env: Demo) -> None:
    from ui.views.alert import alert_page

    gw = env.by_event("S230518h")[0]
    at = page_test(alert_page, event=gw.event_key)
    assert not at.exception
    assert not at.error
    assert any("S230518h" in h.value for h in at.header)
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["Properties", "Localization", "Catalog matches", "Coincidences", "Revisions", "Raw notice"]
    body = texts(at)
    assert "No coincidences for this event yet." in body
    assert f"<code>{gw.broker_id}</code> ← <b>latest</b>" in body
    matched = {m.source_id for ann in gw.annotations for m in ann.matches}
    assert matched
    match_table = next(t.value for t in at.table if "source" in t.value.columns)
    assert set(match_table["source"]) == matched
    raw_text = "\n".join(c.value for c in at.code)
    assert '"superevent_id": "S230518h"' in raw_text


def test_alert_page_marks_the_retraction_and_lists_every_revision(env: Demo) -> None:
    from ui.views.alert import alert_page

    versions = env.by_event("MS181101ab")
    retraction = next(a for a in versions if a.kind == "retraction")
    at = page_test(alert_page, broker_id=retraction.broker_id)
    assert not at.exception
    assert any("RETRACTED" in e.value for e in at.error)
    body = texts(at)
    same_key = {a.broker_id for a in versions if a.event_key == retraction.event_key}
    assert len(same_key) >= 2
    assert all(f"<code>{b}</code>" in body for b in same_key)
    assert "binary" in body.lower() or "Binary" in body  # an Avro notice is shown as bytes


def test_alert_page_unknown_id_is_a_warning_not_an_error(env: Demo) -> None:
    from ui.views.alert import alert_page

    at = page_test(alert_page, broker_id="mmb-000000000000000000000000")
    assert not at.exception
    assert not at.error
    assert any("No alert with broker id" in w.value for w in at.warning)


def test_filters_page_merges_registry_state_and_statistics(env: Demo) -> None:
    from broker.filter_registry import load_registry
    from ui.views.filters import filters_page

    at = page_test(filters_page)
    assert not at.exception
    rows = at.table[0].value
    registry = load_registry(None, import_user=False)
    assert sorted(rows["filter"]) == sorted(i.name for i in registry)
    gw = rows[rows["filter"] == "gw-significant"].iloc[0]
    assert gw["enabled"] == "enabled"
    s230518h = next(a for a in env.alerts if a.event_id == "S230518h")
    assert "gw-significant" in s230518h.tags
    assert int(gw["calls"]) > 0
    assert float(gw["p50 (µs)"]) > 0
    assert [m.value for m in at.metric if m.label == "Registered filters"] == [str(len(registry))]


def test_filters_page_shows_a_disabled_filter(env: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from broker.filter_registry import load_registry
    from ui.views.filters import filters_page

    state = tmp_path / "state"
    shutil.copytree(env.settings.state_dir, state)
    monkeypatch.setenv("MMBROKER_STATE_DIR", str(state))
    load_registry(state / "filters-state.json", import_user=False).disable("gw-significant", "too noisy for us")
    at = page_test(filters_page)
    rows = at.table[0].value
    assert rows[rows["filter"] == "gw-significant"].iloc[0]["enabled"] == "disabled"
    assert any("too noisy for us" in w.value for w in at.warning)


def test_sky_page_draws_the_map_and_says_no_coincidences(env: Demo) -> None:
    from ui.views.skymap import sky_page

    at = page_test(sky_page)
    assert not at.exception
    images = at.get("image")
    assert len(images) == 1
    body = texts(at)
    assert "No coincidences yet." in body
    with_maps = {a.event_name or a.event_id for a in env.alerts if a.skymap is not None}
    table = at.table[0].value
    assert set(table["event"]) == with_maps


def test_subscribe_page_without_kafka_lists_known_tags_and_commands(env: Demo) -> None:
    from ui.views.subscribe import subscribe_page

    at = page_test(subscribe_page)
    assert not at.exception
    assert any("no Kafka cluster" in e.value for e in at.error)
    codes = [c.value for c in at.code]
    assert "mmbroker subscribe --tag gw-significant --from-beginning" in codes
    assert any('consumer.subscribe(["mmbroker.tag.gw"])' in c for c in codes)


# --------------------------------------------------------------------------------------------- live feed


@pytest.mark.kafka
def test_live_feed_reads_back_the_newest_alerts(env: Demo, kafka_bootstrap: str) -> None:
    from broker.kafka.clients import ensure_topics, make_producer
    from ui.livefeed import LiveFeed

    s = Settings(bootstrap_servers=kafka_bootstrap, prefix=f"t{uuid.uuid4().hex[:10]}")
    ensure_topics(s, [s.alerts_topic])
    producer = make_producer(s)
    sent = list(env.alerts[:8])
    for a in sent:
        producer.produce(s.alerts_topic, encode_alert(a))
        producer.flush(10)
    feed = LiveFeed(lambda: s, capacity=5, retry_s=0.5).start()
    try:
        assert feed.wait_for(5, timeout=30)
        snap = feed.snapshot()
        assert snap.connected
        assert {i.alert.broker_id for i in snap.items} == {a.broker_id for a in sent[-5:]}
        producer.produce(s.alerts_topic, encode_alert(env.alerts[8]))
        producer.flush(10)
        deadline = time.monotonic() + 20
        while feed.snapshot().items[0].alert.broker_id != env.alerts[8].broker_id:
            assert time.monotonic() < deadline, "the new alert did not arrive"
            time.sleep(0.1)
        assert feed.snapshot().received == 5 + 1  # read back exactly `capacity` messages, then the new one
    finally:
        feed.stop()


@pytest.mark.kafka
def test_feed_page_keeps_listing_kafka_alerts_when_the_archive_is_down(
    env: Demo, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from broker.kafka.clients import ensure_topics, make_producer
    from ui.views.feed import feed_page

    prefix = f"t{uuid.uuid4().hex[:10]}"
    s = Settings(bootstrap_servers=kafka_bootstrap, prefix=prefix)
    ensure_topics(s, [s.alerts_topic])
    producer = make_producer(s)
    gw = env.by_event("S230518h")[0]
    producer.produce(s.alerts_topic, encode_alert(gw))
    producer.flush(10)
    monkeypatch.setenv("MMBROKER_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MMBROKER_PREFIX", prefix)
    monkeypatch.setenv("MMBROKER_ARCHIVE_PATH", str(tmp_path / "missing.sqlite3"))

    deadline = time.monotonic() + 30
    while True:
        at = page_test(feed_page)
        received = [m.value for m in at.metric if m.label == "Alerts received"]
        if received == ["1"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert received == ["1"]
    assert any("Archive unavailable" in e.value for e in at.error)
    body = texts(at)
    assert f"showing 1 from Kafka topic {prefix}.alerts" in body
    assert "S230518h" in body


# --------------------------------------------------------------------------------------------- sky plots


def test_mollweide_ra_increases_to_the_left() -> None:
    x = skyplot.mollweide_x([0.0, 90.0, 180.0, 270.0, 359.0])
    assert x[0] == pytest.approx(np.pi)
    assert x[1] == pytest.approx(np.pi / 2)
    assert x[2] == pytest.approx(0.0)
    assert x[3] == pytest.approx(-np.pi / 2)
    assert np.all(np.diff(x[1:]) < 0)
    assert skyplot.ra_of_x(x[1:]) == pytest.approx([90.0, 180.0, 270.0, 359.0])


def test_error_circle_points_are_at_the_radius() -> None:
    ra, dec = skyplot.small_circle(350.0, 80.0, 12.5)
    sep = np.degrees(hp.rotator.angdist(np.vstack([ra, dec]), [350.0, 80.0], lonlat=True))
    assert np.allclose(sep, 12.5, atol=1e-9)
    pieces = skyplot.split_at_wrap(skyplot.mollweide_x(ra), np.radians(dec))
    assert all(np.all(np.abs(np.diff(p[0])) <= np.pi) for p in pieces)


def test_gnomonic_round_trip() -> None:
    rng = np.random.default_rng(3)
    xi, eta = rng.uniform(-30, 30, 200), rng.uniform(-30, 30, 200)
    ra, dec = skyplot.inverse_gnomonic(123.0, -45.0, xi, eta)
    xi2, eta2 = skyplot.gnomonic(123.0, -45.0, ra, dec)
    assert np.allclose(xi, xi2, atol=1e-9)
    assert np.allclose(eta, eta2, atol=1e-9)


def _pixel_centres(order: int = 9) -> tuple[np.ndarray, np.ndarray, float]:
    nside = 1 << order
    ra, dec = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)), nest=True, lonlat=True)
    return ra, dec, hp.nside2pixarea(nside, degrees=True)


def test_contours_from_the_annotation_moc_hold_the_annotated_area(env: Demo) -> None:
    ra, dec, pixarea = _pixel_centres()
    checked = 0
    for a in env.alerts:
        ann = a.annotation("skymap")
        if ann is None or not ann.credible_regions:
            continue
        for cr in ann.credible_regions:
            inside = skyplot.moc_contains(cr.moc, ra, dec)
            assert inside.sum() * pixarea == pytest.approx(cr.area, rel=0.03), (a.event_id, cr.level)
            checked += 1
    assert checked >= 4  # two GW sky maps, 50 % and 90 % each


def test_contours_from_the_sky_map_match_its_credible_areas(env: Demo) -> None:
    ra, dec, pixarea = _pixel_centres()
    maps = [a.skymap for a in env.alerts if a.skymap is not None]
    assert maps
    for sm in maps:
        levels = skyplot.skymap_levels_at(sm, ra, dec)
        for p in (0.5, 0.9):
            assert (levels <= p).sum() * pixarea == pytest.approx(sm.credible_area(p), rel=0.03)


def test_allsky_figure_draws_every_located_alert(env: Demo) -> None:
    fig, summary = skyplot.allsky_figure(list(env.alerts))
    assert summary.points == sum(a.position is not None for a in env.alerts)
    assert summary.contours == sum(a.skymap is not None for a in env.alerts)
    assert summary.links == 0
    png = skyplot.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_localization_figure_for_regions_and_maps(env: Demo) -> None:
    kinds = {"circle": None, "skymap": None}
    for a in env.alerts:
        if a.skymap is not None and kinds["skymap"] is None:
            kinds["skymap"] = a
        elif a.skymap is None and type(a.region).__name__ == "Circle" and kinds["circle"] is None:
            kinds["circle"] = a
    for name, a in kinds.items():
        assert a is not None, name
        fig = skyplot.localization_figure(a)
        assert fig is not None
        ax = fig.axes[0]
        left, right = ax.get_xlim()
        assert left > right  # east (increasing RA) to the left


def test_ui_command_passes_the_settings_to_the_dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.cli.ui_cmd import dashboard_env, streamlit_command
    from broker.config import load_settings

    s = Settings(state_dir=tmp_path / "st", archive_path=tmp_path / "a.sqlite3", prefix="demo",
                 bootstrap_servers="127.0.0.1:1234")
    env = dashboard_env(s, base={})
    for k in [k for k in os.environ if k.startswith(("MMBROKER_", "KAFKA_"))]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen = load_settings()
    assert (seen.state_dir, seen.archive_path) == (s.state_dir.resolve(), s.archive_path.resolve())
    assert (seen.prefix, seen.bootstrap_servers, seen.archive_backend) == ("demo", "127.0.0.1:1234", "sqlite")
    cmd = streamlit_command(8600, "127.0.0.1")
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert Path(cmd[4]).name == "app.py"
    assert Path(cmd[4]).is_file()
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"


@pytest.fixture
def with_coincidence(env: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Demo, Coincidence]:
    """A copy of the demo archive holding one coincidence between the GW event S230518h and a Fermi GBM burst."""
    import shutil

    state = tmp_path / "state"
    shutil.copytree(env.settings.state_dir, state)
    settings = env.settings.model_copy(update={"state_dir": state, "archive_path": state / "archive.sqlite3"})
    gw = env.by_event("S230518h")[0]
    grb = next(a for a in env.alerts if a.instrument == "GBM" and a.region is not None)
    assert gw.event_time is not None
    assert grb.event_time is not None
    c = Coincidence(
        coincidence_id="gw-cbc/grb:LVK/S230518h:" + grb.event_key, rule="gw-cbc/grb", tag="gw-grb", status="active",
        a_broker_id=gw.broker_id, a_event_key=gw.event_key, a_messenger="gw",
        b_broker_id=grb.broker_id, b_event_key=grb.event_key, b_messenger="gamma",
        time_difference=(grb.event_time - gw.event_time).total_seconds(), window=(-1.0, 5.0),
        spatial_test="skymap-point", overlap=3.2, separation=12.0, far_temporal=1e-9, far_spatiotemporal=2e-10,
    )
    archive = open_archive(settings)
    try:
        archive.write_coincidences([c])
    finally:
        archive.close()
    monkeypatch.setenv("MMBROKER_STATE_DIR", str(state))
    monkeypatch.setenv("MMBROKER_ARCHIVE_PATH", str(settings.archive_path))
    return Demo(settings, env.alerts), c


def test_sky_and_alert_pages_show_archived_coincidences(with_coincidence: tuple[Demo, Coincidence]) -> None:
    from ui.views.alert import alert_page
    from ui.views.skymap import sky_page

    demo, c = with_coincidence
    at = page_test(sky_page)
    assert not at.exception
    assert "No coincidences yet." not in texts(at)
    table = at.table[0].value
    assert list(table["rule"]) == ["gw-cbc/grb"]
    assert (table["a"].iloc[0], table["b"].iloc[0]) == (c.a_event_key, c.b_event_key)
    at = page_test(alert_page, event="LVK/S230518h")
    coinc = next(t.value for t in at.table if "other event" in t.value.columns)
    assert list(coinc["other event"]) == [c.b_event_key]
    assert list(coinc["status"]) == ["active"]


def test_allsky_figure_links_coincident_alerts(with_coincidence: tuple[Demo, Coincidence]) -> None:
    demo, c = with_coincidence
    sides = [a for a in demo.alerts if a.broker_id in (c.a_broker_id, c.b_broker_id)]
    _, summary = skyplot.allsky_figure(sides, [c])
    assert summary.links == 1
    _, summary = skyplot.allsky_figure(sides[:1], [c])  # the other side unknown: nothing to link
    assert summary.links == 0


def test_alert_properties_name_the_tags_an_update_dropped() -> None:
    from dataclasses import replace

    from tests.corpus import NOTICES
    from ui.views.alert import properties_of

    raw = (NOTICES / "gcn-json" / "gwcelery_test_alerts" / "kafka_alert_swift_noloc.json").read_bytes()
    alert = parse(raw)
    assert "Tags dropped by this update" not in dict(properties_of(alert))
    rows = dict(properties_of(replace(alert, revision_state="update", dropped_tags=("grb-well-localized",))))
    assert rows["Tags dropped by this update"] == "grb-well-localized"
    assert rows["Revision state"] == "update"
