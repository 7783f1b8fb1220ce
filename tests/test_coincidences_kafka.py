# SPDX-License-Identifier: Apache-2.0
"""Revisions, retractions and coincidences end to end: real Kafka broker process, real redis-server.

* the LVK user-guide MS181101ab sequence (EarlyWarning ... Update with a Fermi
  coincidence ... Retraction) is one event with its versions, and the
  retraction reaches every topic the event was published to;
* a notice delivered twice is processed once;
* two workers sharing Redis, and then with Redis restarted mid-run, publish
  exactly the coincidences one worker publishes on the same input.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from broker.archive.sqlite import SQLiteArchive
from broker.avro import decode_alert, decode_coincidence
from broker.config import Settings
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.kafka.clients import client_config, ensure_topics
from broker.kafka.worker import BatchResult, Worker
from broker.model import Alert
from tests.coincidence_notices import (
    GW170817_INITIAL,
    MS181101AB_SEQUENCE,
    gbm_notice,
    grb170817a_notice,
    ms181101ab,
)
from tests.corpus import NOTICES
from tests.kafka_helpers import read_topic, topics_with_prefix
from tests.redis_fixture import RedisProcess, persistent_redis_server  # noqa: F401 - fixture

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4


def produce(settings: Settings, notices: Sequence[bytes]) -> None:
    """Produce notices to the input topic, spread round-robin over its partitions, and check every delivery."""
    topic = settings.input_topics[0]
    p = Producer(client_config(settings, "producer"))
    errors: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for i, raw in enumerate(notices):
        p.produce(topic, raw, partition=i % settings.input_partitions, on_delivery=report)
    assert p.flush(30) == 0
    assert errors == []


class Workers:
    """N workers of one consumer group in threads, counting what they consumed."""

    def __init__(self, settings: Settings, n: int) -> None:
        self.settings = settings
        self.consumed = 0
        self.duplicates = 0
        self._lock = threading.Lock()
        self.workers = [
            Worker(settings, SQLiteArchive(settings.archive_path)) for _ in range(n)
        ]
        self.threads = [threading.Thread(target=w.run, args=(self._count,), daemon=True) for w in self.workers]
        self.errors: list[BaseException] = []

    def _count(self, result: BatchResult) -> None:
        with self._lock:
            self.consumed += result.consumed
            self.duplicates += result.duplicates

    def start(self) -> Workers:
        for t in self.threads:
            t.start()
        return self

    def wait_for(self, n: int, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.consumed < n and time.monotonic() < deadline:
            assert all(t.is_alive() for t in self.threads), "a worker died"
            time.sleep(0.1)
        assert self.consumed >= n, f"consumed {self.consumed} of {n}"

    def stop(self) -> None:
        for w in self.workers:
            w.request_stop()
        for t in self.threads:
            t.join(30)


def alerts_on(settings: Settings, topic: str) -> list[Alert]:
    return [decode_alert(r.value) for r in read_topic(settings, topic)]


def ms181101ab_with_fermi() -> tuple[list[bytes], bytes, bytes]:
    """The sequence before the retraction, a GBM notice 2.02 s after the merger at the sky map's peak (built from a
    real GBM Final Position notice, role test, as the user guide's ext-update names a Fermi GRB at +2.02 s), and
    the retraction."""
    prelim = parse(ms181101ab("preliminary"), "igwn.gwalert")
    assert prelim.skymap is not None
    assert prelim.event_time is not None
    ra, dec = prelim.skymap.max_position()
    grb = gbm_notice(prelim.event_time + timedelta(seconds=2.02), ra, dec, 3.0, role="test", trigger_id=181101)
    before = [ms181101ab(n) for n in MS181101AB_SEQUENCE if n != "retraction"]
    return before, grb, ms181101ab("retraction")


def test_ms181101ab_sequence_end_to_end(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(input_partitions=1, batch_size=1)
    ensure_topics(settings, [settings.input_topics[0]], partitions=settings.input_partitions)
    before, grb, retraction = ms181101ab_with_fermi()
    workers = Workers(settings, 1).start()
    try:
        produce(settings, [*before[:2], grb, *before[2:]])
        workers.wait_for(len(before) + 1)
        produce(settings, [retraction])
        workers.wait_for(len(before) + 2)
        produce(settings, [before[2]])  # the Initial notice delivered a second time
        workers.wait_for(len(before) + 3)
    finally:
        workers.stop()
    assert workers.duplicates == 1

    archive = SQLiteArchive(settings.archive_path)
    versions = list(archive.revisions("LVK/MS181101ab"))
    assert len(versions) == len(MS181101AB_SEQUENCE)
    assert versions[-1].kind == "retraction"
    assert [v.revision_state for v in versions] == ["first", "update", "update", "update", "update", "retraction"]

    on_alerts = [a for a in alerts_on(settings, settings.alerts_topic) if a.event_key == "LVK/MS181101ab"]
    assert len(on_alerts) == len(MS181101AB_SEQUENCE)  # the duplicate was not published again
    retraction_alert = on_alerts[-1]
    assert retraction_alert.kind == "retraction"

    published_to: set[str] = set()
    tag_prefix = settings.tag_topic("")
    for topic in topics_with_prefix(settings, tag_prefix):
        seen = [a for a in alerts_on(settings, topic) if a.event_key == "LVK/MS181101ab"]
        if any(a.kind != "retraction" for a in seen):
            published_to.add(topic)
            assert seen[-1].kind == "retraction", f"the retraction did not reach {topic}"
    assert {settings.tag_topic("test"), settings.tag_topic("coincidence"), settings.tag_topic("gw-grb")} <= published_to
    assert set(retraction_alert.tags) >= {t.removeprefix(tag_prefix) for t in published_to}

    records = [decode_coincidence(r.value) for r in read_topic(settings, settings.coincidence_topic)]
    ids = {c.coincidence_id for c in records}
    assert len(ids) == 1
    assert [c.status for c in records][-1] == "withdrawn"
    assert "active" in {c.status for c in records}
    assert all(c.time_difference == pytest.approx(2.02, abs=0.01) for c in records)


def test_an_update_that_drops_a_tag_reaches_that_tag_topic(settings_factory: Callable[..., Settings]) -> None:
    """gwcelery's real Swift BAT notices of trigger 694215995: revision 3 with a position (``grb-well-localized``),
    then without one. The second goes to the ``grb-well-localized`` topic too, naming the dropped tag in its record
    and in the ``dropped-tags`` header; the alerts topic gets both."""
    settings = settings_factory(input_partitions=1, batch_size=1)
    ensure_topics(settings, [settings.input_topics[0]], partitions=settings.input_partitions)
    bat = NOTICES / "gcn-json" / "gwcelery_test_alerts"
    workers = Workers(settings, 1).start()
    try:
        produce(settings, [(bat / "kafka_alert_swift.json").read_bytes()])
        workers.wait_for(1)
        produce(settings, [(bat / "kafka_alert_swift_noloc.json").read_bytes()])
        workers.wait_for(2)
    finally:
        workers.stop()
    records = read_topic(settings, settings.tag_topic("grb-well-localized"))
    alerts = [decode_alert(r.value) for r in records]
    assert [(a.event_key, a.revision_state) for a in alerts] == [("Swift/694215995", "first"),
                                                                 ("Swift/694215995", "update")]
    assert "grb-well-localized" in alerts[0].tags
    assert "grb-well-localized" not in alerts[1].tags
    assert alerts[1].dropped_tags == ("grb-well-localized",)
    assert records[1].headers["dropped-tags"] == "grb-well-localized"
    assert "dropped-tags" not in records[0].headers
    on_gamma = [decode_alert(r.value) for r in read_topic(settings, settings.tag_topic("gamma"))]
    assert [a.dropped_tags for a in on_gamma] == [(), ("grb-well-localized",)]


# Scale-out ----------------------------------------------------------------------------------------------
def scale_out_input() -> list[list[bytes]]:
    """Four phases; each pair's sides are in different phases so every coincidence crosses workers and time.

    Phase 1: real notices (GW170817 Initial, MS181101ab Preliminary, S230524x EarlyWarning, an IceCube Gold track)
    and every real VOEvent of the corpus as background.  Phase 2: the other sides, built from a real GBM Final
    Position notice: GRB 170817A (published time and position), a GBM notice 2.02 s after MS181101ab at its sky
    map's peak (role test), 3 s after S230524x, and 120 s after the IceCube track at its position (neutrino/grb).
    Phase 3: MS181101ab's Update (re-finds its GRB).  Phase 4: its Retraction (withdraws the pairs).  The Update
    and the Retraction are in separate phases: produced together, round-robin, they land in different partitions,
    whose relative order Kafka does not define, so even one worker may take the Retraction first (the Update is
    then ``after_retraction``).  A Retraction that meets an Update being processed by another worker is covered by
    ``test_coincidences.py::test_retraction_waits_for_an_update_another_worker_is_processing``.
    """
    s230524x = parse((NOTICES / "voevent/lvc/S230524x-1-EarlyWarning.xml").read_bytes(), "x")
    track_path = next(p for p in sorted((NOTICES / "voevent").rglob("*.xml")) if "GOLD" in p.read_text(errors="replace")
                      and "IceCube" in p.read_text(errors="replace"))
    track = parse(track_path.read_bytes(), "x")
    prelim = parse(ms181101ab("preliminary"), "x")
    for a in (s230524x, track, prelim):
        assert a.event_time is not None
    assert track.region is not None
    assert prelim.skymap is not None
    ra, dec = prelim.skymap.max_position()
    used = {"LVK/G298048", "LVK/MS181101ab", s230524x.event_key, track.event_key}
    background = [
        p.read_bytes() for p in sorted((NOTICES / "voevent").rglob("*.xml"))
        if p not in (GW170817_INITIAL, track_path) and _event_key(p) not in used
    ]
    phase1 = [GW170817_INITIAL.read_bytes(), ms181101ab("preliminary"), track_path.read_bytes(),
              (NOTICES / "voevent/lvc/S230524x-1-EarlyWarning.xml").read_bytes(), *background]
    phase2 = [
        grb170817a_notice(),
        gbm_notice(prelim.event_time + timedelta(seconds=2.02), ra, dec, 3.0, role="test", trigger_id=181101),  # type: ignore[operator]
        gbm_notice(s230524x.event_time + timedelta(seconds=3), 150.0, 20.0, 10.0, trigger_id=230524),  # type: ignore[operator]
        gbm_notice(track.event_time + timedelta(seconds=120), track.region.ra, track.region.dec, 4.0,  # type: ignore[operator]
                   trigger_id=424242),
    ]
    return [phase1, phase2, [ms181101ab("update")], [ms181101ab("retraction")]]


def _event_key(path: Path) -> str | None:
    try:
        return parse(path.read_bytes(), "x").event_key
    except RejectedNotice:  # not an alert: the worker dead-letters it
        return None


def coincidence_records(settings: Settings) -> Counter[tuple[str, str, str, str]]:
    out: Counter[tuple[str, str, str, str]] = Counter()
    for r in read_topic(settings, settings.coincidence_topic):
        c = decode_coincidence(r.value)
        out[(c.coincidence_id, c.a_broker_id, c.b_broker_id, c.status)] += 1
    return out


#: The real notices span 2008-2025 and retention counts in event time behind the newest event seen, so the replay
#: needs a window that holds them all (the default, 3 days, would keep only the newest notices' days).
REPLAY_RETENTION_S = 30 * 365 * 86400.0


def run_phases(
    settings: Settings, n_workers: int, between: Callable[[int], None]
) -> Counter[tuple[str, str, str, str]]:
    ensure_topics(settings, [settings.input_topics[0]], partitions=settings.input_partitions)
    phases = scale_out_input()
    workers = Workers(settings, n_workers).start()
    total = 0
    try:
        for i, phase in enumerate(phases):
            produce(settings, phase)
            between(i)
            total += len(phase)
            workers.wait_for(total)
    finally:
        workers.stop()
    return coincidence_records(settings)


def test_two_workers_with_redis_find_what_one_worker_finds(
    settings_factory: Callable[..., Settings], persistent_redis_server: RedisProcess  # noqa: F811
) -> None:
    def settings(**extra: object) -> Settings:
        return settings_factory(input_partitions=PARTITIONS, window_retention_s=REPLAY_RETENTION_S, **extra)

    one = run_phases(settings(), 1, lambda _: None)
    statuses = Counter(k[3] for k in one)
    assert len({k[0] for k in one}) >= 4, f"expected the four built pairs, got {one}"
    assert statuses["withdrawn"] >= 1
    assert max(one.values()) == 1

    url = persistent_redis_server.url
    two = run_phases(settings(state_backend="redis", redis_url=url), 2, lambda _: None)
    assert two == one

    pid_before = persistent_redis_server.process.pid
    bounce = threading.Thread(target=lambda: (persistent_redis_server.stop(), time.sleep(1.0),
                                              persistent_redis_server.restart()), daemon=True)

    def restart_during_phase_2(phase: int) -> None:
        if phase == 1:  # phase 2 was just produced: Redis goes down under the workers
            bounce.start()
        elif phase == 2:
            bounce.join(30)

    restarted = run_phases(settings(state_backend="redis", redis_url=url), 2, restart_during_phase_2)
    assert persistent_redis_server.process.pid != pid_before
    assert persistent_redis_server.running
    assert restarted == one


