# SPDX-License-Identifier: Apache-2.0
"""NASA GCN unified-schema JSON notices (GCN Kafka topics ``gcn.notices.*``).

The unified schema (nasa-gcn/gcn-schema) composes every mission's notice from
the ``gcn/notices/core/*`` building blocks, whose units are already ours:
positions and error radii in deg, times ISO-8601 UTC, durations in s and
``far`` in Hz.  The exceptions handled here, each stated by its schema:

* ``ra_dec_error`` is a circle radius (number) or an ellipse
  ``[semi-major, semi-minor, position angle]`` (list; semi-minor defaults to
  the semi-major axis, the angle to 0 deg east of north).  CHIME and DSA-110
  send a first axis shorter than the second; the ellipse is rewritten with
  the axes swapped and the angle turned by 90 deg (the same ellipse);
* ``containment_probability`` defaults to 0.9 (core ``Localization``) for
  every document that names a GCN schema; schema-less messages get ``None``;
* IceCube ``nu_energy`` is in TeV, KM3NeT ``energy_measured`` in GeV, DSA-110
  ``event_duration`` and CHIME ``sampling_time`` in ms.  The AMON ``energy``
  of the GCN Classic translations (PR #161) has no stated unit and is kept
  unconverted as ``energy_raw``.

Identity: ``event_id`` is the first ``id`` (ints stringified), else
``obs_id``, ``event_name`` or ``ref_ID``, else the trigger time (ISO, UTC);
a notice with neither an identifier nor a time is refused.  ``event_time``
is ``trigger_time``, else ``observation_start`` (Fermi-LAT flares, HEASARC
archive notices), else ``None``.  ``alert_type`` ``subsequent`` (a repeat
detection of a known FRB source under its own id) is an ``initial`` alert;
``alert_tense`` ``test`` and ``injection``, a "this is a test" note and
LVK ``MS``/``TS`` ids mark tests; ``archival`` is not a test and is kept as
the ``alert_tense`` property.

Boom crossmatch messages become one alert for their single target (event
time: its earliest photometric detection); a message with several targets is
refused, as one message must give one alert.  Schema fragments
(``core/*``) and circulars are refused as ``not_a_notice``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from broker.errors import RejectedNotice
from broker.formats.common import (
    as_bool,
    as_text,
    check_position,
    check_probability,
    check_radius,
    finite_float,
    messenger_for,
    parse_time,
    provenance,
)
from broker.formats.skymap import decode_base64_skymap
from broker.model import (
    Alert,
    AlertKind,
    Circle,
    ContainmentRadius,
    Ellipse,
    Messenger,
    Point,
    PropertyValue,
    Rectangle,
    Region,
    RelatedEvent,
    SkyMap,
    SubEvent,
)

__all__ = ["from_gcn_json", "is_gcn_json"]

_PARSER = "gcn_json"
_TOPIC_PREFIX = "gcn.notices."
_SCHEMA_RE = re.compile(r"^https?://gcn\.nasa\.gov/schema/(?:[^/]+/)?gcn/(?P<path>[\w./-]+?)\.schema\.json$")
_DEFAULT_CONTAINMENT = 0.9
"""Core ``Localization`` schema: "containment_probability ... if absent, default is 0.9"."""

_MISSION_NAMES: dict[str, str] = {
    "agile": "AGILE",
    "alexis": "ALEXIS",
    "amon": "AMON",
    "bepposax": "BeppoSAX",
    "boom": "Boom",
    "burstcube": "BurstCube",
    "calet_gbm": "CALET",
    "chime": "CHIME",
    "dsa110": "DSA-110",
    "einstein_probe": "Einstein Probe",
    "fermi": "Fermi",
    "gecam": "GECAM",
    "glowbug": "GLOWBUG",
    "heasarc": "HEASARC",
    "hete": "HETE",
    "icecube": "IceCube",
    "integral": "INTEGRAL",
    "km3net": "KM3NeT",
    "konus": "Konus-Wind",
    "lvc": "LVK",
    "lvk": "LVK",
    "maxi": "MAXI",
    "milagro": "MILAGRO",
    "moa": "MOA",
    "near": "NEAR",
    "rxte": "RXTE",
    "sk_sn": "Super-Kamiokande",
    "snews": "SNEWS",
    "snews2": "SNEWS",
    "superk": "Super-Kamiokande",
    "suzaku": "SUZAKU",
    "svom": "SVOM",
    "swift": "Swift",
}
"""Display name of the mission named by a ``$schema`` path or topic segment."""

_KIND_BY_ALERT_TYPE: dict[str, AlertKind] = {
    "initial": "initial",
    "subsequent": "initial",
    "update": "update",
    "retraction": "retraction",
}
_KIND_BY_CLASSIC_WORD: dict[str, AlertKind] = {
    "preliminary": "preliminary",
    "initial": "initial",
    "update": "update",
    "retracted": "retraction",
    "retraction": "retraction",
}
"""Words of a GCN Classic translation's ``notice_type`` (PR #161) that tell the kind."""

