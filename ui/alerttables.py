# SPDX-License-Identifier: Apache-2.0
"""Rows of alerts for the feed and the search results, as HTML tables with links to the alert page.

Plain HTML tables (rather than Streamlit's canvas data grid) keep every cell
readable by the browser: selectable, searchable with Ctrl-F, and visible to
the browser tests.  Every value is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from broker.archive.index import error_radius
from broker.model import Alert

RETRACTION_STATES = frozenset({"retraction", "unknown_retraction"})


@dataclass(frozen=True)
class AlertRow:
    """What one table row shows of an alert (times UTC, angles deg, FAR Hz)."""

    broker_id: str
    event_key: str
    event: str
    mission: str
    instrument: str | None
    messenger: str
    notice_type: str
    kind: str
    revision: int | None
    revision_state: str | None
    is_test: bool
    event_time: datetime | None
    published: datetime | None
    ra: float | None
    dec: float | None
    error_radius: float | None
    far: float | None
    tags: tuple[str, ...]
    n_matches: int
    n_coincidences: int
    separation: float | None = None

    @property
    def retraction(self) -> bool:
        """Whether this revision retracts its event."""
        return self.kind == "retraction" or (self.revision_state or "") in RETRACTION_STATES


def row_from_alert(alert: Alert, published: datetime | None = None) -> AlertRow:
    """The row of a full alert (from Kafka or ``archive.get``)."""
    pos = alert.position if alert.region is not None or alert.skymap is not None else None
    return AlertRow(
        broker_id=alert.broker_id, event_key=alert.event_key, event=alert.event_name or alert.event_id,
        mission=alert.mission, instrument=alert.instrument, messenger=alert.messenger,
        notice_type=alert.notice_type, kind=alert.kind, revision=alert.revision,
        revision_state=alert.revision_state, is_test=alert.is_test, event_time=alert.event_time,
        published=published, ra=None if pos is None else pos[0], dec=None if pos is None else pos[1],
        error_radius=error_radius(alert), far=alert.far, tags=tuple(alert.tags),
        n_matches=sum(len(a.matches) for a in alert.annotations), n_coincidences=len(alert.coincidences),
    )


def row_from_summary(s: Any) -> AlertRow:
    """The row of an :class:`broker.archive.query.AlertSummary` (search results, archive listings)."""
    return AlertRow(
        broker_id=s.broker_id, event_key=s.event_key, event=s.event_name or s.event_id, mission=s.mission,
        instrument=s.instrument, messenger=s.messenger, notice_type=s.notice_type, kind=s.kind,
        revision=s.revision, revision_state=s.revision_state, is_test=s.is_test, event_time=s.event_time,
        published=getattr(s, "ingested", None), ra=s.ra, dec=s.dec, error_radius=s.error_radius, far=s.far,
        tags=tuple(s.tags), n_matches=int(s.n_matches), n_coincidences=int(s.n_coincidences),
        separation=getattr(s, "separation", None),
    )


def utc(t: datetime | None, seconds: bool = True) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC (empty for None)."""
    if t is None:
        return ""
    t = t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def alert_href(broker_id: str) -> str:
    """Relative link to the alert page of ``broker_id``."""
    return "alert?" + urlencode({"broker_id": broker_id})


