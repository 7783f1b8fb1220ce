# SPDX-License-Identifier: Apache-2.0
"""The worker end to end on the real Kafka-compatible broker process."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.archive.sqlite import SQLiteArchive
from broker.avro import decode_alert
from broker.config import Settings
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.kafka.worker import Worker
from broker.replay import notice_paths, replay
from tests.corpus import NOTICES
from tests.kafka_helpers import read_topic, run_until, topics_with_prefix

pytestmark = pytest.mark.kafka


def expected_outcomes(files: list[Path], topic: str, max_size: int) -> tuple[dict[str, str], Counter[str]]:
    """What the pure parser says of each file: alert ids, and reject codes counted."""
    alerts: dict[str, str] = {}
    rejects: Counter[str] = Counter()
    for f in files:
        try:
            a = parse(f.read_bytes(), topic, max_size=max_size)
        except RejectedNotice as exc:
            rejects[exc.code] += 1
        else:
            alerts[a.broker_id] = str(f)
    return alerts, rejects


def run_worker_over(settings: Settings, n_inputs: int) -> Worker:
    worker = Worker(settings, SQLiteArchive(settings.archive_path))
    seen = [0]

    def count(result: object) -> None:
        seen[0] += result.consumed  # type: ignore[attr-defined]

    run_until(lambda: worker.run(count), worker.request_stop, lambda: seen[0] >= n_inputs)
    return worker


@pytest.mark.parametrize("parse_processes", [0, 2])
def test_every_real_notice_is_accounted_for(settings_factory: Callable[..., Settings], parse_processes: int) -> None:
    settings = settings_factory(parse_processes=parse_processes, batch_size=100)
    files = notice_paths([NOTICES]) + sorted(NOTICES.rglob("PROVENANCE.md"))
    topic = settings.input_topics[0]
    exp_alerts, exp_rejects = expected_outcomes(files, topic, settings.max_message_bytes)
    assert len(exp_alerts) + sum(exp_rejects.values()) == len(files)
    assert len(exp_alerts) > 100
    assert exp_rejects["not_public_alert"] > 10

    replay(settings, files, topic)
    run_worker_over(settings, len(files))

    # Every input is exactly one alert or one dead letter.
    alerts = [decode_alert(r.value) for r in read_topic(settings, settings.alerts_topic)]
    ids = [a.broker_id for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was published twice"
    assert set(ids) == set(exp_alerts)
    dlq = read_topic(settings, settings.dlq_topic)
    assert Counter(r.headers["reason-code"] for r in dlq) == exp_rejects
    coords = {(r.headers["source-topic"], r.headers["source-partition"], r.headers["source-offset"]) for r in dlq}
    assert len(coords) == len(dlq)
    assert all(r.headers["reason"] for r in dlq)
    # Dead letters keep the original bytes.
    raw_inputs = {f.read_bytes() for f in files}
    assert all(r.value in raw_inputs for r in dlq)

    # Tag topics hold exactly the alerts with that tag.
    by_tag: dict[str, set[str]] = {}
    for a in alerts:
        for t in a.tags:
            by_tag.setdefault(t, set()).add(a.broker_id)
    assert {"gw", "neutrino", "gamma", "xray", "radio", "test", "retraction"} <= set(by_tag)
    tag_topics = topics_with_prefix(settings, f"{settings.prefix}.tag.")
    assert sorted(tag_topics) == sorted(settings.tag_topic(t) for t in by_tag)
    for tag, members in by_tag.items():
        got = [decode_alert(r.value).broker_id for r in read_topic(settings, settings.tag_topic(tag))]
        assert sorted(got) == sorted(members), tag

    # The archive holds every alert once, with its raw payload.
    archive = SQLiteArchive(settings.archive_path)
    assert sorted(archive.broker_ids()) == sorted(ids)
    one = alerts[0]
    assert archive.get(one.broker_id) == one
    assert archive.raw(one.provenance.raw_sha256) is not None


def _mutated(path: str, edit: Callable[[dict[str, object]], None]) -> bytes:
    doc = json.loads((NOTICES / path).read_text())
    edit(doc)
    return json.dumps(doc).encode()


ICECUBE = "gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json"
GW_JSON = "igwn/kafka-json/MS181101ab-preliminary.json"
GW_RETRACTION = "igwn/kafka-json/MS181101ab-retraction.json"


def bad_inputs() -> list[tuple[str, bytes]]:
    """Bad messages made from real notices, with the reason code each must get."""
    ice = (NOTICES / ICECUBE).read_bytes()
    voe = (NOTICES / "voevent/icecube_amon/sample_astrotrack_alert.xml").read_bytes()

    def cut_skymap(d: dict[str, object]) -> None:
        ev = d["event"]
        assert isinstance(ev, dict)
        ev["skymap"] = ev["skymap"][:5000]

    def garbage_skymap(d: dict[str, object]) -> None:
        ev = d["event"]
        assert isinstance(ev, dict)
        ev["skymap"] = "U0lNUExFICA9IGdhcmJhZ2U="  # base64 of 'SIMPLE  = garbage'

    return [
        ("malformed_json", ice[: len(ice) // 2]),
        ("malformed_xml", voe[: len(voe) // 2]),
        ("unknown_format", (Path(__file__).parents[1] / "avro_schemas" / "alert.avsc").read_bytes()),
        ("invalid_coordinates", _mutated(ICECUBE, lambda d: d.update(ra=math.nan))),
        ("invalid_coordinates", _mutated(ICECUBE, lambda d: d.update(dec=123.0))),
        ("invalid_coordinates", _mutated(ICECUBE, lambda d: d.update(ra=-30.0))),
        ("invalid_error_region", _mutated(ICECUBE, lambda d: d.update(ra_dec_error=-0.5))),
        ("invalid_error_region", _mutated(ICECUBE, lambda d: d.update(ra_dec_error=math.nan))),
        ("missing_field", _mutated(GW_RETRACTION, lambda d: d.pop("time_created"))),
        ("corrupt_skymap", _mutated(GW_JSON, cut_skymap)),
        ("corrupt_skymap", _mutated(GW_JSON, garbage_skymap)),
        ("oversized", (NOTICES / GW_JSON).read_bytes()),
        ("empty", b""),
    ]


def test_bad_input_goes_to_the_dlq_and_the_stream_goes_on(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(max_message_bytes=512 * 1024)
    bad = bad_inputs()
    good = (NOTICES / ICECUBE).read_bytes()
    topic = settings.input_topics[0]
    from confluent_kafka import Producer

    from broker.kafka.clients import client_config, ensure_topics

    ensure_topics(settings, [topic], 1)
    p = Producer(client_config(settings, "producer"))
    for _, payload in bad:
        p.produce(topic, payload)
    p.produce(topic, good)  # a good notice after all the bad ones still flows
    p.flush(10)
    run_worker_over(settings, len(bad) + 1)

    dlq = read_topic(settings, settings.dlq_topic)
    got = sorted((r.headers["reason-code"], int(r.headers["source-offset"])) for r in dlq)
    assert got == sorted((code, i) for i, (code, _) in enumerate(bad))
    for r in dlq:
        assert r.value == bad[int(r.headers["source-offset"])][1]
        assert r.headers["source-topic"] == topic
        assert r.headers["source-partition"] == "0"
    alerts = [decode_alert(r.value) for r in read_topic(settings, settings.alerts_topic)]
    assert [a.event_id for a in alerts] == ["137840_57034692"]