_DECLARED_MESSENGERS: dict[str, Messenger] = {"gw": "gw", "neutrino": "neutrino"}
_MESSENGER_BY_AMON_TYPE: dict[str, Messenger] = {"burst": "gamma"}
"""AMON translations are neutrino alerts except ``Burst`` (HAWC burst monitor)."""

_TEST_TENSES = frozenset({"test", "injection"})
_TEST_NOTE = re.compile(r"\bthis is a test\b", re.IGNORECASE)
_HAS_NAMES = {"HasNS": "has_ns", "HasRemnant": "has_remnant", "HasMassGap": "has_mass_gap", "HasSSM": "has_ssm"}
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_FLUX_NAMES = {"erg/cm2/s": "flux_erg_cm2_s", "ph/cm2/s": "flux_ph_cm2_s"}


# --------------------------------------------------------------------------- value converters


def _count(value: Any, field: str) -> int:
    out = finite_float(value, field)
    if not out.is_integer():
        raise RejectedNotice("invalid_value", f"{field} is not a whole number: {value!r}")
    return int(out)


def _scaled(factor: float) -> Callable[[Any, str], float]:
    def convert(value: Any, field: str) -> float:
        return finite_float(value, field) * factor

    return convert


def _joined(value: Any, field: str) -> str:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RejectedNotice("invalid_value", f"{field} is not a list of strings: {value!r}")
    return ",".join(value)


Converter = Callable[[Any, str], PropertyValue]

