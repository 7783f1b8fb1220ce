# SPDX-License-Identifier: Apache-2.0
"""Export search results as JSON, CSV or VOTable.

Every format has the same columns (:data:`COLUMNS`), in the same order, with
the same units: times in UTC (ISO 8601; the VOTable also gives the event time
as MJD), angles in deg, false-alarm rates in Hz.  Tags are a JSON list in
JSON and ``;``-separated in CSV and VOTable.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from broker.archive.query import AlertSummary, QueryError

ExportFormat = Literal["json", "csv", "votable"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)

COLUMNS: tuple[tuple[str, str | None, str], ...] = (
    ("broker_id", None, "Broker id of this alert version"),
    ("event_key", None, "Upstream event: mission/event_id"),
    ("event_id", None, "Upstream event id"),
    ("event_name", None, "Event name (e.g. GRB 170817A)"),
    ("mission", None, "Mission"),
    ("instrument", None, "Instrument"),
    ("messenger", None, "Messenger"),
    ("notice_type", None, "Upstream notice type"),
    ("kind", None, "Notice kind (preliminary, initial, update, retraction, ...)"),
    ("revision", None, "Upstream revision number"),
    ("revision_state", None, "Place among the versions of the event (first, update, stale, ...)"),
    ("is_test", None, "Test, drill or mock alert"),
    ("event_time", None, "Event time, UTC (ISO 8601)"),
    ("issued", None, "Time the notice was issued, UTC (ISO 8601)"),
    ("ingested", None, "Time the broker archived it, UTC (ISO 8601)"),
    ("ra", "deg", "Right ascension of the best position (ICRS)"),
    ("dec", "deg", "Declination of the best position (ICRS)"),
    ("error_radius", "deg", "Error circle radius (ellipse semi-major axis)"),
    ("far", "Hz", "False-alarm rate"),
    ("tags", None, "Tags"),
    ("n_matches", None, "Number of catalog matches"),
    ("n_coincidences", None, "Number of active coincidences of the event"),
    ("separation", "deg", "Distance from the search cone centre"),
)
"""(name, unit, description) of every exported column."""

_UCD = {
    "ra": "pos.eq.ra;meta.main", "dec": "pos.eq.dec;meta.main", "error_radius": "stat.error;pos.eq",
    "far": "stat.falsePositive;arith.rate", "event_time": "time.epoch", "event_mjd": "time.epoch",
    "broker_id": "meta.id;meta.main", "separation": "pos.angDistance",
}


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def rows(items: Sequence[AlertSummary]) -> list[dict[str, Any]]:
    """The exported columns of each item, as plain JSON-ready values."""
    out = []
    for s in items:
        out.append({
            "broker_id": s.broker_id, "event_key": s.event_key, "event_id": s.event_id, "event_name": s.event_name,
            "mission": s.mission, "instrument": s.instrument, "messenger": s.messenger, "notice_type": s.notice_type,
            "kind": s.kind, "revision": s.revision, "revision_state": s.revision_state, "is_test": s.is_test,
            "event_time": _iso(s.event_time), "issued": _iso(s.issued), "ingested": _iso(s.ingested),
            "ra": s.ra, "dec": s.dec, "error_radius": s.error_radius, "far": s.far, "tags": list(s.tags),
            "n_matches": s.n_matches, "n_coincidences": s.n_coincidences, "separation": s.separation,
        })
    return out


def export(items: Sequence[AlertSummary], fmt: ExportFormat) -> bytes:
    """Serialize search results.

    Parameters
    ----------
    items
        Result rows (e.g. ``page.items``).
    fmt
        ``json`` (a list of objects), ``csv`` (header row, empty cells for
        missing values) or ``votable`` (VOTable 1.4 with units and UCDs).

    Raises
    ------
    QueryError
        For an unknown format.
    """
    if fmt == "json":
        return json.dumps(rows(items), indent=1).encode()
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([c[0] for c in COLUMNS])
        for r in rows(items):
            w.writerow(["" if r[c] is None else ";".join(r[c]) if c == "tags" else r[c] for c, _, _ in COLUMNS])
        return buf.getvalue().encode()
    if fmt == "votable":
        return _votable(items)
    raise QueryError(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")


def _votable(items: Sequence[AlertSummary]) -> bytes:
    import numpy as np
    from astropy.io.votable import from_table
    from astropy.table import MaskedColumn, Table
    from astropy.time import Time

    data = rows(items)
    table = Table(meta={"description": "mmbroker archive search result"})
    for name, unit, desc in COLUMNS:
        values = [r[name] for r in data]
        if name == "tags":
            values = [";".join(v) for v in values]
        mask = [v is None for v in values]
        if name in ("ra", "dec", "error_radius", "far", "separation"):
            arr: Any = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif name in ("revision", "n_matches", "n_coincidences"):
            arr = np.array([0 if v is None else v for v in values], dtype=np.int64)
        elif name == "is_test":
            arr = np.array(values, dtype=bool)
        else:
            arr = np.array(["" if v is None else str(v) for v in values], dtype=str)
        table[name] = MaskedColumn(arr, mask=mask, unit=unit, description=desc)
        if name == "event_time":
            mjd = [np.nan if s.event_time is None else Time(s.event_time, scale="utc").mjd for s in items]
            table["event_mjd"] = MaskedColumn(np.array(mjd, dtype=np.float64), mask=mask, unit="d",
                                              description="Event time, MJD (UTC)")
    vot = from_table(table)
    for f in vot.get_first_table().fields:
        if f.name in _UCD:
            f.ucd = _UCD[f.name]
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()
