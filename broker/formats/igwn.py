# SPDX-License-Identifier: Apache-2.0
"""IGWN public gravitational-wave alerts (Kafka topic ``igwn.gwalert``).

LVK publishes one alert per superevent revision in two encodings of the same
record (schema ``igwn.alerts.Alert``, see the LVK Alert User Guide):

* JSON, with the multi-order FITS sky map base64-encoded in ``event.skymap``
  (and ``external_coinc.combined_skymap``);
* an Avro object container file holding exactly one record, with the sky maps
  as raw FITS bytes.

Upstream units are already ours: false-alarm rates in Hz, times ISO-8601 UTC,
burst durations in s and central frequencies in Hz.  The alerts carry no
sequence number, so :attr:`~broker.model.Alert.revision` is ``None`` and
revisions are ordered by ``time_created`` (:attr:`~broker.model.Alert.issued`).

Superevent ids tell the GraceDB category: ``S...`` production, ``MS...``
mock / MDC, ``TS...`` test; the last two are marked ``is_test``.

LVK-internal GraceDB API records and igwn-alert (LVAlert) messages are only
*recognized* here (:func:`is_gracedb_payload`); the dispatcher refuses them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from broker.errors import RejectedNotice
from broker.formats.common import as_bool, finite_float, parse_time, provenance
from broker.formats.skymap import decode_base64_skymap, decode_fits_skymap
from broker.model import Alert, AlertKind, PropertyValue, RelatedEvent, SkyMap, SourceFormat

__all__ = ["from_igwn_avro", "from_igwn_json", "is_gracedb_payload", "is_igwn_alert"]

MISSION = "LVK"
NOTICE_TYPE = "igwn.gwalert"
_PARSER = "igwn"

_KIND_BY_ALERT_TYPE: dict[str, AlertKind] = {
    "EARLYWARNING": "early_warning",  # the spelling of the schema's enum
    "EARLY_WARNING": "early_warning",  # the spelling of the schema's doc string
    "PRELIMINARY": "preliminary",
    "INITIAL": "initial",
    "UPDATE": "update",
    "RETRACTION": "retraction",
}

_TEST_CATEGORY_PREFIXES = ("M", "T")
"""GraceDB superevent id prefixes of non-production categories: ``MS`` (MDC / mock), ``TS`` (test)."""

_PROPERTY_NAMES = {
    "HasNS": "has_ns",
    "HasRemnant": "has_remnant",
    "HasMassGap": "has_mass_gap",
    "HasSSM": "has_ssm",
}
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

_AVRO_SCHEMA_NAME = re.compile(r"^igwn\.alerts(?:\.v\d+(?:_\d+)*)?\.Alert$")
"""Full names of the IGWN alert record: ``igwn.alerts.Alert`` and versioned ``igwn.alerts.v1_0.Alert``."""

# igwn-alert (formerly LVAlert) message types sent by GraceDB.
_GRACEDB_ALERT_TYPES = frozenset(
    {
        "new",
        "update",
        "log",
        "label_added",
        "label_removed",
        "signoff_created",
        "signoff_updated",
        "signoff_deleted",
        "emobservation",
        "embb_event_log",
        "voevent",
        "exttrig",
    }
)
_SUPEREVENT_MARKERS = ("preferred_event", "gw_events", "t_0")
_EVENT_MARKERS = ("gpstime", "pipeline", "group", "links")


# --------------------------------------------------------------------------- recognition


def is_igwn_alert(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` is a public IGWN alert (``igwn.gwalert`` JSON record).

    It must name a ``superevent_id``, an upper-case ``alert_type`` of the
    public schema (EARLYWARNING / EARLY_WARNING, PRELIMINARY, INITIAL, UPDATE,
    RETRACTION), and hold a ``time_created`` or an ``event`` key; a record with
    one of those two missing is still claimed, so that the parser can reject
    it as ``missing_field`` instead of letting it fall through as unknown.
    """
    return (
        isinstance(doc.get("superevent_id"), str)
        and doc.get("alert_type") in _KIND_BY_ALERT_TYPE
        and ("time_created" in doc or "event" in doc)
    )