_PROPERTIES: tuple[tuple[str, str, Converter], ...] = (
    ("p_astro", "p_astro", check_probability),
    ("signalness", "signalness", check_probability),
    ("nu_energy", "energy_tev", finite_float),  # IceCube: TeV
    ("energy", "energy_raw", finite_float),  # AMON classic: unit not stated
    ("energy_limit", "energy_limit_kev", finite_float),  # Super-K classic: keV
    ("snr", "snr", finite_float),
    ("rate_snr", "rate_snr", finite_float),
    ("image_snr", "image_snr", finite_float),
    ("rate_duration", "rate_duration_s", finite_float),
    ("image_duration", "image_duration_s", finite_float),
    ("net_count_rate", "net_count_rate_cts_s", finite_float),
    ("t90", "t90_s", finite_float),
    ("t50", "t50_s", finite_float),
    ("trigger_time_error", "trigger_time_error_s", finite_float),
    ("dm", "dm_pc_cm3", finite_float),
    ("dm_error", "dm_error_pc_cm3", finite_float),
    ("dm_gal_ne_2001_max", "dm_gal_ne2001_max_pc_cm3", finite_float),
    ("event_duration", "event_duration_s", _scaled(1e-3)),  # DSA-110: ms
    ("sampling_time", "sampling_time_s", _scaled(1e-3)),  # CHIME: ms
    ("importance", "importance", finite_float),
    ("association_probability", "association_probability", check_probability),
    ("known_source", "known_source", as_text),
    ("update_message", "update_message", as_text),
    ("pipeline", "pipeline", as_text),
    ("search", "search", as_text),
    ("group", "group", as_text),
    ("alert_topology", "topology", as_text),
    ("number_of_events", "n_events", _count),
    ("n_events", "n_events", _count),
    ("n_ibd_events", "n_ibd_events", _count),
    ("n_events_coincident", "n_events_coincident", _count),
    ("pval_generic", "pval_generic", check_probability),
    ("pval_bayesian", "pval_bayesian", check_probability),
    ("p_value", "p_value", check_probability),
    ("charge", "charge_pe", finite_float),
    ("observation_livetime", "observation_livetime_s", finite_float),
    ("detection_interval", "detection_interval_s", finite_float),
    ("luminosity_distance", "luminosity_distance_mpc", finite_float),
    ("trigger_number", "trigger_number", _count),
    ("processed_sample", "processed_sample", as_text),
    ("trigger_type", "trigger_type", as_text),
    ("subtype", "subtype", as_text),
    ("duration_class", "duration_class", as_text),
    ("hardness_ratio", "hardness_ratio", finite_float),
    ("slew_status", "slew_status", as_text),
    ("alert_tense", "alert_tense", as_text),
    ("follow_up_type", "follow_up_type", as_text),
    ("loglr", "loglr", finite_float),
    ("spectral_class", "spectral_class", as_text),
    ("TS", "ts", finite_float),
    ("flux_ratio", "flux_ratio", finite_float),
    ("snews2_tier", "snews2_tier", as_text),
    ("potential_counterpart", "potential_counterpart", as_bool),
    ("coincidence_with", "coincidence_with", _joined),
    ("target_name", "target_name", as_text),
    ("facility_name", "facility", as_text),
    ("rank", "rank", _count),
)
"""Scalar notice fields copied to :attr:`Alert.properties`: (field, property name, converter)."""

_SUB_EVENT_PROPERTIES: tuple[tuple[str, str, Converter], ...] = (
    ("event_pval_generic", "pval_generic", check_probability),
    ("event_pval_bayesian", "pval_bayesian", check_probability),
    ("cos_zenith", "cos_zenith", finite_float),
    ("prob_evt_topology", "topology", as_text),
    ("energy_measured", "energy_tev", _scaled(1e-3)),  # KM3NeT: GeV
)


# --------------------------------------------------------------------------- recognition


def is_gcn_json(doc: dict[str, Any]) -> bool:
    """Tell whether ``doc`` is a GCN unified-schema notice.

    True when ``$schema`` points under ``gcn.nasa.gov/schema``, or, for the
    schema-less messages of older producers (gwcelery's Kafka test alerts),
    when the unified reporter fields (``mission``/``instrument``) come with
    ``trigger_time`` or ``alert_type``.
    """
    schema = doc.get("$schema")
    if isinstance(schema, str):
        return "gcn.nasa.gov/schema" in schema
    reporter = isinstance(doc.get("mission"), str) or isinstance(doc.get("instrument"), str)
    timing = isinstance(doc.get("trigger_time"), str) or isinstance(doc.get("alert_type"), str)
    return reporter and timing


