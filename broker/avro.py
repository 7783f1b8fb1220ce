# SPDX-License-Identifier: Apache-2.0
"""Avro encoding of :class:`~broker.model.Alert` (``avro_schemas/alert.avsc``).

Messages use Avro *single-object encoding* (Avro 1.8+ specification): the
two marker bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint
of the writer schema, then the binary datum.  A subscriber identifies the
schema by fingerprint without a registry; :func:`decode_alert` does it for
Python users.  The schema is parsed once, at first use.

The schema evolves compatibly: every earlier version is kept as
``avro_schemas/alert-v<N>.avsc`` and data written with it is read through
Avro schema resolution into the current schema (fields added since get
their defaults).
"""

from __future__ import annotations

import io
import json
import struct
from functools import lru_cache
from importlib import resources
from typing import Any

import fastavro
import numpy as np
from fastavro.schema import fingerprint, to_parsing_canonical_form

from broker.errors import BrokerError
from broker.model import (
    Alert,
    Annotation,
    CatalogMatch,
    Circle,
    Coincidence,
    ContainmentRadius,
    CredibleRegion,
    Ellipse,
    Point,
    Provenance,
    Rectangle,
    Region,
    RelatedEvent,
    SkyMap,
    SubEvent,
)

SCHEMA_VERSION = 4
PREVIOUS_SCHEMAS = ("alert-v1.avsc", "alert-v2.avsc", "alert-v3.avsc")
_MARKER = b"\xc3\x01"


class AvroDecodeError(BrokerError):
    """Bytes are not an mmbroker single-object-encoded alert."""


@lru_cache(maxsize=16)
def _load_schema(name: str) -> dict[str, Any]:
    text = resources.files("avro_schemas").joinpath(name).read_text(encoding="utf-8")
    parsed = fastavro.parse_schema(json.loads(text), named_schemas={})
    if not isinstance(parsed, dict):
        raise AvroDecodeError(f"{name} is not a record schema")
    return parsed


def alert_schema() -> dict[str, Any]:
    """Parsed current ``alert.avsc`` (cached)."""
    return _load_schema("alert.avsc")


def _fingerprint(schema: dict[str, Any]) -> bytes:
    # fastavro returns the hex of the little-endian bytes, which is the byte
    # order single-object encoding prescribes.
    fp_hex: str = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    return bytes.fromhex(fp_hex)


@lru_cache(maxsize=1)
def schema_fingerprint() -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of the current schema's canonical form, 8 bytes little-endian."""
    return _fingerprint(alert_schema())


@lru_cache(maxsize=1)
def writer_schemas() -> dict[bytes, dict[str, Any]]:
    """Every schema version this code can read, by fingerprint (current one included)."""
    known = {schema_fingerprint(): alert_schema()}
    for name in PREVIOUS_SCHEMAS:
        schema = _load_schema(name)
        known[_fingerprint(schema)] = schema
    return known


def _region_record(region: Region | None) -> tuple[str, dict[str, Any]] | None:
    if region is None:
        return None
    ns = "org.mmbroker.v1."
    if isinstance(region, Point):
        return ns + "Point", {"ra": region.ra, "dec": region.dec}
    if isinstance(region, Circle):
        return ns + "Circle", {
            "ra": region.ra,
            "dec": region.dec,
            "radius": region.radius,
            "containment": region.containment,
            "systematic_included": region.systematic_included,
            "other_radii": [{"containment": r.containment, "radius": r.radius} for r in region.other_radii],
        }
    if isinstance(region, Ellipse):
        return ns + "Ellipse", {
            "ra": region.ra,
            "dec": region.dec,
            "semi_major": region.semi_major,
            "semi_minor": region.semi_minor,
            "position_angle": region.position_angle,
            "containment": region.containment,
            "systematic_included": region.systematic_included,
        }
    return ns + "Rectangle", {
        "ra": region.ra,
        "dec": region.dec,
        "corners": [list(c) for c in region.corners],
        "containment": region.containment,
        "systematic_included": region.systematic_included,
    }


def _pack(a: np.ndarray | None, dtype: str) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, dtype=dtype).tobytes()


def _unpack(b: bytes | None, dtype: str) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, dtype=dtype).copy()


