# SPDX-License-Identifier: Apache-2.0
"""The annotation stage, the schema evolution that carries annotations, and their archiving."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import fastavro
import numpy as np
import pytest

from broker.annotate import NO_LOCALIZATION, AnnotationStage, validate_annotator
from broker.archive import ArchivedAlert
from broker.archive.sqlite import SQLiteArchive
from broker.avro import _fingerprint, _load_schema, decode_alert, encode_alert, to_record
from broker.errors import ConfigError
from broker.formats import parse
from broker.model import Alert, Annotation, CatalogMatch, CredibleRegion, SourceMessage
from broker.replay import guess_topic
from tests.corpus import NOTICES, parsed_alerts

ICECUBE = NOTICES / "gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json"


def _alert(path: Path) -> Alert:
    return parse(path.read_bytes(), guess_topic(path))


@dataclass
class _Recorder:
    """A minimal annotator: records what it was given, matches nothing."""

    name: str = "recorder"
    version: str = "0.1"
    needs: str = "skymap"
    adds: str = "nothing, records its calls"
    fail: bool = False

    def __post_init__(self) -> None:
        self.calls: list[list[str]] = []

    def annotate(self, alerts: list[Alert]) -> list[Annotation | None]:
        self.calls.append([a.broker_id for a in alerts])
        if self.fail:
            raise RuntimeError("catalog file vanished")
        return [Annotation(self.name, self.version, properties={"n": i}) for i, _ in enumerate(alerts)]


def test_annotators_see_only_alerts_with_what_they_need() -> None:
    alerts = parsed_alerts()
    with_map = [a.broker_id for a in alerts if a.skymap is not None]
    assert with_map, "the sample must contain sky-map alerts"
    rec = _Recorder()
    out = AnnotationStage([rec]).process(alerts)
    assert rec.calls == [with_map]
    assert [a.broker_id for a in out] == [a.broker_id for a in alerts]
    for a in out:
        ann = a.annotation("recorder")
        assert (ann is not None) == (a.skymap is not None)
        if a.region is None and a.skymap is None:
            assert a.annotation("localization") == NO_LOCALIZATION
    assert any(a.annotation("localization") for a in out), "the sample must contain alerts without localization"


def test_a_failing_annotator_marks_annotations_missing_and_the_batch_goes_on() -> None:
    alerts = parsed_alerts()
    stage = AnnotationStage([_Recorder(fail=True), _Recorder(name="ok", needs="localization")])
    out = stage.process(alerts)
    assert len(out) == len(alerts)
    failed = [a.annotation("recorder") for a in out if a.skymap is not None]
    assert failed
    assert all(f is not None and f.status == "missing" and "catalog file vanished" in (f.reason or "") for f in failed)
    assert stage.stats["recorder"].errors == 1
    assert all(a.annotation("ok") is not None for a in out if a.region is not None or a.skymap is not None)


def test_annotator_validation_says_what_is_wrong() -> None:
    bad = _Recorder(name="", needs="galaxy")
    with pytest.raises(ConfigError, match=r"entry point x.*'name'.*'needs' must be one of"):
        validate_annotator(bad, "entry point x")
    assert validate_annotator(_Recorder(), "here").name == "recorder"


def _annotated(alert: Alert) -> Alert:
    match = CatalogMatch(
        "4fgl-dr4", "4FGL J0509.4+0542", 77.36, 5.70, 0.12, source_in_region=True, alert_in_source_error=False,
        containment=0.41, properties={"class": "bll", "assoc": "TXS 0506+056"},
    )
    region = CredibleRegion(0.9, 12.5, np.array([1024 + 5, 4096 + 100], dtype=np.int64))
    return alert.with_annotations(
        (Annotation("catalogs", "1.0", matches=(match,), credible_regions=(region,), properties={"n_4fgl-dr4": 1}),
         Annotation("simbad", "1.0", "missing", "timeout after 2.0 s"))
    )


def test_annotations_round_trip_through_avro_and_the_archive(tmp_path: Path) -> None:
    alert = _annotated(_alert(ICECUBE))
    back = decode_alert(encode_alert(alert))
    assert back == alert
    archive = SQLiteArchive(tmp_path / "a.sqlite3")
    src = SourceMessage("gcn.notices.icecube.gold_bronze_track_alerts", 0, 7, ICECUBE.read_bytes())
    archive.write_batch([ArchivedAlert(alert, src, encode_alert(alert))])
    assert archive.matched_to("4fgl-dr4", "4FGL J0509.4+0542") == {alert.broker_id}
    assert archive.get(alert.broker_id) == alert


def test_messages_written_with_schema_v1_still_decode() -> None:
    """A subscriber's archive of version-1 messages stays readable: annotations default to empty."""
    alert = _alert(ICECUBE)
    v1 = _load_schema("alert-v1.avsc")
    rec = to_record(alert)
    rec.pop("annotations")
    rec["schema_version"] = 1
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + _fingerprint(v1))
    fastavro.schemaless_writer(buf, v1, rec)
    back = decode_alert(buf.getvalue())
    assert back == replace(alert, annotations=())
    assert _fingerprint(v1) != _fingerprint(_load_schema("alert.avsc"))


def test_annotator_plugins_register_through_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package exposing ``mmbroker.annotators`` is found, built with the settings and validated."""
    from annotators.registry import plugin_annotators
    from broker.config import load_settings

    site = tmp_path / "site"
    pkg = site / "skyplugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "class Ann:\n"
        "    name = 'galactic-latitude'\n    version = '0.2'\n    needs = 'position'\n"
        "    adds = 'galactic latitude of the position (deg)'\n"
        "    def __init__(self, settings):\n        self.prefix = settings.prefix\n"
        "    def annotate(self, alerts):\n        return [None for _ in alerts]\n"
        "class Broken:\n    name = 'broken'\n    def __init__(self, settings):\n        pass\n"
    )
    dist = site / "skyplugin-0.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: skyplugin\nVersion: 0.2\n")
    (dist / "entry_points.txt").write_text("[mmbroker.annotators]\nlatitude = skyplugin:Ann\n")
    monkeypatch.syspath_prepend(str(site))
    (found,) = plugin_annotators(load_settings(prefix="abc"))
    assert found.name == "galactic-latitude"
    assert getattr(found, "prefix", None) == "abc"
    (dist / "entry_points.txt").write_text("[mmbroker.annotators]\nbroken = skyplugin:Broken\n")
    with pytest.raises(ConfigError, match=r"entry point broken = skyplugin:Broken.*'version'"):
        plugin_annotators(load_settings())