def _is_gracedb_record(doc: Mapping[str, Any]) -> bool:
    if isinstance(doc.get("superevent_id"), str) and any(k in doc for k in _SUPEREVENT_MARKERS):
        return True  # GraceDB superevent API record
    return isinstance(doc.get("graceid"), str) and any(k in doc for k in _EVENT_MARKERS)  # event record


def is_gracedb_payload(doc: object) -> bool:
    """Whether ``doc`` is an LVK-internal GraceDB record or igwn-alert message.

    Recognized, by their own markers:

    * igwn-alert / LVAlert messages: ``uid`` plus a lower-case GraceDB
      ``alert_type`` (``new``, ``update``, ``log``, ``label_added``, ...);
    * GraceDB superevent records: ``superevent_id`` with ``preferred_event``,
      ``gw_events`` or ``t_0``;
    * GraceDB event records: ``graceid`` with ``gpstime``, ``pipeline``,
      ``group`` or ``links``;
    * a mapping of ids to such records (a superevent listing), or a JSON
      array of them (an event listing).

    None of these is a public alert; the dispatcher rejects them as
    ``not_public_alert``.
    """
    if isinstance(doc, list):
        return bool(doc) and all(isinstance(v, dict) and _is_gracedb_record(v) for v in doc)
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("uid"), str) and doc.get("alert_type") in _GRACEDB_ALERT_TYPES:
        return True
    if _is_gracedb_record(doc):
        return True
    values = list(doc.values())
    return bool(values) and all(isinstance(v, dict) and _is_gracedb_record(v) for v in values)


# --------------------------------------------------------------------------- entry points


def from_igwn_json(doc: dict[str, Any], raw: bytes, topic: str | None = None) -> Alert:
    """Normalize a JSON IGWN alert.

    Parameters
    ----------
    doc
        The decoded JSON object (recognized by :func:`is_igwn_alert`).
    raw
        The payload bytes, for provenance.
    topic
        Source topic; a hint only, unused (the record names everything).

    Returns
    -------
    Alert
        ``event_time`` and ``issued`` in UTC, ``far`` in Hz, the sky map
        decoded from base64 multi-order FITS (densities in sr^-1).

    Raises
    ------
    RejectedNotice
        ``missing_field``, ``invalid_value``, ``invalid_time`` or
        ``corrupt_skymap``, naming the offending field.
    """
    ref = doc.get("$schema")
    return _build(doc, raw, "igwn_json", decode_base64_skymap, ref if isinstance(ref, str) else None)


def from_igwn_avro(raw: bytes, topic: str | None = None) -> Alert:
    """Normalize an IGWN alert sent as an Avro object container file.

    Parameters
    ----------
    raw
        The container file: header with the writer schema, then exactly one
        ``igwn.alerts.Alert`` record.
    topic
        Source topic; a hint only, unused.

    Returns
    -------
    Alert
        As :func:`from_igwn_json`; the sky maps are raw (possibly gzipped)
        multi-order FITS bytes.

    Raises
    ------
    RejectedNotice
        ``malformed_avro`` for a corrupt container or a record count other
        than one; ``unknown_format`` for a valid container of another schema;
        otherwise as :func:`from_igwn_json`.
    """
    import fastavro

    try:
        reader = fastavro.reader(io.BytesIO(raw))
        schema_name = _schema_full_name(reader.writer_schema)
    except Exception as exc:  # fastavro raises many types on a corrupt header
        reason = f"unreadable Avro container header ({type(exc).__name__}: {exc})"
        raise RejectedNotice("malformed_avro", reason) from exc
    if not _AVRO_SCHEMA_NAME.match(schema_name):
        raise RejectedNotice("unknown_format", f"Avro container of schema {schema_name!r}, not igwn.alerts.Alert")
    try:
        records = [rec for rec, _ in zip(reader, range(2), strict=False)]
    except Exception as exc:  # corrupt data blocks: EOFError, ValueError, codec errors, ...
        raise RejectedNotice("malformed_avro", f"corrupt Avro data block ({type(exc).__name__}: {exc})") from exc
    if len(records) != 1:
        n = "no" if not records else "more than one"
        raise RejectedNotice("malformed_avro", f"Avro container holds {n} record, expected exactly one alert")
    rec = records[0]
    if not isinstance(rec, dict):
        raise RejectedNotice("malformed_avro", f"Avro record is a {type(rec).__name__}, not a record")
    return _build(rec, raw, "igwn_avro", _decode_fits_bytes, schema_name)