def _skymap_record(m: SkyMap | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "uniq": _pack(m.uniq, "<i8"),
        "probdensity": _pack(m.probdensity, "<f8"),
        "distmu": _pack(m.distmu, "<f8"),
        "distsigma": _pack(m.distsigma, "<f8"),
        "distnorm": _pack(m.distnorm, "<f8"),
        "distmean": m.distmean,
        "diststd": m.diststd,
        "source": m.source,
    }


def to_record(alert: Alert) -> dict[str, Any]:
    """Convert an alert to the Avro record (plain dicts, datetimes kept)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "broker_id": alert.broker_id,
        "mission": alert.mission,
        "instrument": alert.instrument,
        "messenger": alert.messenger,
        "notice_type": alert.notice_type,
        "event_id": alert.event_id,
        "revision": alert.revision,
        "kind": alert.kind,
        "is_test": alert.is_test,
        "event_time": alert.event_time,
        "issued": alert.issued,
        "event_name": alert.event_name,
        "upstream_ids": list(alert.upstream_ids),
        "region": _region_record(alert.region),
        "skymap": _skymap_record(alert.skymap),
        "skymap_url": alert.skymap_url,
        "far": alert.far,
        "significant": alert.significant,
        "classification": dict(alert.classification),
        "properties": dict(alert.properties),
        "related": [
            {
                "relation": r.relation,
                "observatory": r.observatory,
                "event_id": r.event_id,
                "ivorn": r.ivorn,
                "search": r.search,
                "time_difference": r.time_difference,
                "far_temporal": r.far_temporal,
                "far_spatiotemporal": r.far_spatiotemporal,
                "skymap": _skymap_record(r.skymap),
            }
            for r in alert.related
        ],
        "sub_events": [
            {
                "event_id": s.event_id,
                "time": s.time,
                "time_offset": s.time_offset,
                "region": _region_record(s.region),
                "properties": dict(s.properties),
            }
            for s in alert.sub_events
        ],
        "tags": list(alert.tags),
        "annotations": [_annotation_record(a) for a in alert.annotations],
        "coincidences": [coincidence_record(c) for c in alert.coincidences],
        "revision_state": alert.revision_state,
        "previous_broker_id": alert.previous_broker_id,
        "dropped_tags": list(alert.dropped_tags),
        "provenance": {
            "source_format": alert.provenance.source_format,
            "parser_version": alert.provenance.parser_version,
            "raw_sha256": alert.provenance.raw_sha256,
            "raw_size": alert.provenance.raw_size,
            "upstream_ref": alert.provenance.upstream_ref,
        },
    }


def _region_from(rec: dict[str, Any] | None) -> Region | None:
    if rec is None:
        return None
    if "radius" in rec:
        return Circle(
            rec["ra"],
            rec["dec"],
            rec["radius"],
            rec["containment"],
            rec["systematic_included"],
            tuple(ContainmentRadius(r["containment"], r["radius"]) for r in rec["other_radii"]),
        )
    if "semi_major" in rec:
        return Ellipse(
            rec["ra"],
            rec["dec"],
            rec["semi_major"],
            rec["semi_minor"],
            rec["position_angle"],
            rec["containment"],
            rec["systematic_included"],
        )
    if "corners" in rec:
        return Rectangle(
            rec["ra"],
            rec["dec"],
            tuple((c[0], c[1]) for c in rec["corners"]),
            rec["containment"],
            rec["systematic_included"],
        )
    return Point(rec["ra"], rec["dec"])


def _annotation_record(a: Annotation) -> dict[str, Any]:
    return {
        "annotator": a.annotator,
        "version": a.version,
        "status": a.status,
        "reason": a.reason,
        "matches": [
            {
                "catalog": m.catalog,
                "source_id": m.source_id,
                "ra": m.ra,
                "dec": m.dec,
                "separation": m.separation,
                "source_in_region": m.source_in_region,
                "alert_in_source_error": m.alert_in_source_error,
                "containment": m.containment,
                "probdensity": m.probdensity,
                "searched_area": m.searched_area,
                "distance": m.distance,
                "dp_dv": m.dp_dv,
                "properties": dict(m.properties),
            }
            for m in a.matches
        ],
        "credible_regions": [
            {"level": c.level, "area": c.area, "moc": _pack(c.moc, "<i8")} for c in a.credible_regions
        ],
        "properties": dict(a.properties),
    }


def _annotation_from(rec: dict[str, Any]) -> Annotation:
    return Annotation(
        annotator=rec["annotator"],
        version=rec["version"],
        status=rec["status"],
        reason=rec["reason"],
        matches=tuple(
            CatalogMatch(
                catalog=m["catalog"],
                source_id=m["source_id"],
                ra=m["ra"],
                dec=m["dec"],
                separation=m["separation"],
                source_in_region=m["source_in_region"],
                alert_in_source_error=m["alert_in_source_error"],
                containment=m["containment"],
                probdensity=m["probdensity"],
                searched_area=m["searched_area"],
                distance=m["distance"],
                dp_dv=m["dp_dv"],
                properties=dict(m["properties"]),
            )
            for m in rec["matches"]
        ),
        credible_regions=tuple(
            CredibleRegion(c["level"], c["area"], np.frombuffer(c["moc"], dtype="<i8").astype(np.int64))
            for c in rec["credible_regions"]
        ),
        properties=dict(rec["properties"]),
    )


def coincidence_record(c: Coincidence) -> dict[str, Any]:
    """The Avro record of a coincidence (``Coincidence`` in ``alert.avsc``)."""
    return {
        "coincidence_id": c.coincidence_id,
        "rule": c.rule,
        "tag": c.tag,
        "status": c.status,
        "a_broker_id": c.a_broker_id,
        "a_event_key": c.a_event_key,
        "a_messenger": c.a_messenger,
        "b_broker_id": c.b_broker_id,
        "b_event_key": c.b_event_key,
        "b_messenger": c.b_messenger,
        "time_difference": c.time_difference,
        "window_low": c.window[0],
        "window_high": c.window[1],
        "spatial_test": c.spatial_test,
        "overlap": c.overlap,
        "separation": c.separation,
        "far_temporal": c.far_temporal,
        "far_spatiotemporal": c.far_spatiotemporal,
        "reason": c.reason,
    }


def coincidence_from(rec: dict[str, Any]) -> Coincidence:
    """Rebuild a :class:`Coincidence` from its Avro record."""
    return Coincidence(
        coincidence_id=rec["coincidence_id"],
        rule=rec["rule"],
        tag=rec["tag"],
        status=rec["status"],
        a_broker_id=rec["a_broker_id"],
        a_event_key=rec["a_event_key"],
        a_messenger=rec["a_messenger"],
        b_broker_id=rec["b_broker_id"],
        b_event_key=rec["b_event_key"],
        b_messenger=rec["b_messenger"],
        time_difference=rec["time_difference"],
        window=(rec["window_low"], rec["window_high"]),
        spatial_test=rec["spatial_test"],
        overlap=rec["overlap"],
        separation=rec["separation"],
        far_temporal=rec["far_temporal"],
        far_spatiotemporal=rec["far_spatiotemporal"],
        reason=rec["reason"],
    )


@lru_cache(maxsize=1)
def coincidence_schema() -> dict[str, Any]:
    """The parsed schema of a ``<prefix>.coincidence`` message: the ``Coincidence`` record."""
    raw = json.loads(resources.files("avro_schemas").joinpath("alert.avsc").read_text(encoding="utf-8"))
    for f in raw["fields"]:
        if f["name"] == "coincidences":
            sub = dict(f["type"]["items"])
            if "namespace" not in sub and "namespace" in raw:
                sub["namespace"] = raw["namespace"]
            parsed = fastavro.parse_schema(sub)
            if not isinstance(parsed, dict):
                break
            return parsed
    raise BrokerError("alert.avsc has no coincidences record")


def coincidence_fingerprint() -> bytes:
    """CRC-64-AVRO fingerprint of :func:`coincidence_schema`."""
    return _fingerprint(coincidence_schema())


def encode_coincidence(c: Coincidence) -> bytes:
    """Single-object-encode a coincidence message (marker, fingerprint, datum)."""
    buf = io.BytesIO()
    buf.write(_MARKER)
    buf.write(coincidence_fingerprint())
    fastavro.schemaless_writer(buf, coincidence_schema(), coincidence_record(c))
    return buf.getvalue()


def decode_coincidence(data: bytes) -> Coincidence:
    """Decode a ``<prefix>.coincidence`` message."""
    if len(data) < 10 or data[:2] != _MARKER or data[2:10] != coincidence_fingerprint():
        raise AvroDecodeError("not an mmbroker coincidence message (marker or fingerprint mismatch)")
    rec = fastavro.schemaless_reader(io.BytesIO(data[10:]), coincidence_schema(), None)
    if not isinstance(rec, dict):
        raise AvroDecodeError("datum is not a record")
    return coincidence_from(rec)


def _skymap_from(rec: dict[str, Any] | None) -> SkyMap | None:
    if rec is None:
        return None
    return SkyMap(
        uniq=np.frombuffer(rec["uniq"], dtype="<i8").astype(np.int64),
        probdensity=np.frombuffer(rec["probdensity"], dtype="<f8").astype(np.float64),
        distmu=_unpack(rec["distmu"], "<f8"),
        distsigma=_unpack(rec["distsigma"], "<f8"),
        distnorm=_unpack(rec["distnorm"], "<f8"),
        distmean=rec["distmean"],
        diststd=rec["diststd"],
        source=rec["source"],
    )


def from_record(rec: dict[str, Any]) -> Alert:
    """Rebuild an :class:`Alert` from a decoded Avro record."""
    prov = rec["provenance"]
    return Alert(
        mission=rec["mission"],
        instrument=rec["instrument"],
        messenger=rec["messenger"],
        notice_type=rec["notice_type"],
        event_id=rec["event_id"],
        revision=rec["revision"],
        kind=rec["kind"],
        is_test=rec["is_test"],
        event_time=rec["event_time"],
        issued=rec["issued"],
        provenance=Provenance(
            prov["source_format"], prov["parser_version"], prov["raw_sha256"], prov["raw_size"], prov["upstream_ref"]
        ),
        event_name=rec["event_name"],
        upstream_ids=tuple(rec["upstream_ids"]),
        region=_region_from(rec["region"]),
        skymap=_skymap_from(rec["skymap"]),
        skymap_url=rec["skymap_url"],
        far=rec["far"],
        significant=rec["significant"],
        classification=dict(rec["classification"]),
        properties=dict(rec["properties"]),
        related=tuple(
            RelatedEvent(
                relation=r["relation"],
                observatory=r["observatory"],
                event_id=r["event_id"],
                ivorn=r["ivorn"],
                search=r["search"],
                time_difference=r["time_difference"],
                far_temporal=r["far_temporal"],
                far_spatiotemporal=r["far_spatiotemporal"],
                skymap=_skymap_from(r["skymap"]),
            )
            for r in rec["related"]
        ),
        sub_events=tuple(
            SubEvent(
                event_id=s["event_id"],
                time=s["time"],
                time_offset=s["time_offset"],
                region=_region_from(s["region"]),
                properties=dict(s["properties"]),
            )
            for s in rec["sub_events"]
        ),
        tags=tuple(rec["tags"]),
        annotations=tuple(_annotation_from(a) for a in rec.get("annotations", ())),
        coincidences=tuple(coincidence_from(c) for c in rec.get("coincidences", ())),
        revision_state=rec.get("revision_state"),
        previous_broker_id=rec.get("previous_broker_id"),
        dropped_tags=tuple(rec.get("dropped_tags") or ()),
    )


def encode_alert(alert: Alert) -> bytes:
    """Single-object-encode ``alert`` (marker, schema fingerprint, datum)."""
    buf = io.BytesIO()
    buf.write(_MARKER)
    buf.write(schema_fingerprint())
    fastavro.schemaless_writer(buf, alert_schema(), to_record(alert))
    return buf.getvalue()


def decode_record(data: bytes) -> dict[str, Any]:
    """Decode single-object-encoded bytes to the Avro record dict."""
    if len(data) < 10 or data[:2] != _MARKER:
        raise AvroDecodeError("not Avro single-object encoding (marker C3 01 missing)")
    writer = writer_schemas().get(data[2:10])
    if writer is None:
        fp = struct.unpack("<Q", data[2:10])[0]
        raise AvroDecodeError(f"unknown writer schema fingerprint {fp:#018x}")
    reader = None if writer is alert_schema() else alert_schema()
    rec = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer, reader)
    if not isinstance(rec, dict):
        raise AvroDecodeError("datum is not a record")
    return rec


def decode_alert(data: bytes) -> Alert:
    """Decode single-object-encoded bytes to an :class:`Alert`."""
    return from_record(decode_record(data))
