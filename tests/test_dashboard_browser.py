# SPDX-License-Identifier: Apache-2.0
"""The dashboard in a real browser: ``mmbroker up`` with the bundled real notices, Chromium driven by Playwright.

``mmbroker up`` runs as a subprocess (embedded Kafka-compatible broker, worker,
dashboard) with its state in a temporary folder and free ports; the tests open
every page in Debian's Chromium (no browser download) and assert on what a
user sees.  A full-page screenshot of each page goes to
``tests/artifacts/screenshots/``; with ``MMBROKER_UPDATE_SCREENSHOTS=1`` they
are also copied to ``docs/screenshots/`` for the README.

The tests run in file order and share one stack: one more real notice is
replayed while the feed is open (it must appear without a reload), and at the
end the archive file is moved away (the banner must show while the live feed
keeps listing alerts) and back (the banner must go).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from broker.errors import RejectedNotice
from broker.formats import parse
from broker.kafka.embedded import free_port
from broker.replay import notice_paths, sample_dir

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).parent / "artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
#: A real Fermi GBM notice with a HEALPix sky map, not among the bundled ones: replayed while the feed is open.
LIVE_NOTICE = Path(__file__).parent / "data/notices/gcn-json/gwcelery_test_alerts/kafka_alert_fermi.json"
LIVE_EVENT = "699554499710"
TIMEOUT_MS = 30_000

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():  # pragma: no cover - the test machines have it
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)


@dataclass
class Stack:
    """A running ``mmbroker up`` and what the tests need to know about it."""

    proc: subprocess.Popen[bytes]
    state: Path
    url: str
    started: float
    expected: int  # bundled real notices that become alerts

    @property
    def archive(self) -> Path:
        return self.state / "archive.sqlite3"

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        """Rows of a read-only query on the archive file (plain SQL, not the dashboard's code)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.archive}?mode=ro", uri=True)) as db:
            return list(db.execute(query, params).fetchall())

    def archived(self) -> int:
        """Alerts in the archive (0 while the worker is still creating it)."""
        try:
            return int(self.sql("SELECT COUNT(*) FROM alerts")[0][0])  # type: ignore[call-overload]
        except sqlite3.OperationalError:
            return 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "broker.cli.main", *args, "--state-dir", str(self.state)],
            env=_env(), capture_output=True, text=True, timeout=120, check=True,
        )


def _env() -> dict[str, str]:
    drop = ("KAFKA_BOOTSTRAP_SERVERS", "MMBROKER_BOOTSTRAP_SERVERS", "MMBROKER_STATE_DIR", "MMBROKER_ARCHIVE_PATH",
            "MMBROKER_PREFIX", "MMBROKER_CONFIG", "MMBROKER_UI_PORT")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _bundled_alert_count() -> int:
    n = 0
    for path in notice_paths([sample_dir()]):
        try:
            parse(path.read_bytes())
        except RejectedNotice:
            continue
        n += 1
    return n


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:  # noqa: S310 - loopback http
            return bool(r.read().strip() == b"ok")
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("up")
    state = tmp / "state"
    port = free_port()
    log = open(tmp / "up.log", "wb")  # noqa: SIM115 - closed at teardown
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli.main", "up", "--port", "0", "--state-dir", str(state),
         "--ui-port", str(port)],
        cwd=tmp, env=_env(), stdout=log, stderr=subprocess.STDOUT,
    )
    s = Stack(proc, state, f"http://127.0.0.1:{port}", t0, _bundled_alert_count())
    try:
        deadline = time.monotonic() + 180
        while not (s.archive.exists() and s.archived() >= s.expected and _healthy(s.url)):
            assert proc.poll() is None, (tmp / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp / "up.log").read_text()[-3000:]
            time.sleep(0.5)
        yield s
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    ctx.close()


def open_page(pg: object, url: str) -> None:
    """Go to ``url`` and wait until the app has rendered its main area."""
    pg.goto(url)  # type: ignore[attr-defined]
    pg.wait_for_selector("[data-testid=stMain] h1")  # type: ignore[attr-defined]


def idle(pg: object) -> None:
    """Wait until Streamlit has finished the page: no 'Running...' widget, no stale element, no skeleton of a
    lazily loaded element (tables)."""
    pg.wait_for_function(  # type: ignore[attr-defined]
        "() => !document.querySelector('[data-testid=stStatusWidget]') "
        "&& !document.querySelector('[data-stale=true]') && !document.querySelector('[data-testid=stSkeleton]')"
    )


