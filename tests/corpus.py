# SPDX-License-Identifier: Apache-2.0
"""The real-notice corpus in ``tests/data/notices`` and its hand-checked expectations.

Expectations live beside the data, in ``tests/data/expected/<folder>.json``
(one file per top-level notice folder), mapping each notice's path relative to
``tests/data/notices`` to either

* ``{"rejected": CODE, "reason_contains": TEXT}`` for a file that must be
  refused with that :data:`broker.errors.RejectCode`, or
* the key fields of the alert it must become (see :func:`check_alert`).

``PROVENANCE.md`` files are documentation, and must be rejected as
``unknown_format`` like any other non-notice (no file is skipped).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.model import Alert, Circle, Ellipse, Point, Rectangle

DATA = Path(__file__).parent / "data"
NOTICES = DATA / "notices"
EXPECTED = DATA / "expected"

REQUIRED_KEYS = ("mission", "messenger", "event_id", "kind", "is_test", "event_time", "region", "skymap")


def notice_files() -> list[Path]:
    """Every file of the corpus, sorted."""
    return sorted(p for p in NOTICES.rglob("*") if p.is_file())


def load_expectations() -> dict[str, dict[str, Any]]:
    """All expectations, keyed by path relative to ``NOTICES``."""
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(EXPECTED.glob("*.json")):
        for k, v in json.loads(f.read_text()).items():
            assert k not in out, f"{k} expected twice"
            out[k] = v
    return out


def _close(a: float | None, b: float | None, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _region_dict(r: object) -> dict[str, Any] | None:
    if r is None:
        return None
    if isinstance(r, Circle):
        return {"type": "circle", "ra": r.ra, "dec": r.dec, "radius": r.radius, "containment": r.containment,
                "other_radii": [[x.containment, x.radius] for x in r.other_radii]}
    if isinstance(r, Ellipse):
        return {"type": "ellipse", "ra": r.ra, "dec": r.dec, "semi_major": r.semi_major,
                "semi_minor": r.semi_minor, "position_angle": r.position_angle, "containment": r.containment}
    if isinstance(r, Rectangle):
        return {"type": "rectangle", "ra": r.ra, "dec": r.dec, "corners": [list(c) for c in r.corners],
                "containment": r.containment}
    assert isinstance(r, Point)
    return {"type": "point", "ra": r.ra, "dec": r.dec}


def _cmp(path: str, got: Any, want: Any) -> Iterator[str]:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            yield f"{path}: expected a mapping, got {got!r}"
            return
        for k, v in want.items():
            yield from _cmp(f"{path}.{k}", got.get(k), v)
    elif isinstance(want, list):
        if not isinstance(got, list | tuple) or len(got) != len(want):
            yield f"{path}: expected {want!r}, got {got!r}"
            return
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            yield from _cmp(f"{path}[{i}]", g, w)
    elif isinstance(want, float) and not isinstance(want, bool):
        if not (isinstance(got, int | float) and _close(float(got), want)):
            yield f"{path}: expected {want!r}, got {got!r}"
    elif got != want:
        yield f"{path}: expected {want!r}, got {got!r}"


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def alert_view(alert: Alert) -> dict[str, Any]:
    """The alert as the plain structure expectations are written against."""
    sky = None
    if alert.skymap is not None:
        sky = {"npix": int(alert.skymap.uniq.size), "source": alert.skymap.source,
               "has_distance": alert.skymap.distmu is not None,
               "area90_deg2": round(alert.skymap.credible_area(0.9), 1)}
    return {
        "mission": alert.mission,
        "instrument": alert.instrument,
        "messenger": alert.messenger,
        "notice_type": alert.notice_type,
        "event_id": alert.event_id,
        "event_name": alert.event_name,
        "upstream_ids": list(alert.upstream_ids),
        "revision": alert.revision,
        "kind": alert.kind,
        "is_test": alert.is_test,
        "event_time": _iso(alert.event_time),
        "issued": _iso(alert.issued),
        "region": _region_dict(alert.region),
        "skymap": sky,
        "skymap_url": alert.skymap_url,
        "far": alert.far,
        "significant": alert.significant,
        "classification": dict(alert.classification),
        "properties": dict(alert.properties),
        "related": [
            {"relation": r.relation, "observatory": r.observatory, "event_id": r.event_id, "ivorn": r.ivorn,
             "search": r.search, "time_difference": r.time_difference, "far_temporal": r.far_temporal,
             "far_spatiotemporal": r.far_spatiotemporal, "has_skymap": r.skymap is not None}
            for r in alert.related
        ],
        "sub_events": [
            {"event_id": s.event_id, "time": _iso(s.time), "time_offset": s.time_offset,
             "region": _region_dict(s.region), "properties": dict(s.properties)}
            for s in alert.sub_events
        ],
        "source_format": alert.provenance.source_format,
    }


def check_alert(alert: Alert, expected: dict[str, Any]) -> list[str]:
    """Differences between ``alert`` and its expectation (empty list: it matches).

    Every key of the expectation is compared (floats to 1e-9 relative; nested
    mappings as subsets, lists element by element); the keys in
    :data:`REQUIRED_KEYS` must be present in every expectation.
    """
    missing = [k for k in REQUIRED_KEYS if k not in expected]
    problems = [f"expectation lacks required key {k!r}" for k in missing]
    view = alert_view(alert)
    for k, v in expected.items():
        if k.startswith("_"):
            continue  # comments
        if k == "skymap" and isinstance(v, dict) and "area90_deg2" in v:
            got = view["skymap"]
            if got is None or not math.isclose(got["area90_deg2"], v["area90_deg2"], rel_tol=2e-2):
                problems.append(f"skymap.area90_deg2: expected {v['area90_deg2']}, got {got}")
            v = {kk: vv for kk, vv in v.items() if kk != "area90_deg2"}
        problems.extend(_cmp(k, view.get(k), v))
    return problems


def parsed_alerts() -> list[Alert]:
    """Every notice of the corpus that becomes an alert, in path order."""
    from broker.errors import RejectedNotice
    from broker.formats import parse

    out = []
    for path in notice_files():
        try:
            out.append(parse(path.read_bytes()))
        except RejectedNotice:
            continue
    return out