def _cell(row: AlertRow, col: str) -> str:
    e = html.escape
    if col == "time":
        return e(utc(row.event_time))
    if col == "published":
        return e(utc(row.published))
    if col == "event":
        return f'<a href="{e(alert_href(row.broker_id))}" title="{e(row.broker_id)}">{e(row.event)}</a>'
    if col == "instrument":
        return e(row.mission + (f" / {row.instrument}" if row.instrument else ""))
    if col == "kind":
        rev = "" if row.revision is None else f' <span class="mmb-rev">#{row.revision}</span>'
        return e(row.kind.replace("_", " ")) + rev
    if col == "revision":
        return "" if row.revision is None else str(row.revision)
    if col == "state":
        state = e((row.revision_state or "").replace("_", " "))
        badge = '<span class="mmb-retracted">RETRACTED</span>' if row.retraction else ""
        return f"{state} {badge}".strip()
    if col == "retraction":
        return '<span class="mmb-retracted">RETRACTED</span>' if row.retraction else ""
    if col == "tags":
        return " ".join(f'<span class="mmb-tag">{e(t)}</span>' for t in row.tags)
    if col == "position":
        if row.ra is None or row.dec is None:
            return ""
        err = "" if row.error_radius is None else f'<br><span class="mmb-err">± {e(f"{row.error_radius:.3g}")}°</span>'
        return e(f"{row.ra:.3f}, {row.dec:+.3f}") + err
    if col == "error":
        return "" if row.error_radius is None else e(f"{row.error_radius:.3g}")
    if col == "far":
        return "" if row.far is None else e(f"{row.far:.3g}")
    if col == "separation":
        return "" if row.separation is None else e(f"{row.separation:.3f}")
    if col == "matches":
        return str(row.n_matches)
    if col == "broker_id":
        return f"<code>{e(row.broker_id)}</code>"
    return e(str(getattr(row, col, "")))


HEADERS: dict[str, str] = {
    "time": "Event time (UTC)",
    "published": "Published (UTC)",
    "event": "Event",
    "messenger": "Messenger",
    "instrument": "Mission / instrument",
    "kind": "Kind #rev.",
    "revision": "Rev.",
    "state": "Revision state / retraction",
    "retraction": "Retraction",
    "tags": "Tags",
    "position": "RA, Dec, error (deg)",
    "error": "Error (deg)",
    "far": "FAR (Hz)",
    "separation": "Sep. (deg)",
    "matches": "Matches",
    "broker_id": "Broker id",
}

FEED_COLUMNS: tuple[str, ...] = (
    "time", "event", "messenger", "instrument", "kind", "state", "tags", "position",
)

STYLE = """
<style>
table.mmb-table {border-collapse: collapse; font-size: 0.78rem; width: 100%;}
table.mmb-table td.mmb-time, table.mmb-table td.mmb-position, table.mmb-table td.mmb-broker_id {white-space: nowrap;}
table.mmb-table th {text-align: left; border-bottom: 2px solid #ccc; padding: 4px 6px; white-space: nowrap;}
table.mmb-table td {border-bottom: 1px solid #eee; padding: 3px 6px; vertical-align: top;}
table.mmb-table tr.mmb-retraction td {background: #fff1f0;}
span.mmb-tag {display: inline-block; background: #eef2ff; color: #3730a3; border-radius: 4px;
              padding: 0 4px; margin: 1px 2px 1px 0; font-size: 0.78rem;}
span.mmb-retracted {color: #b91c1c; font-weight: 600;}
span.mmb-rev, span.mmb-err {color: #6b7280; font-size: 0.75rem;}
div.mmb-scroll {overflow-x: auto; width: 100%;}
</style>
"""


def rows_html(rows: Iterable[AlertRow], columns: Sequence[str] = FEED_COLUMNS, table_id: str = "") -> str:
    """An HTML table of ``rows`` (escaped), one ``<tr data-broker-id=...>`` per alert."""
    head = "".join(f"<th>{html.escape(HEADERS.get(c, c))}</th>" for c in columns)
    body: list[str] = []
    for r in rows:
        cls = ' class="mmb-retraction"' if r.retraction else ""
        cells = "".join(f'<td class="mmb-{c}">{_cell(r, c)}</td>' for c in columns)
        body.append(f'<tr{cls} data-broker-id="{html.escape(r.broker_id)}">{cells}</tr>')
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    rows_text = "".join(body)
    rows_text = "".join(body)
    table = f'<table class="mmb-table"{ident}><thead><tr>{head}</tr></thead><tbody>{rows_text}</tbody></table>'
    return f'{STYLE}<div class="mmb-scroll">{table}</div>'


def kv_html(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column HTML table of (name, value) pairs (escaped)."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in pairs)
    return f'{STYLE}<table class="mmb-table">{body}</table>'