def main_text(pg: object) -> str:
    """The visible text of the page's main area, once the page has finished running."""
    idle(pg)
    return str(pg.inner_text("[data-testid=stMain]"))  # type: ignore[attr-defined]


def table_text(pg: object, last: bool = False) -> str:
    """The text of the page's first (or last) ``st.table``, once it has loaded."""
    idle(pg)
    tables = pg.locator("[data-testid=stTable]")  # type: ignore[attr-defined]
    return str((tables.last if last else tables.first).inner_text())


def metric(pg: object, label: str) -> str:
    box = pg.locator("[data-testid=stMetric]", has_text=label)  # type: ignore[attr-defined]
    return str(box.locator("[data-testid=stMetricValue]").inner_text()).strip()


def feed_rows(pg: object) -> int:
    """Rows of the feed table, once the refreshing fragment has replaced the previous table."""
    pg.wait_for_function("() => document.querySelectorAll('#feed-table').length === 1")  # type: ignore[attr-defined]
    return int(pg.locator("#feed-table tbody tr").count())  # type: ignore[attr-defined]


def wait_metric(pg: object, label: str, value: int, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the metric ``label`` shows ``value`` (the feed refreshes itself every 2 s)."""
    pg.wait_for_function(  # type: ignore[attr-defined]
        "([label, value]) => [...document.querySelectorAll('[data-testid=stMetric]')].some(m => "
        "m.querySelector('[data-testid=stMetricLabel]')?.innerText.trim() === label && "
        "m.querySelector('[data-testid=stMetricValue]')?.innerText.trim() === value)",
        arg=[label, str(value)], timeout=timeout_ms,
    )


def image_loaded(pg: object, alt: str) -> int:
    """Natural width (px) of the image with this alt text, once it has loaded."""
    img = pg.locator(f'img[alt="{alt}"]')  # type: ignore[attr-defined]
    img.wait_for()
    pg.wait_for_function(  # type: ignore[attr-defined]
        "(alt) => { const i = document.querySelector(`img[alt=\"${alt}\"]`); return i && i.complete && "
        "i.naturalWidth > 0; }", arg=alt,
    )
    return int(img.evaluate("i => i.naturalWidth"))


def screenshot(pg: object, name: str) -> Path:
    """Full-page screenshot of the app into the artifacts folder (and docs/screenshots when asked)."""
    idle(pg)
    height = pg.evaluate(  # type: ignore[attr-defined]
        "() => Math.max(...['stMain', 'stAppViewContainer'].map(id => "
        "(document.querySelector(`[data-testid=${id}]`) || {scrollHeight: 0}).scrollHeight))"
    )
    pg.set_viewport_size({"width": 1400, "height": int(min(max(height + 40, 900), 9000))})  # type: ignore[attr-defined]
    time.sleep(0.6)  # let the layout settle at the new size
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    pg.set_viewport_size({"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    if os.environ.get("MMBROKER_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / path.name)
    assert path.stat().st_size > 10_000
    return path


# --------------------------------------------------------------------------------------------- pages


def test_live_feed_lists_every_alert_and_refreshes_by_itself(stack: Stack, page: object) -> None:
    assert stack.archived() == stack.expected
    open_page(page, stack.url)
    page.wait_for_selector("#feed-table")  # type: ignore[attr-defined]
    wait_metric(page, "Alerts received", stack.expected)  # the feed reads the topic back, then refreshes
    assert metric(page, "Archived alerts") == str(stack.expected)
    assert metric(page, "Kafka") == "connected"
    assert f"{stack.expected} alerts received" in main_text(page)
    assert feed_rows(page) == min(stack.expected, 50)
    # one more real notice arrives: the open page shows it without a reload (the filter statistics, written
    # at most every 10 s by the worker, are written on that batch)
    time.sleep(max(0.0, stack.started + 12.0 - time.monotonic()))
    stack.cli("replay", str(LIVE_NOTICE))
    page.wait_for_function(  # type: ignore[attr-defined]
        "(ev) => { const r = document.querySelector('#feed-table tbody tr'); return r && r.innerText.includes(ev); }",
        arg=LIVE_EVENT, timeout=60_000,
    )
    wait_metric(page, "Alerts received", stack.expected + 1)
    screenshot(page, "feed")
    rows = page.locator("input[aria-label=Rows]")  # type: ignore[attr-defined]
    rows.fill("200")
    rows.press("Enter")
    page.wait_for_function(  # type: ignore[attr-defined]
        "(n) => document.querySelectorAll('#feed-table tbody tr').length === n", arg=stack.expected + 1,
    )
    assert feed_rows(page) == stack.expected + 1
    table = str(page.inner_text("#feed-table"))  # type: ignore[attr-defined]
    for event in ("S230524x", "MS181101ab", "S230518h", "IceCubeCascade-220801a", "GRB 230220A", "KM3-240901A"):
        assert event in table, event
    assert "RETRACTED" in table  # the MS181101ab retraction, flagged
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", table)  # UTC event times


def test_sky_map_renders_with_contours_and_coincidences(stack: Stack, page: object) -> None:
    open_page(page, f"{stack.url}/sky")
    width = image_loaded(page, "All-sky map of recent alerts")
    assert width > 800
    text = main_text(page)
    m = re.search(r"(\d+) of (\d+) alerts have a position; (\d+) have a sky map", text)
    assert m is not None, text[:2000]
    assert int(m.group(2)) == stack.expected + 1
    assert int(m.group(3)) == 3  # MS181101ab (preliminary), S230518h, and the replayed GBM map
    sky_table = table_text(page, last=True)  # after the coincidences table, when there are coincidences
    for event in ("S230518h", "MS181101ab", LIVE_EVENT):
        assert event in sky_table
    from broker.archive.sqlite import SQLiteArchive

    archive = SQLiteArchive(stack.archive)
    try:
        coincidences = archive.coincidences() if hasattr(archive, "coincidences") else []
    finally:
        archive.close()
    if coincidences:
        assert coincidences[0].rule in text
    else:
        assert "No coincidences yet." in text
    screenshot(page, "sky")


def test_alert_page_of_a_gw_event(stack: Stack, page: object) -> None:
    from broker.archive.sqlite import SQLiteArchive

    archive = SQLiteArchive(stack.archive)
    try:
        gw = archive.latest("LVK/S230518h") if hasattr(archive, "latest") else None
    finally:
        archive.close()
    assert gw is not None
    open_page(page, f"{stack.url}/alert?event=LVK/S230518h")
    page.get_by_role("heading", name=re.compile("S230518h")).wait_for()  # type: ignore[attr-defined]
    assert image_loaded(page, "Localization of the alert") > 300
    assert image_loaded(page, "All-sky view of the alert's sky map") > 300
    text = main_text(page)
    for section in ("Properties", "Localization", "Catalog matches", "Coincidences", "Revisions", "Raw notice"):
        assert section in text
    assert "2023-05-18 12:59:08" in text  # event time, UTC
    matched = [m.source_id for ann in gw.annotations for m in ann.matches]
    assert matched
    assert [s for s in matched if s not in text] == []
    assert "latest" in str(page.inner_text("#revisions-table"))  # type: ignore[attr-defined]
    screenshot(page, "alert")
    page.get_by_text("igwn_json notice").click()  # type: ignore[attr-defined]  # the raw notice, collapsed: 1 MB
    page.get_by_text('"superevent_id": "S230518h"').wait_for()  # type: ignore[attr-defined]


def test_alert_page_from_a_feed_link_and_a_retraction(stack: Stack, page: object) -> None:
    open_page(page, stack.url)
    page.wait_for_selector("#feed-table")  # type: ignore[attr-defined]
    first = page.locator("#feed-table tbody tr").first.locator("a")  # type: ignore[attr-defined]
    href, name = str(first.get_attribute("href")), str(first.inner_text()).strip()
    assert href.startswith("alert?broker_id=mmb-")
    open_page(page, f"{stack.url}/{href}")
    page.get_by_role("heading", name=re.compile(re.escape(name))).wait_for()  # type: ignore[attr-defined]
    # the chooser under the feed opens an alert in the same tab
    open_page(page, stack.url)
    page.get_by_label("Open an alert").click()  # type: ignore[attr-defined]
    page.keyboard.type("S230524x")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Open alert").click()  # type: ignore[attr-defined]
    page.get_by_role("heading", name=re.compile("S230524x")).wait_for()  # type: ignore[attr-defined]
    assert "/alert?broker_id=mmb-" in str(page.url)  # type: ignore[attr-defined]
    ((retraction,),) = stack.sql("SELECT broker_id FROM alerts WHERE event_id = 'MS181101ab' AND kind = 'retraction'")
    ((versions,),) = stack.sql(
        "SELECT COUNT(*) FROM alerts WHERE event_key = (SELECT event_key FROM alerts WHERE broker_id = ?)", retraction
    )
    assert isinstance(versions, int)
    assert versions >= 2
    open_page(page, f"{stack.url}/alert?broker_id={retraction}")
    page.get_by_text("RETRACTED: this revision retracts").wait_for()  # type: ignore[attr-defined]
    page.wait_for_selector("#revisions-table")  # type: ignore[attr-defined]
    assert page.locator("#revisions-table tbody tr").count() == versions  # type: ignore[attr-defined]


def test_filters_page_lists_the_registry_and_statistics(stack: Stack, page: object) -> None:
    from broker.filter_registry import load_registry

    names = [i.name for i in load_registry(None, import_user=False)]
    assert names
    open_page(page, f"{stack.url}/filters")
    page.get_by_text("Statistics written by the worker").wait_for()  # type: ignore[attr-defined]
    table = table_text(page)
    for name in names:
        assert name in table
    assert "enabled" in table
    assert metric(page, "Registered filters") == str(len(names))
    assert image_loaded(page, "Run-time percentiles per filter") > 300
    screenshot(page, "filters")


def _search(pg: object, **fields: str) -> None:
    for label, value in fields.items():
        box = pg.get_by_label(label, exact=True)  # type: ignore[attr-defined]
        box.fill(value)
    pg.get_by_role("button", name="Search").click()  # type: ignore[attr-defined]


def _search_error(pg: object, specific: str) -> str:
    """Wait for the search page's error that names ``specific``, let Streamlit finish the run (so the previous
    run's stale error is gone), and return the one error shown."""
    pg.locator("[data-testid=stAlertContentError]", has_text=specific).wait_for()  # type: ignore[attr-defined]
    idle(pg)
    errors = pg.locator("[data-testid=stAlertContentError]")  # type: ignore[attr-defined]
    assert errors.count() == 1, [errors.nth(i).inner_text() for i in range(errors.count())]
    text = str(errors.inner_text())
    assert "Invalid search: " in text, text
    return text


def test_search_page_rejects_bad_input_and_finds_events(stack: Stack, page: object) -> None:
    open_page(page, f"{stack.url}/search")
    _search(page, **{"RA (deg)": "400", "Dec (deg)": "10", "Radius (deg)": "2"})
    assert "ra 400 deg is outside [0, 360)" in _search_error(page, "ra 400 deg")
    assert "Traceback" not in main_text(page)
    screenshot(page, "search-error")
    _search(page, **{"RA (deg)": "", "Dec (deg)": "", "Radius (deg)": "",
                     "Tags (comma-separated, all required)": "no-such-tag"})
    assert "unknown" in _search_error(page, "no-such-tag")
    _search(page, **{"Tags (comma-separated, all required)": "", "Event time from (UTC ISO or MJD)": "2023-05-19",
                     "Event time until (UTC ISO or MJD)": "2023-05-18"})
    assert "inverted time range" in _search_error(page, "inverted time range")
    _search(page, **{"Event time from (UTC ISO or MJD)": "", "Event time until (UTC ISO or MJD)": "",
                     "Text (event id, name, broker id, mission)": "S230524x"})
    page.wait_for_selector("#search-results")  # type: ignore[attr-defined]
    results = str(page.inner_text("#search-results"))  # type: ignore[attr-defined]
    assert "S230524x" in results
    assert "Invalid search" not in main_text(page)
    for label in ("JSON", "CSV", "VOTable"):
        page.get_by_role("button", name=label).wait_for()  # type: ignore[attr-defined]
    # a cone search answers what a brute-force angular-separation scan of the archive file says
    ra0, dec0, radius = 140.05, -39.05, 15.0
    rows = stack.sql("SELECT ra, dec FROM alerts WHERE ra IS NOT NULL AND dec IS NOT NULL")
    ra, dec = np.radians(np.array(rows, dtype=float).T)
    cos_sep = np.sin(dec) * np.sin(np.radians(dec0)) + np.cos(dec) * np.cos(np.radians(dec0)) * np.cos(
        ra - np.radians(ra0))
    inside = int(np.count_nonzero(np.degrees(np.arccos(np.clip(cos_sep, -1, 1))) <= radius))
    assert inside > 3
    _search(page, **{"Text (event id, name, broker id, mission)": "", "RA (deg)": str(ra0), "Dec (deg)": str(dec0),
                     "Radius (deg)": str(radius)})
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => (document.querySelector('#search-results thead')?.innerText || '').includes('Sep. (deg)')"
    )
    idle(page)
    header = str(page.get_by_text(re.compile(r"Results 1–\d+ of \d+")).inner_text())  # type: ignore[attr-defined]
    assert header.endswith(f" of {inside}"), header
    assert page.locator("#search-results tbody tr").count() == min(inside, 50)  # type: ignore[attr-defined]
    screenshot(page, "search")


