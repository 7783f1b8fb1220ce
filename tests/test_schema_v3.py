# SPDX-License-Identifier: Apache-2.0
"""Schema versions 3 (coincidences, revision state) and 4 (dropped tags): round trip, and messages written with
versions 2 and 3 still decode."""

from __future__ import annotations

import io
from dataclasses import replace

import fastavro
import pytest

from broker.avro import (
    AvroDecodeError,
    _fingerprint,
    _load_schema,
    decode_alert,
    decode_coincidence,
    encode_alert,
    encode_coincidence,
    to_record,
)
from broker.formats import parse
from broker.model import Coincidence
from tests.coincidence_notices import GW170817_INITIAL, grb170817a_notice


def _pair() -> tuple[Coincidence, object]:
    gw = parse(GW170817_INITIAL.read_bytes(), "gcn.classic.voevent.LVC_INITIAL")
    grb = parse(grb170817a_notice(), "gcn.classic.voevent.FERMI_GBM_FIN_POS")
    c = Coincidence(
        coincidence_id="mmc-0123456789abcdef01234567", rule="gw-cbc/grb", tag="gw-grb", status="active",
        a_broker_id=gw.broker_id, a_event_key=gw.event_key, a_messenger="gw",
        b_broker_id=grb.broker_id, b_event_key=grb.event_key, b_messenger="gamma",
        time_difference=2.02429, window=(-1.0, 5.0), spatial_test="none", far_temporal=2.05e-16,
    )
    return c, replace(grb, coincidences=(c,), revision_state="first", previous_broker_id=None)


def test_alert_with_coincidences_round_trips() -> None:
    c, alert = _pair()
    back = decode_alert(encode_alert(alert))  # type: ignore[arg-type]
    assert back == alert
    assert back.coincidences == (c,)
    assert back.revision_state == "first"


def test_coincidence_message_round_trips_and_is_told_apart_from_alerts() -> None:
    c, alert = _pair()
    assert decode_coincidence(encode_coincidence(c)) == c
    assert decode_coincidence(encode_coincidence(c.withdrawn("retracted"))).status == "withdrawn"
    with pytest.raises(AvroDecodeError):
        decode_coincidence(encode_alert(alert))  # type: ignore[arg-type]


def test_messages_written_with_schema_v2_still_decode() -> None:
    _, alert = _pair()
    v2 = _load_schema("alert-v2.avsc")
    rec = to_record(alert)  # type: ignore[arg-type]
    for k in ("coincidences", "revision_state", "previous_broker_id", "dropped_tags"):
        rec.pop(k)
    rec["schema_version"] = 2
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + _fingerprint(v2))
    fastavro.schemaless_writer(buf, v2, rec)
    back = decode_alert(buf.getvalue())
    assert back == replace(alert, coincidences=(), revision_state=None)  # type: ignore[type-var]


def test_messages_written_with_schema_v3_still_decode() -> None:
    _, alert = _pair()
    v3 = _load_schema("alert-v3.avsc")
    rec = to_record(replace(alert, dropped_tags=("grb-well-localized",)))  # type: ignore[type-var]
    rec.pop("dropped_tags")
    rec["schema_version"] = 3
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + _fingerprint(v3))
    fastavro.schemaless_writer(buf, v3, rec)
    back = decode_alert(buf.getvalue())
    assert back == alert
    assert back.dropped_tags == ()
    assert decode_alert(encode_alert(replace(alert, dropped_tags=("a", "b")))).dropped_tags == ("a", "b")  # type: ignore[type-var]
