# SPDX-License-Identifier: Apache-2.0
"""The archive's query language, shared by every backend, the CLI and the dashboard.

A :class:`Query` is validated when it is made, so a backend only ever sees a
well-formed one; :meth:`Query.from_params` builds one from the strings a
command line or a web form gives, and every mistake raises :class:`QueryError`
with a message naming the parameter and what is allowed.

Results come in :class:`Page` objects of :class:`AlertSummary` rows, sorted by
time (the event time, or the issue time for notices without one, such as most
retractions) and then by broker id.  The cursor of the next page is the
*keyset* ``(time, broker_id)`` of the last row: opaque to callers, stable under
inserts (a new alert never shifts a page), and the same for every backend.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import operator
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from broker.errors import BrokerError
from broker.model import MESSENGERS

SortOrder = Literal["time_desc", "time_asc"]
SORT_ORDERS: tuple[SortOrder, ...] = get_args(SortOrder)

MAX_LIMIT = 1000
"""Largest page size."""

TOTAL_LIMIT = 10_000
"""Totals are counted up to this many matches; above it :attr:`Page.total` is None."""

BUILTIN_TAGS: frozenset[str] = frozenset((*MESSENGERS, "test", "retraction"))
"""Tags the broker itself gives (see :func:`broker.pipeline.builtin_tags`): always known."""

CORE_PROPERTIES: dict[str, str] = {
    "far": "false-alarm rate, Hz",
    "error_radius": "radius of the error circle (semi-major axis of an ellipse), deg",
    "revision": "upstream revision number",
}
"""Numeric properties every alert may have besides the keys of ``Alert.properties``."""

_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_PROPERTY_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off", ""))


class QueryError(BrokerError):
    """A malformed search: the message says which parameter and what is allowed."""


@dataclass(frozen=True)
class PropertyRange:
    """A numeric property within [low, high] (either end open when None).

    Parameters
    ----------
    name
        ``far`` (Hz), ``error_radius`` (deg), ``revision``, a numeric key of
        ``Alert.properties`` (e.g. ``signalness``, ``energy_tev``) or
        ``classification.<class>`` (a probability, e.g. ``classification.BNS``).
        With both ends None the alert only needs to have the property.
    low, high
        Inclusive bounds, in the property's unit.
    """

    name: str
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if not _PROPERTY_NAME.match(self.name):
            raise QueryError(
                f"property name {self.name!r} is not allowed: use letters, digits, '_', '.', '-' (e.g. far, signalness)"
            )
        for end in ("low", "high"):
            v = getattr(self, end)
            if v is not None and not math.isfinite(v):
                raise QueryError(f"property {self.name}: {end} bound {v!r} is not a finite number")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise QueryError(f"property {self.name}: low bound {self.low:g} is above high bound {self.high:g}")

    @classmethod
    def parse(cls, text: str) -> PropertyRange:
        """Parse ``name:low:high`` (either bound may be empty: ``far::1e-7``, ``signalness:0.5:``).

        Raises
        ------
        QueryError
            On any other syntax or a bound that is not a number.
        """
        parts = text.split(":")
        if len(parts) != 3 or not parts[0].strip():
            raise QueryError(
                f"prop {text!r} must be name:low:high with either bound empty (e.g. far::1e-7, signalness:0.5:)"
            )
        name, low, high = (p.strip() for p in parts)
        return cls(name, _opt_float(f"prop {name} low bound", low), _opt_float(f"prop {name} high bound", high))

    def __str__(self) -> str:
        low = "" if self.low is None else f"{self.low:g}"
        high = "" if self.high is None else f"{self.high:g}"
        return f"{self.name}:{low}:{high}"


def _opt_float(what: str, text: str) -> float | None:
    if text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        raise QueryError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise QueryError(f"{what} {text!r} is not a finite number")
    return v


def _float(what: str, text: str | None) -> float:
    v = _opt_float(what, text or "")
    if v is None:
        raise QueryError(f"{what} is missing")
    return v


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_time(what: str, text: str) -> datetime:
    """An ISO 8601 time (UTC unless an offset is given) or an MJD (UTC) as an aware UTC datetime.

    Raises
    ------
    QueryError
        If ``text`` is neither.
    """
    s = text.strip()
    try:
        mjd = float(s)
    except ValueError:
        try:
            return _utc(datetime.fromisoformat(s))
        except ValueError:
            raise QueryError(
                f"{what} {text!r} is not a time: give ISO 8601 UTC (2019-04-25T08:18:05) or an MJD (58598.346)"
            ) from None
    if not (math.isfinite(mjd) and 0.0 <= mjd <= 2_973_483.0):  # MJD of 9999-12-31
        raise QueryError(f"{what} MJD {text!r} is outside the calendar")
    return _MJD_EPOCH + timedelta(days=mjd)


def _values(params: dict[str, str | Sequence[str] | None], key: str) -> tuple[str, ...]:
    v = params.get(key)
    if v is None:
        return ()
    items = (v,) if isinstance(v, str) else tuple(v)
    return tuple(s.strip() for s in items if s is not None and s.strip())


def _one(params: dict[str, str | Sequence[str] | None], key: str) -> str | None:
    vals = _values(params, key)
    if len(vals) > 1:
        raise QueryError(f"{key} is given {len(vals)} times; give it once")
    return vals[0] if vals else None


@dataclass(frozen=True)
class Query:
    """One archive search.  Every field is optional; all given criteria must hold.

    Parameters
    ----------
    cone
        (ra, dec, radius), deg: RA in [0, 360), Dec in [-90, 90], radius in
        (0, 180].  Alerts whose best position is within the radius.
    time_min, time_max
        Inclusive bounds on the alert time (event time, else issue time), UTC.
    tags
        Tags that must all be present.
    messengers
        Any of these messengers.
    missions
        Any of these missions or instruments (case-insensitive).
    properties
        Numeric property ranges, all required (see :class:`PropertyRange`).
    text
        Case-insensitive substring of the event id, event name, broker id,
        mission or upstream ids.
    latest_only
        Only the latest version of each event (see ``Archive.latest``).
    sort
        ``time_desc`` (newest first, the default) or ``time_asc``.
    limit
        Page size, 1 to :data:`MAX_LIMIT`.
    cursor
        :attr:`Page.next_cursor` of the previous page of the same query.

    Raises
    ------
    QueryError
        If any field is out of range.
    """

    cone: tuple[float, float, float] | None = None
    time_min: datetime | None = None
    time_max: datetime | None = None
    tags: tuple[str, ...] = ()
    messengers: tuple[str, ...] = ()
    missions: tuple[str, ...] = ()
    properties: tuple[PropertyRange, ...] = ()
    text: str | None = None
    latest_only: bool = False
    sort: SortOrder = "time_desc"
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        for name in ("tags", "messengers", "missions", "properties"):
            value = getattr(self, name)
            # a single string given where a tuple is expected is one value, not its characters
            object.__setattr__(self, name, (value,) if isinstance(value, str | PropertyRange) else tuple(value))
        try:
            if isinstance(self.limit, bool):
                raise TypeError
            object.__setattr__(self, "limit", operator.index(self.limit))
        except TypeError:
            raise QueryError(f"limit {self.limit!r} must be an integer from 1 to {MAX_LIMIT}") from None
        if self.cone is not None:
            if len(self.cone) != 3:
                raise QueryError("cone must be (ra, dec, radius) in deg")
            ra, dec, radius = (float(x) for x in self.cone)
            if not (math.isfinite(ra) and 0.0 <= ra < 360.0):
                raise QueryError(f"ra {ra:g} deg is outside [0, 360)")
            if not (math.isfinite(dec) and -90.0 <= dec <= 90.0):
                raise QueryError(f"dec {dec:g} deg is outside [-90, 90]")
            if not (math.isfinite(radius) and radius > 0.0):
                raise QueryError(f"radius {radius:g} deg must be > 0")
            if radius > 180.0:
                raise QueryError(f"radius {radius:g} deg must be <= 180")
            object.__setattr__(self, "cone", (ra, dec, radius))
        for name in ("time_min", "time_max"):
            t = getattr(self, name)
            if t is not None:
                object.__setattr__(self, name, _utc(t))
        if self.time_min is not None and self.time_max is not None and self.time_min > self.time_max:
            raise QueryError(
                f"inverted time range: since {self.time_min.isoformat()} is after until {self.time_max.isoformat()}"
            )
        bad = sorted(set(self.messengers) - set(MESSENGERS))
        if bad:
            raise QueryError(f"unknown messenger {bad[0]!r}: choose from {', '.join(MESSENGERS)}")
        for tag in self.tags:
            if not tag or not tag.strip():
                raise QueryError("empty tag")
        if self.text is not None and not self.text.strip():
            object.__setattr__(self, "text", None)
        if self.sort not in SORT_ORDERS:
            raise QueryError(f"sort {self.sort!r} is not one of {', '.join(SORT_ORDERS)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit {self.limit!r} must be an integer from 1 to {MAX_LIMIT}")
        if self.cursor is not None:
            decode_cursor(self.cursor, self.sort)  # raises QueryError if it is not one of ours

    @classmethod
    def from_params(cls, **params: str | Sequence[str] | None) -> Query:
        """Build a query from strings (command line, dashboard, URL).

        Parameters
        ----------
        **params
            ``ra``, ``dec``, ``radius`` (deg, all three or none); ``since``,
            ``until`` (ISO 8601 UTC or MJD); ``tag``, ``messenger``,
            ``mission``, ``prop`` (each a string or a sequence of strings;
            ``prop`` as ``name:low:high``, either bound may be empty);
            ``text``; ``latest`` (true/false); ``sort`` (time_desc, time_asc);
            ``limit``; ``cursor``.  None and empty strings mean "not given".

        Raises
        ------
        QueryError
            RA outside 0-360, \\|Dec\\| > 90, radius <= 0, cone incomplete,
            inverted time range, a value that is not a number or a time,
            unknown messenger, bad property syntax, an unknown parameter.
        """
        known = {"ra", "dec", "radius", "since", "until", "tag", "messenger", "mission", "prop", "text", "latest",
                 "sort", "limit", "cursor"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise QueryError(f"unknown search parameter {unknown[0]!r}: use {', '.join(sorted(known))}")
        cone_parts = {k: _one(params, k) for k in ("ra", "dec", "radius")}
        given = [k for k, v in cone_parts.items() if v is not None]
        cone = None
        if given:
            missing = [k for k, v in cone_parts.items() if v is None]
            if missing:
                raise QueryError(f"a cone needs ra, dec and radius (deg): {', '.join(missing)} missing")
            cone = (_float("ra", cone_parts["ra"]), _float("dec", cone_parts["dec"]),
                    _float("radius", cone_parts["radius"]))
        since, until = _one(params, "since"), _one(params, "until")
        latest = (_one(params, "latest") or "").lower()
        if latest not in _TRUE | _FALSE:
            raise QueryError(f"latest {latest!r} must be true or false")
        limit_text = _one(params, "limit")
        limit = 50
        if limit_text is not None:
            try:
                limit = int(limit_text)
            except ValueError:
                raise QueryError(f"limit {limit_text!r} must be an integer from 1 to {MAX_LIMIT}") from None
        sort_text = _one(params, "sort") or "time_desc"
        if sort_text not in SORT_ORDERS:
            raise QueryError(f"sort {sort_text!r} is not one of {', '.join(SORT_ORDERS)}")
        sort: SortOrder = "time_asc" if sort_text == "time_asc" else "time_desc"
        return cls(
            cone=cone,
            time_min=None if since is None else parse_time("since", since),
            time_max=None if until is None else parse_time("until", until),
            tags=tuple(dict.fromkeys(_values(params, "tag"))),
            messengers=tuple(dict.fromkeys(m.lower() for m in _values(params, "messenger"))),
            missions=tuple(dict.fromkeys(_values(params, "mission"))),
            properties=tuple(PropertyRange.parse(p) for p in _values(params, "prop")),
            text=_one(params, "text"),
            latest_only=latest in _TRUE,
            sort=sort,
            limit=limit,
            cursor=_one(params, "cursor"),
        )

    def validate_tags(self, known: Collection[str]) -> None:
        """Raise :class:`QueryError` naming the first tag not in ``known`` (or the built-in tags)."""
        allowed = set(known) | BUILTIN_TAGS
        for tag in self.tags:
            if tag not in allowed:
                listed = ", ".join(sorted(allowed))
                raise QueryError(f"unknown tag {tag!r}: known tags are {listed}")

    @property
    def time_range_us(self) -> tuple[int | None, int | None]:
        """The time bounds as integer microseconds since 1970 (UTC)."""
        return to_us(self.time_min), to_us(self.time_max)

    def after(self) -> tuple[int, str] | None:
        """The keyset ``(time_us, broker_id)`` the page starts after, from the cursor."""
        return None if self.cursor is None else decode_cursor(self.cursor, self.sort)


def to_us(t: datetime | None) -> int | None:
    """Microseconds since 1970-01-01 UTC (exact integer arithmetic), or None."""
    if t is None:
        return None
    d = _utc(t) - datetime(1970, 1, 1, tzinfo=UTC)
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us: int | None) -> datetime | None:
    """Inverse of :func:`to_us`."""
    return None if us is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


def encode_cursor(sort: SortOrder, time_us: int, broker_id: str) -> str:
    """The opaque cursor of the page after the row ``(time_us, broker_id)``."""
    payload = json.dumps({"v": 1, "s": sort, "t": int(time_us), "id": broker_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: SortOrder) -> tuple[int, str]:
    """The keyset of ``cursor``.

    Raises
    ------
    QueryError
        If it is not a cursor of ours, or belongs to the other sort order.
    """
    bad = QueryError("cursor is not valid: pass next_cursor of the previous page unchanged")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        obj = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not (isinstance(obj, dict) and obj.get("v") == 1 and isinstance(obj.get("t"), int)
            and isinstance(obj.get("id"), str) and obj.get("s") in SORT_ORDERS):
        raise bad
    if obj["s"] != sort:
        raise QueryError(f"cursor belongs to sort {obj['s']}, not {sort}: start again without a cursor")
    return int(obj["t"]), str(obj["id"])


@dataclass(frozen=True)
class AlertSummary:
    """One row of a search result or of the live feed.

    Times are UTC; ``ra``, ``dec``, ``error_radius`` and ``separation`` in deg
    (``error_radius`` is the circle radius or the ellipse semi-major axis);
    ``far`` in Hz.  ``n_matches`` counts catalog matches of all annotators;
    ``n_coincidences`` the *active* coincidences of the event in the archive.
    ``separation`` is the distance from the query's cone centre.
    """

    broker_id: str
    event_key: str
    event_id: str
    event_name: str | None
    mission: str
    instrument: str | None
    messenger: str
    notice_type: str
    kind: str
    revision: int | None
    revision_state: str | None
    is_test: bool
    event_time: datetime | None
    issued: datetime | None
    ingested: datetime
    ra: float | None
    dec: float | None
    error_radius: float | None
    far: float | None
    tags: tuple[str, ...]
    n_matches: int
    n_coincidences: int
    separation: float | None = None

    @property
    def time(self) -> datetime:
        """The time results are sorted by: event time, else issue time, else ingestion time."""
        return self.event_time or self.issued or self.ingested


@dataclass(frozen=True)
class Page:
    """One page of results.

    ``total`` is the number of alerts matching the query (on every page), or
    None when counting would be costly: more than :data:`TOTAL_LIMIT`
    matches (for an Elasticsearch cone search, more than that many
    candidates), unless the first page already holds them all.
    """

    items: tuple[AlertSummary, ...]
    next_cursor: str | None
    total: int | None