# --------------------------------------------------------------------------- the shared builder


def _schema_full_name(schema: object) -> str:
    if not isinstance(schema, dict):
        return f"<{type(schema).__name__} schema>"
    name = str(schema.get("name", ""))
    namespace = schema.get("namespace")
    if namespace and "." not in name:
        return f"{namespace}.{name}"
    return name


_SkymapDecoder = Callable[[Any, str], SkyMap]


def _decode_fits_bytes(value: Any, field: str) -> SkyMap:
    """Decode an Avro ``bytes`` sky map (raw, possibly gzipped, multi-order FITS)."""
    if not isinstance(value, bytes):
        raise RejectedNotice("corrupt_skymap", f"{field} is a {type(value).__name__}, not FITS bytes")
    return decode_fits_skymap(value, field)


def _build(
    doc: Mapping[str, Any],
    raw: bytes,
    fmt: SourceFormat,
    decode_skymap: _SkymapDecoder,
    upstream_ref: str | None,
) -> Alert:
    superevent_id = _required_str(doc, "superevent_id", "superevent_id")
    alert_type = _required(doc, "alert_type", "alert_type")
    kind = _KIND_BY_ALERT_TYPE.get(alert_type) if isinstance(alert_type, str) else None
    if kind is None:
        raise RejectedNotice("invalid_value", f"alert_type {alert_type!r} is not an IGWN alert type")
    issued = parse_time(_required(doc, "time_created", "time_created"), "time_created")
    event = _required(doc, "event", "event")

    event_time: datetime | None = None
    skymap: SkyMap | None = None
    far: float | None = None
    significant: bool | None = None
    instrument: str | None = None
    classification: dict[str, float] = {}
    properties: dict[str, PropertyValue] = {}
    if event is None:
        if kind != "retraction":
            raise RejectedNotice("missing_field", f"event is null in a {alert_type} alert")
    elif not isinstance(event, dict):
        raise RejectedNotice("invalid_value", f"event is a {type(event).__name__}, not an object")
    else:
        event_time = parse_time(_required(event, "time", "event.time"), "event.time")
        far = _far(_required(event, "far", "event.far"), "event.far")
        significant = as_bool(_required(event, "significant", "event.significant"), "event.significant")
        instruments = _instruments(event.get("instruments"))
        if instruments:
            instrument = ",".join(instruments)
            properties["instruments"] = instrument
        classification = _classification(event.get("classification"))
        properties.update(_event_properties(event))
        sky = event.get("skymap")
        skymap = None if sky is None else decode_skymap(sky, "event.skymap")

    urls = doc.get("urls")
    if urls is not None and not isinstance(urls, dict):
        raise RejectedNotice("invalid_value", f"urls is a {type(urls).__name__}, not an object")
    if urls and isinstance(urls.get("gracedb"), str):
        properties["gracedb_url"] = urls["gracedb"]

    coinc = doc.get("external_coinc")
    related = () if coinc is None else (_external_coinc(coinc, decode_skymap),)

    return Alert(
        mission=MISSION,
        instrument=instrument,
        messenger="gw",
        notice_type=NOTICE_TYPE,
        event_id=superevent_id,
        revision=None,
        kind=kind,
        is_test=superevent_id.startswith(_TEST_CATEGORY_PREFIXES),
        event_time=event_time,
        issued=issued,
        provenance=provenance(fmt, _PARSER, raw, upstream_ref),
        event_name=superevent_id,
        upstream_ids=(superevent_id,),
        skymap=skymap,
        far=far,
        significant=significant,
        classification=classification,
        properties=properties,
        related=related,
    )


