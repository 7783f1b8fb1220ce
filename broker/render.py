# SPDX-License-Identifier: Apache-2.0
"""Plain JSON views of alerts for people (``mmbroker parse``, ``subscribe --json``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.avro import to_record
from broker.model import Alert


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict):
        # fastavro's (record name, record) form of a union branch -> {"type": ..., fields}
        return {"type": value[0].rsplit(".", 1)[-1].lower(), **_jsonable(value[1])}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def alert_json(alert: Alert) -> dict[str, Any]:
    """The Avro record of ``alert`` as JSON-ready data; sky maps summarized."""
    rec = to_record(alert)
    if alert.skymap is not None:
        rec["skymap"] = {
            "npix": int(alert.skymap.uniq.size),
            "source": alert.skymap.source,
            "area50_deg2": round(alert.skymap.credible_area(0.5), 2),
            "area90_deg2": round(alert.skymap.credible_area(0.9), 2),
            "distmean_mpc": alert.skymap.distmean,
            "diststd_mpc": alert.skymap.diststd,
        }
    for r, rel in zip(rec["related"], alert.related, strict=True):
        if rel.skymap is not None:
            r["skymap"] = {"npix": int(rel.skymap.uniq.size), "area90_deg2": round(rel.skymap.credible_area(0.9), 2)}
    out: dict[str, Any] = _jsonable(rec)
    return out


def alert_line(alert: Alert) -> str:
    """One human line: time, mission/instrument, event, kind, position, tags."""
    t = alert.event_time.strftime("%Y-%m-%d %H:%M:%S") if alert.event_time else "-" * 19
    pos = alert.position
    where = f"RA {pos[0]:8.3f} Dec {pos[1]:+8.3f}" if pos else "no position"
    inst = f"/{alert.instrument}" if alert.instrument else ""
    rev = "" if alert.revision is None else f" rev {alert.revision}"
    tags = ",".join(alert.tags)
    state = "" if alert.revision_state in (None, "first") else f" ({alert.revision_state})"
    line = (
        f"{t}Z {alert.messenger:8} {alert.mission}{inst} {alert.event_id}{rev} [{alert.kind}]{state} "
        f"{where} tags={tags}"
    )
    context = "; ".join(p for p in (annotation_summary(alert), coincidence_summary(alert)) if p)
    return f"{line} | {context}" if context else line


def coincidence_summary(alert: Alert) -> str:
    """A short human summary of the coincidences an alert carries (found or withdrawn)."""
    parts = []
    for c in alert.coincidences:
        other = c.b_event_key if c.a_broker_id == alert.broker_id else c.a_event_key
        far = "" if c.far_temporal is None else f", FAR {c.far_temporal:.2g} Hz"
        verb = "WITHDRAWN " if c.status == "withdrawn" else ""
        parts.append(f"{verb}coincidence {c.rule} with {other}: dt {c.time_difference:+.2f} s{far}")
    return "; ".join(parts)


def annotation_summary(alert: Alert) -> str:
    """A short human summary of the annotations: matches per catalog, 90 % area, missing ones."""
    parts: list[str] = []
    for ann in alert.annotations:
        if ann.status != "ok":
            if ann.status == "missing":
                parts.append(f"{ann.annotator}: missing ({ann.reason})")
            continue
        area = ann.properties.get("area_90_deg2")
        if isinstance(area, float):
            parts.append(f"90% area {area:.0f} deg2")
        counts: dict[str, int] = {}
        for m in ann.matches:
            counts[m.catalog] = counts.get(m.catalog, 0) + 1
        if counts:
            label = "galaxies" if ann.annotator == "skymap" else ann.annotator
            parts.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "; ".join(parts)
