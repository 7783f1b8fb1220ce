# SPDX-License-Identifier: Apache-2.0
"""The Avro contract and the SQLite archive on real alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from broker.archive import ArchivedAlert
from broker.archive.sqlite import SQLiteArchive
from broker.avro import AvroDecodeError, alert_schema, decode_alert, encode_alert
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.model import Alert, SourceMessage
from broker.pipeline import Pipeline
from tests.corpus import NOTICES, notice_files

SCHEMA_FILE = Path(__file__).parents[1] / "avro_schemas" / "alert.avsc"


def real_alerts() -> list[tuple[Alert, bytes]]:
    out = []
    for p in notice_files():
        raw = p.read_bytes()
        try:
            out.append((parse(raw), raw))
        except RejectedNotice:
            continue
    return out


def _fields(schema: Any, seen: set[str]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, list):
        for s in schema:
            out.extend(_fields(s, seen))
    elif isinstance(schema, dict):
        if schema.get("type") == "record" and schema["name"] not in seen:
            seen.add(schema["name"])
            for f in schema["fields"]:
                out.append((f"{schema['name']}.{f['name']}", f))
                out.extend(_fields(f["type"], seen))
        elif schema.get("type") in ("array", "map"):
            out.extend(_fields(schema.get("items", schema.get("values")), seen))
    return out


def test_every_schema_field_is_documented() -> None:
    fields = _fields(json.loads(SCHEMA_FILE.read_text()), set())
    assert len(fields) > 60
    undocumented = [name for name, f in fields if not f.get("doc", "").strip()]
    assert undocumented == []


def test_sky_map_alert_round_trips_with_its_arrays() -> None:
    raw = (NOTICES / "igwn/kafka-avro/MS181101ab-preliminary.avro").read_bytes()
    alert = parse(raw)
    back = decode_alert(encode_alert(alert))
    assert back.skymap is not None
    assert alert.skymap is not None
    assert np.array_equal(back.skymap.uniq, alert.skymap.uniq)
    assert np.array_equal(back.skymap.distmu, alert.skymap.distmu)
    assert back == alert


def test_decode_refuses_foreign_bytes() -> None:
    good = encode_alert(parse((NOTICES / "gcn-json/km3net/alert.example.json").read_bytes()))
    with pytest.raises(AvroDecodeError):
        decode_alert(b"\x00" + good[1:])
    with pytest.raises(AvroDecodeError):
        decode_alert(good[:2] + b"\x00" * 8 + good[10:])
    assert alert_schema()["name"] == "org.mmbroker.v1.Alert"


def _archive(tmp_path: Path) -> tuple[SQLiteArchive, list[Alert]]:
    archive = SQLiteArchive(tmp_path / "a.sqlite3")
    pairs = real_alerts()
    alerts = Pipeline().run([a for a, _ in pairs])
    items = [
        ArchivedAlert(a, SourceMessage("t", 0, i, raw), encode_alert(a))
        for i, (a, (_, raw)) in enumerate(zip(alerts, pairs, strict=True))
    ]
    assert archive.write_batch(items) == len(items)
    assert archive.write_batch(items) == 0  # redelivery: nothing new
    return archive, alerts


def test_archive_is_idempotent_and_keeps_revisions(tmp_path: Path) -> None:
    archive, alerts = _archive(tmp_path)
    assert archive.count() == len(alerts)
    assert sorted(archive.broker_ids()) == sorted(a.broker_id for a in alerts)
    gbm = list(archive.revisions("Fermi/745121685"))
    assert [a.revision for a in gbm] == sorted(a.revision for a in gbm)
    assert len(gbm) >= 7
    assert archive.with_tag("retraction") == {a.broker_id for a in alerts if "retraction" in a.tags}
    # cone search (and the rest of the query language) is tested on every backend in test_archive_contract.py