def _external_coinc(coinc: Any, decode_skymap: _SkymapDecoder) -> RelatedEvent:
    """The ``external_coinc`` block: a GRB/SubGRB/neutrino/... coincidence (s, Hz)."""
    if not isinstance(coinc, dict):
        raise RejectedNotice("invalid_value", f"external_coinc is a {type(coinc).__name__}, not an object")
    notice_id = coinc.get("gcn_notice_id")
    if isinstance(notice_id, bool) or not (notice_id is None or isinstance(notice_id, int | str)):
        raise RejectedNotice("invalid_value", f"external_coinc.gcn_notice_id is not an int or string: {notice_id!r}")
    dt = coinc.get("time_difference")
    sky = coinc.get("combined_skymap")
    return RelatedEvent(
        relation="external_coinc",
        observatory=_opt_str(coinc, "observatory", "external_coinc.observatory"),
        event_id=None if notice_id is None else str(notice_id),
        ivorn=_opt_str(coinc, "ivorn", "external_coinc.ivorn"),
        search=_opt_str(coinc, "search", "external_coinc.search"),
        time_difference=None if dt is None else finite_float(dt, "external_coinc.time_difference"),
        far_temporal=_opt_far(coinc.get("time_coincidence_far"), "external_coinc.time_coincidence_far"),
        far_spatiotemporal=_opt_far(
            coinc.get("time_sky_position_coincidence_far"), "external_coinc.time_sky_position_coincidence_far"
        ),
        skymap=None if sky is None else decode_skymap(sky, "external_coinc.combined_skymap"),
    )


# --------------------------------------------------------------------------- field helpers


def _required(doc: Mapping[str, Any], key: str, field: str) -> Any:
    if key not in doc:
        raise RejectedNotice("missing_field", f"{field} is missing")
    return doc[key]


def _required_str(doc: Mapping[str, Any], key: str, field: str) -> str:
    value = _required(doc, key, field)
    if not isinstance(value, str) or not value.strip():
        raise RejectedNotice("invalid_value", f"{field} is not a non-empty string: {value!r}")
    return value.strip()


def _opt_str(doc: Mapping[str, Any], key: str, field: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RejectedNotice("invalid_value", f"{field} is not a string: {value!r}")
    return value


def _far(value: Any, field: str) -> float:
    """A false-alarm rate in Hz: finite and >= 0."""
    f = finite_float(value, field)
    if f < 0.0:
        raise RejectedNotice("invalid_value", f"{field} = {value!r} Hz is negative")
    return f


def _opt_far(value: Any, field: str) -> float | None:
    return None if value is None else _far(value, field)


def _instruments(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RejectedNotice("invalid_value", f"event.instruments is not a list of strings: {value!r}")
    return [v.strip() for v in value if v.strip()]


def _classification(value: Any) -> dict[str, float]:
    """Source-class probabilities (BNS, NSBH, BBH, Terrestrial), each in [0, 1]."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RejectedNotice("invalid_value", f"event.classification is not an object: {value!r}")
    out: dict[str, float] = {}
    for name, p in value.items():
        f = finite_float(p, f"event.classification.{name}")
        if not 0.0 <= f <= 1.0:
            raise RejectedNotice("invalid_value", f"event.classification.{name} = {p!r} is not a probability")
        out[str(name)] = f
    return out


def _property_name(name: str) -> str:
    """``HasNS`` -> ``has_ns``, ``HasMassGap`` -> ``has_mass_gap`` (other CamelCase likewise)."""
    known = _PROPERTY_NAMES.get(name)
    return known if known is not None else _CAMEL_BOUNDARY.sub("_", name).lower()


def _event_properties(event: Mapping[str, Any]) -> dict[str, PropertyValue]:
    """Source properties (probabilities), analysis provenance and burst parameters (s, Hz)."""
    out: dict[str, PropertyValue] = {}
    props = event.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise RejectedNotice("invalid_value", f"event.properties is not an object: {props!r}")
        for name, value in props.items():
            field = f"event.properties.{name}"
            if isinstance(value, bool | str):
                out[_property_name(str(name))] = value
            elif value is not None:
                out[_property_name(str(name))] = finite_float(value, field)
    for key in ("group", "pipeline", "search"):
        value = _opt_str(event, key, f"event.{key}")
        if value is not None:
            out[key] = value
    duration = event.get("duration")
    if duration is not None:
        out["duration_s"] = finite_float(duration, "event.duration")
    frequency = event.get("central_frequency")
    if frequency is not None:
        out["central_frequency_hz"] = finite_float(frequency, "event.central_frequency")
    return out