def test_subscribe_page_lists_the_tag_topics(stack: Stack, page: object) -> None:
    from confluent_kafka.admin import AdminClient

    bootstrap = (stack.state / "bootstrap").read_text().strip()
    topics = sorted(t for t in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
                    if t.startswith("mmbroker.tag."))
    assert "mmbroker.tag.gw" in topics
    open_page(page, f"{stack.url}/subscribe")
    page.get_by_text(f"{len(topics)} tag topics").wait_for()  # type: ignore[attr-defined]
    table = table_text(page)
    for t in topics:
        assert t in table
    assert "mmbroker subscribe --tag gw --from-beginning" in main_text(page)
    screenshot(page, "subscribe")


def test_archive_down_shows_the_banner_and_the_feed_keeps_working(stack: Stack, page: object) -> None:
    away = stack.archive.with_name("archive.sqlite3.away")
    stack.archive.rename(away)
    try:
        open_page(page, stack.url)
        # .first: an auto-refresh run may briefly show the previous run's banner next to the new one
        page.locator("[data-testid=stAlertContentError]", has_text="Archive unavailable").first.wait_for()  # type: ignore[attr-defined]
        assert metric(page, "Alerts received") == str(stack.expected + 1)
        assert metric(page, "Archived alerts") == "unavailable"
        page.wait_for_selector("#feed-table")  # type: ignore[attr-defined]
        assert feed_rows(page) == 50
        assert LIVE_EVENT in str(page.inner_text("#feed-table"))  # type: ignore[attr-defined]
        screenshot(page, "feed-archive-down")
        open_page(page, f"{stack.url}/search")
        page.locator("[data-testid=stAlertContentError]", has_text="Archive unavailable").first.wait_for()  # type: ignore[attr-defined]
        open_page(page, f"{stack.url}/sky")
        assert image_loaded(page, "All-sky map of recent alerts") > 800  # drawn from the live feed
    finally:
        away.rename(stack.archive)
    open_page(page, stack.url)
    wait_metric(page, "Archived alerts", stack.expected + 1)
    assert page.locator("[data-testid=stAlertContentError]").count() == 0  # type: ignore[attr-defined]


def test_up_stops_the_dashboard_with_it(stack: Stack) -> None:
    assert _healthy(stack.url)
    stack.proc.terminate()
    assert stack.proc.wait(60) == 0
    assert not _healthy(stack.url)


def test_ui_alone_shows_empty_states_not_errors(browser: object, tmp_path: Path) -> None:
    """``mmbroker ui`` with no archive and no cluster: banners and empty states, no traceback."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli.main", "ui", "--port", str(port), "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.3)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
        pg = ctx.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        for path, empty in (("", "No alerts yet"), ("sky", "No alerts to show yet"), ("filters", "No statistics yet"),
                            ("subscribe", "Tags the broker and the registered filters can give"),
                            ("alert", "Choose an alert above")):
            open_page(pg, f"{url}/{path}")
            pg.get_by_text(empty).first.wait_for()
            assert pg.locator("[data-testid=stException]").count() == 0, path
        open_page(pg, f"{url}/search")
        pg.locator("[data-testid=stAlertContentError]", has_text="Archive unavailable").first.wait_for()
        ctx.close()
        assert not (tmp_path / "state" / "archive.sqlite3").exists()  # the dashboard created no archive
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert f"dashboard on http://localhost:{port}" in out
    assert not _healthy(url)