def _schema_path(doc: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Segments of the notice schema below ``gcn/notices/`` (``None`` without ``$schema``).

    Raises
    ------
    RejectedNotice
        ``not_a_notice`` for circulars, schema fragments (``core/*``) and
        unrecognised GCN schema addresses.
    """
    schema = doc.get("$schema")
    if schema is None:
        return None
    m = _SCHEMA_RE.match(schema) if isinstance(schema, str) else None
    if m is None:
        raise RejectedNotice("not_a_notice", f"$schema {schema!r} is not a GCN notice schema")
    parts = tuple(m.group("path").split("/"))
    if parts[0] != "notices" or len(parts) < 3:
        raise RejectedNotice("not_a_notice", f"$schema {schema!r} names gcn/{parts[0]}, which is not a notice schema")
    if parts[1] == "core":
        raise RejectedNotice(
            "not_a_notice", f"$schema core/{parts[-1]} is a schema fragment (a building block), not a notice"
        )
    return parts[1:]


# --------------------------------------------------------------------------- reporter


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def _mission_segment(path: tuple[str, ...]) -> str:
    return path[1] if path[0] == "classic" and len(path) > 2 else path[0]


def _mission(doc: Mapping[str, Any], path: tuple[str, ...] | None, topic: str | None) -> str:
    mission = doc.get("mission")
    if isinstance(mission, str) and mission.strip():
        return mission.strip()
    if path is not None:
        seg = _mission_segment(path)
        return _MISSION_NAMES.get(seg, seg)
    if topic is not None and topic.startswith(_TOPIC_PREFIX) and topic.count(".") >= 2:
        seg = topic.split(".")[2]
        return _MISSION_NAMES.get(seg, seg)
    raise RejectedNotice("missing_field", "mission: named neither by the notice, its $schema nor its topic")


def _instrument(doc: Mapping[str, Any]) -> str | None:
    inst = doc.get("instrument")
    return inst.strip() if isinstance(inst, str) and inst.strip() else None


def _notice_type(path: tuple[str, ...] | None, mission: str, instrument: str | None, topic: str | None) -> str:
    """``gcn.notices.<schema path>``, else the topic if it names the mission, else mission/instrument."""
    if path is not None:
        return _TOPIC_PREFIX + ".".join(path).lower()
    if topic is not None and topic.startswith(_TOPIC_PREFIX):
        segs = topic.split(".")
        if len(segs) > 2 and _slug(segs[2]) == _slug(mission):
            return topic
    parts = [_slug(mission)]
    if instrument:
        parts.extend(_slug(p) for p in re.split(r"[-.]", instrument) if _slug(p))
    return _TOPIC_PREFIX + ".".join(parts)


def _messenger(doc: Mapping[str, Any], mission: str, instrument: str | None) -> Messenger:
    declared = doc.get("messenger")
    if isinstance(declared, str) and declared.lower() in _DECLARED_MESSENGERS:
        return _DECLARED_MESSENGERS[declared.lower()]
    classic_type = doc.get("notice_type")
    if mission.lower() == "amon" and isinstance(classic_type, str):
        by_type = _MESSENGER_BY_AMON_TYPE.get(classic_type.strip().lower())
        if by_type is not None:
            return by_type
    return messenger_for(mission, instrument)


# --------------------------------------------------------------------------- identity and life cycle


def _ids(value: Any) -> tuple[str, ...]:
    """All identifiers of an ``id`` field (string, number or list of them)."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise RejectedNotice("invalid_value", f"id element is not a string or integer: {item!r}")
        if str(item).strip():
            out.append(str(item).strip())
    return tuple(out)


def _first_name(value: Any, field: str) -> str | None:
    names = _ids(value) if value is not None else ()
    if value is not None and not names:
        raise RejectedNotice("invalid_value", f"{field} is empty")
    return names[0] if names else None


def _event_id(doc: Mapping[str, Any], ids: tuple[str, ...], event_time: datetime | None) -> str:
    if ids:
        return ids[0]
    for field in ("obs_id", "event_name", "ref_ID"):
        name = _first_name(doc.get(field), field)
        if name is not None:
            return name
    if event_time is not None:
        return event_time.isoformat().replace("+00:00", "Z")
    raise RejectedNotice(
        "missing_field", "id: the notice has no id, obs_id, event_name or ref_ID, and no trigger_time either"
    )


def _event_time(doc: Mapping[str, Any]) -> datetime | None:
    for field in ("trigger_time", "observation_start"):
        if doc.get(field) is not None:
            return parse_time(doc[field], field)
    return None


def _kind(doc: Mapping[str, Any]) -> AlertKind:
    alert_type = doc.get("alert_type")
    if alert_type is not None:
        kind = _KIND_BY_ALERT_TYPE.get(str(alert_type).strip().lower())
        if kind is None:
            raise RejectedNotice(
                "invalid_value", f"alert_type {alert_type!r} is not initial/subsequent/update/retraction"
            )
        return kind
    classic_type = doc.get("notice_type")
    if isinstance(classic_type, str):
        for word in re.split(r"[^a-z]+", classic_type.lower()):
            if word in _KIND_BY_CLASSIC_WORD:
                return _KIND_BY_CLASSIC_WORD[word]
    return "initial"


def _is_test(doc: Mapping[str, Any], messenger: Messenger, ids: tuple[str, ...]) -> bool:
    tense = doc.get("alert_tense")
    if isinstance(tense, str) and tense.strip().lower() in _TEST_TENSES:
        return True
    info = doc.get("additional_info")
    if isinstance(info, str) and _TEST_NOTE.search(info):
        return True
    return messenger == "gw" and any(i.startswith(("MS", "TS")) for i in ids)


def _revision(doc: Mapping[str, Any]) -> int | None:
    value = doc.get("record_number")
    if value is None:
        return None
    rev = _count(value, "record_number")
    if rev < 0:
        raise RejectedNotice("invalid_value", f"record_number {value!r} is negative")
    return rev


# --------------------------------------------------------------------------- localization


def _containment(loc: Mapping[str, Any], schema_default: float | None) -> float | None:
    value = loc.get("containment_probability")
    if value is None:
        return schema_default
    return check_probability(value, "containment_probability")


def _systematic(loc: Mapping[str, Any]) -> bool | None:
    value = loc.get("systematic_included")
    return None if value is None else as_bool(value, "systematic_included")


def _other_radii(loc: Mapping[str, Any]) -> tuple[ContainmentRadius, ...]:
    """Radii at other containments: IceCube/AMON ``ra_dec_error_50``, KM3NeT ``src_error_50``, Super-K 68/95."""
    fields = (("ra_dec_error_50", 0.5), ("src_error_50", 0.5), ("ra_dec_error_68", 0.68), ("ra_dec_error_95", 0.95))
    return tuple(
        ContainmentRadius(containment=p, radius=check_radius(loc[f], f)) for f, p in fields if loc.get(f) is not None
    )


def _ellipse(ra: float, dec: float, axes: list[Any], containment: float | None, systematic: bool | None) -> Region:
    """Region of an ``[a, b, pa]`` list; a 1-element list is a circle, ``b < a`` is normalised."""
    if not 1 <= len(axes) <= 3:
        raise RejectedNotice("invalid_error_region", f"ra_dec_error has {len(axes)} elements, expected 1 to 3")
    a = check_radius(axes[0], "ra_dec_error[0]")
    if len(axes) == 1:
        return Circle(ra, dec, a, containment, systematic)
    b = check_radius(axes[1], "ra_dec_error[1]")
    try:
        pa = finite_float(axes[2], "ra_dec_error[2]") if len(axes) == 3 else 0.0
    except RejectedNotice as exc:
        raise RejectedNotice("invalid_error_region", exc.reason) from exc
    if b > a:
        a, b, pa = b, a, pa + 90.0
    return Ellipse(ra, dec, a, b, pa % 180.0, containment, systematic)


def _legacy_radius(loc: Mapping[str, Any]) -> float | None:
    """Radius of the pre-v4 ``ra_uncertainty``/``dec_uncertainty`` + ``uncertainty_shape`` fields."""
    for field in ("ra_uncertainty", "dec_uncertainty"):
        value = loc.get(field)
        if value is None:
            continue
        shape = loc.get("uncertainty_shape", "circle")
        if shape != "circle":
            raise RejectedNotice("invalid_error_region", f"uncertainty_shape {shape!r} is not supported")
        first = value[0] if isinstance(value, list) and value else value
        return check_radius(first, field)
    return None


def _corners(value: Any) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or len(value) < 3:
        raise RejectedNotice("invalid_error_region", f"rectangular_error_corners is not a list of corners: {value!r}")
    out = []
    for corner in value:
        if not isinstance(corner, list) or len(corner) != 2:
            raise RejectedNotice("invalid_error_region", f"rectangular_error_corners item {corner!r} is not [ra, dec]")
        out.append(check_position(corner[0], corner[1], "rectangular_error_corners"))
    return tuple(out)


def _region(loc: Mapping[str, Any], schema_default: float | None, where: str = "") -> Region | None:
    """The error region of a core ``Localization`` block; ``None`` when it has no position.

    Raises
    ------
    RejectedNotice
        ``invalid_coordinates`` / ``invalid_error_region`` for NaN, infinite or
        out-of-range positions and radii.
    """
    if loc.get("ra") is None and loc.get("dec") is None:
        return None
    ra, dec = check_position(loc.get("ra"), loc.get("dec"), where)
    containment, sys = _containment(loc, schema_default), _systematic(loc)
    if loc.get("rectangular_error_corners") is not None:
        return Rectangle(ra, dec, _corners(loc["rectangular_error_corners"]), containment, sys)
    error = loc.get("ra_dec_error")
    if isinstance(error, list):
        return _ellipse(ra, dec, error, containment, sys)
    radius = check_radius(error, "ra_dec_error") if error is not None else _legacy_radius(loc)
    if radius is None:
        return Point(ra, dec)
    return Circle(ra, dec, radius, containment, sys, _other_radii(loc))


def _skymap(doc: Mapping[str, Any]) -> SkyMap | None:
    value = doc.get("healpix_file")
    return None if value is None else decode_base64_skymap(value, "healpix_file")


# --------------------------------------------------------------------------- statistics and properties


def _far(doc: Mapping[str, Any]) -> float | None:
    """``far`` in Hz, as core ``Statistics`` states it."""
    if doc.get("far") is None:
        return None
    far = finite_float(doc["far"], "far")
    if far < 0:
        raise RejectedNotice("invalid_value", f"far {far!r} Hz is negative")
    return far


def _classification(doc: Mapping[str, Any], field: str = "classification") -> dict[str, float]:
    value = doc.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RejectedNotice("invalid_value", f"{field} is not a mapping: {value!r}")
    return {str(k): check_probability(v, f"{field}.{k}") for k, v in value.items()}


def _snake(name: str) -> str:
    return _HAS_NAMES.get(name) or _CAMEL_BOUNDARY.sub("_", name).lower()


def _table(doc: Mapping[str, Any], table: tuple[tuple[str, str, Converter], ...]) -> dict[str, PropertyValue]:
    out: dict[str, PropertyValue] = {}
    for field, name, convert in table:
        value = doc.get(field)
        if value is None or isinstance(value, dict) or (isinstance(value, list) and convert is not _joined):
            continue  # absent, or a structured variant (asymmetric errors, ranges) not kept as a property
        out[name] = convert(value, field)
    return out


def _properties(doc: Mapping[str, Any], classic_type: str | None) -> dict[str, PropertyValue]:
    out = _table(doc, _PROPERTIES)
    binary = doc.get("properties")
    if isinstance(binary, dict):
        out.update({_snake(str(k)): check_probability(v, f"properties.{k}") for k, v in binary.items()})
    if doc.get("flux") is not None:
        unit = doc.get("flux_unit", "erg/cm2/s")  # core Spectral default
        if unit not in _FLUX_NAMES:
            raise RejectedNotice("invalid_value", f"flux_unit {unit!r} is not one of {sorted(_FLUX_NAMES)}")
        out[_FLUX_NAMES[unit]] = finite_float(doc["flux"], "flux")
    if classic_type is not None:
        out["classic_notice_type"] = classic_type
    return out


# --------------------------------------------------------------------------- links and constituents


def _related(doc: Mapping[str, Any]) -> tuple[RelatedEvent, ...]:
    out: list[RelatedEvent] = []
    if isinstance(doc.get("ref_ID"), str):
        observatory = doc.get("ref_instrument")
        out.append(RelatedEvent("reference", observatory if isinstance(observatory, str) else None, doc["ref_ID"]))
    if isinstance(doc.get("follow_up_event"), str):
        out.append(RelatedEvent("follow_up", event_id=doc["follow_up_event"]))
    if isinstance(doc.get("external_coincidence"), dict):
        out.append(_external_coincidence(doc["external_coincidence"]))
    sources = doc.get("counterpart_info")  # KM3NeT: a list of known sources, or a string ("No search")
    for source in sources if isinstance(sources, list) else ():
        if isinstance(source, dict) and isinstance(source.get("name"), str):
            out.append(RelatedEvent("potential_counterpart", event_id=source["name"]))
    return tuple(out)


def _optional_num(ext: Mapping[str, Any], field: str) -> float | None:
    return None if ext.get(field) is None else finite_float(ext[field], f"external_coincidence.{field}")


def _external_coincidence(ext: Mapping[str, Any]) -> RelatedEvent:
    """The LVK draft's (PR #196) ``external_coincidence``: time difference in s, FARs in Hz."""
    notice_id = ext.get("gcn_notice_id")
    combined = ext.get("combined_skymap")
    return RelatedEvent(
        relation="external_coinc",
        observatory=ext.get("observatory") if isinstance(ext.get("observatory"), str) else None,
        event_id=None if notice_id is None else _ids(notice_id)[0],
        ivorn=ext.get("ivorn") if isinstance(ext.get("ivorn"), str) else None,
        search=ext.get("search") if isinstance(ext.get("search"), str) else None,
        time_difference=_optional_num(ext, "time_difference"),
        far_temporal=_optional_num(ext, "time_coincidence_far"),
        far_spatiotemporal=_optional_num(ext, "time_sky_position_coincidence_far"),
        skymap=None if combined is None else decode_base64_skymap(combined, "external_coincidence.combined_skymap"),
    )


def _sub_event(item: Any, index: int, field: str) -> SubEvent:
    """One IceCube ``coincident_events`` or KM3NeT ``event_details`` entry."""
    if not isinstance(item, dict):
        raise RejectedNotice("invalid_value", f"{field}[{index}] is not an object")
    loc = item.get("localization", item)
    if not isinstance(loc, dict):
        raise RejectedNotice("invalid_value", f"{field}[{index}].localization is not an object")
    ids = _ids(item.get("id"))
    return SubEvent(
        event_id=ids[0] if ids else None,
        time=None if item.get("trigger_time") is None else parse_time(item["trigger_time"], f"{field}.trigger_time"),
        time_offset=None if item.get("event_dt") is None else finite_float(item["event_dt"], f"{field}.event_dt"),
        region=_region(loc, _DEFAULT_CONTAINMENT, f"{field}[{index}]"),
        properties=_table(item, _SUB_EVENT_PROPERTIES),
    )


def _sub_events(doc: Mapping[str, Any]) -> tuple[SubEvent, ...]:
    for field in ("coincident_events", "event_details"):
        items = doc.get(field)
        if items is not None:
            if not isinstance(items, list):
                raise RejectedNotice("invalid_value", f"{field} is not a list")
            return tuple(_sub_event(item, i, field) for i, item in enumerate(items))
    return ()


# --------------------------------------------------------------------------- Boom


def _boom_as_notice(doc: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[RelatedEvent, ...]]:
    """Flatten a Boom crossmatch message with exactly one target into notice fields.

    The target gives position, name and classification; its earliest
    photometric detection (a point with ``mag``) becomes ``observation_start``.
    Its ``gcn_crossmatch`` entries are returned as ``counterpart_of`` links.
    """
    data = doc.get("data")
    if not isinstance(data, dict):
        raise RejectedNotice("missing_field", "data: the Boom message has no data object")
    targets = data.get("targets")
    if not isinstance(targets, list) or not targets:
        raise RejectedNotice("missing_field", "data.targets: the Boom message lists no target")
    if len(targets) > 1 or not isinstance(targets[0], dict):
        raise RejectedNotice(
            "invalid_value", f"Boom message carries {len(targets)} targets; only single-target messages are supported"
        )
    target = targets[0]
    flat = {k: v for k, v in doc.items() if k != "data"}
    flat.update({k: target[k] for k in ("ra", "dec", "ra_dec_error", "event_name") if k in target})
    flat["classification"] = target.get("classification_scores")
    detections = [
        parse_time(p.get("observation_start"), "data.photometry.observation_start")
        for p in data.get("photometry") or ()
        if isinstance(p, dict) and p.get("event_name") == target.get("event_name") and p.get("mag") is not None
    ]
    flat["observation_start"] = min(detections).isoformat() if detections else None
    links = tuple(
        RelatedEvent(
            "counterpart_of",
            observatory=c.get("ref_instrument") if isinstance(c.get("ref_instrument"), str) else None,
            event_id=c.get("ref_ID") if isinstance(c.get("ref_ID"), str) else None,
        )
        for c in target.get("gcn_crossmatch") or ()
        if isinstance(c, dict)
    )
    return flat, links


# --------------------------------------------------------------------------- entry point


def from_gcn_json(doc: dict[str, Any], raw: bytes, topic: str | None = None) -> Alert:
    """Normalize a GCN unified-schema JSON notice to an :class:`Alert`.

    Parameters
    ----------
    doc
        The decoded JSON object.
    raw
        The payload as received (for provenance).
    topic
        Source topic, a hint for the mission and notice type of messages
        without ``$schema`` (e.g. ``gcn.notices.swift.bat.guano``).

    Returns
    -------
    Alert
        Angles in deg, times UTC, durations in s, ``far`` in Hz, energies in TeV.

    Raises
    ------
    RejectedNotice
        ``not_a_notice`` for schema fragments and circulars, ``missing_field``
        when neither an identifier nor a time is given, ``invalid_coordinates``
        / ``invalid_error_region`` / ``invalid_time`` / ``invalid_value`` for
        bad values, ``corrupt_skymap`` for an undecodable ``healpix_file``.
    """
    path = _schema_path(doc)
    links: tuple[RelatedEvent, ...] = ()
    if path is not None and path[0] == "boom":
        doc, links = _boom_as_notice(doc)
    mission = _mission(doc, path, topic)
    instrument = _instrument(doc)
    messenger = _messenger(doc, mission, instrument)
    ids = _ids(doc.get("id"))
    event_time = _event_time(doc)
    classic_type = doc.get("notice_type") if path is not None and path[0] == "classic" else None
    issued = doc.get("alert_datetime")
    return Alert(
        mission=mission,
        instrument=instrument,
        messenger=messenger,
        notice_type=_notice_type(path, mission, instrument, topic),
        event_id=_event_id(doc, ids, event_time),
        revision=_revision(doc),
        kind=_kind(doc),
        is_test=_is_test(doc, messenger, ids),
        event_time=event_time,
        issued=None if issued is None else parse_time(issued, "alert_datetime"),
        provenance=provenance("gcn_json", _PARSER, raw, doc.get("$schema")),
        event_name=_first_name(doc.get("event_name"), "event_name"),
        upstream_ids=ids,
        region=_region(_main_localization(doc), _DEFAULT_CONTAINMENT if path is not None else None),
        skymap=_skymap(doc),
        skymap_url=doc.get("healpix_url") if isinstance(doc.get("healpix_url"), str) else None,
        far=_far(doc),
        significant=None if doc.get("significant") is None else as_bool(doc["significant"], "significant"),
        classification=_classification(doc),
        properties=_properties(doc, classic_type if isinstance(classic_type, str) else None),
        related=_related(doc) + links,
        sub_events=_sub_events(doc),
    )


def _main_localization(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The block holding the alert's position: the IceCube LVK search's ``most_probable_direction``, else the notice."""
    direction = doc.get("most_probable_direction")
    if doc.get("ra") is None and isinstance(direction, dict):
        return direction
    return doc
