# SPDX-License-Identifier: Apache-2.0
"""The contract of the shared hot state: value types, protocols and helpers used by every backend.

Times are unix seconds (UTC, float64), angles degrees, false-alarm rates Hz.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from broker.errors import StateError
from broker.model import Alert, Coincidence

StateBackend = Literal["memory", "redis"]
STATE_BACKENDS: tuple[StateBackend, ...] = ("memory", "redis")

#: Slack added to ``radius + extent`` in cone queries (deg, 3.6 micro-arcsec): the test is "may overlap",
#: so a rounding error of the separation formula must never drop an entry lying exactly on the boundary.
CONE_TOLERANCE_DEG = 1e-9

#: Default lifetime of event states, de-duplication keys, claims and coincidences (s): 30 days.
DEFAULT_TTL_S = 30 * 86400.0

OrderKey: TypeAlias = tuple[bool, int, bool, float]


@dataclass(frozen=True)
class WindowEntry:
    """One event in the recent-alert window (its latest revision seen).

    Parameters
    ----------
    broker_id
        Broker id of the revision (idempotency key).
    event_key
        ``mission/event_id``; the window holds one entry per event.
    revision
        Upstream revision number (None: unknown, ranks lowest).
    issued
        Issue time of the notice, unix s UTC (None: unknown, ranks lowest).
    classes
        Coincidence classes of the alert, e.g. ``("gw-cbc",)`` or ``("grb", "grb-fermi")``.
    messenger
        Messenger of the alert (``gw``, ``gamma``, ...).
    time
        Event time, unix s UTC.
    far
        False-alarm rate, Hz.
    ra, dec
        Best position, deg (None: no position).
    extent
        Radius around (ra, dec) containing the localization, deg (None: whole sky or unknown).
    payload
        Opaque bytes (a serialized localization footprint, up to ~1 MB for sky maps).
    """

    broker_id: str
    event_key: str
    revision: int | None
    issued: float | None
    classes: tuple[str, ...]
    messenger: str
    time: float
    far: float | None
    ra: float | None
    dec: float | None
    extent: float | None
    payload: bytes

    @classmethod
    def from_alert(
        cls, alert: Alert, classes: Sequence[str], extent: float | None, payload: bytes = b""
    ) -> WindowEntry:
        """The window entry of ``alert`` (its id, event key, revision, times, FAR and best position).

        Parameters
        ----------
        alert
            The alert; it must have an event time.
        classes
            Its coincidence classes.
        extent
            Radius around its best position containing its localization, deg (None: whole sky / unknown).
        payload
            Serialized localization footprint.

        Raises
        ------
        StateError
            The alert has no event time (it cannot be placed in a time window).
        """
        if alert.event_time is None:
            raise StateError(f"alert {alert.broker_id} ({alert.event_key}) has no event time: not windowable")
        pos = alert.position
        return cls(
            broker_id=alert.broker_id,
            event_key=alert.event_key,
            revision=alert.revision,
            issued=None if alert.issued is None else alert.issued.timestamp(),
            classes=tuple(classes),
            messenger=alert.messenger,
            time=alert.event_time.timestamp(),
            far=alert.far,
            ra=None if pos is None else pos[0],
            dec=None if pos is None else pos[1],
            extent=extent,
            payload=payload,
        )


@dataclass(frozen=True)
class Version:
    """One recorded revision of an event.

    Parameters
    ----------
    broker_id
        Broker id of the revision.
    revision
        Upstream revision number, if any.
    issued
        Issue time of the notice, unix s UTC, if known.
    retraction
        Whether this revision retracts the event.
    """

    broker_id: str
    revision: int | None
    issued: float | None
    retraction: bool


@dataclass(frozen=True)
class EventState:
    """What the broker has recorded about one upstream event.

    Parameters
    ----------
    event_key
        ``mission/event_id``.
    versions
        Revisions in the order they were first recorded; each broker id once.
    tags
        Every tag the event was ever published with.
    coincidence_ids
        Ids of the coincidences the event takes part in.
    """

    event_key: str
    versions: tuple[Version, ...]
    tags: frozenset[str]
    coincidence_ids: frozenset[str]


class RecentWindow(Protocol):
    """The recent-alert window: one entry per event, kept for ``retention_s`` of stream time."""

    retention_s: float

    def add(self, entries: Sequence[WindowEntry]) -> None:
        """Insert or replace entries, per event key.

        An entry replaces the event's existing one only if it is not older (compare ``(revision, issued)``,
        None lowest); re-adding a broker id already in the window is a no-op.  Entries are applied in order.
        Updates the watermark (the maximum event time seen, s) and evicts entries with
        ``time < watermark - retention_s``.
        """
        ...

    def query(
        self,
        t_min: float,
        t_max: float,
        classes: Collection[str] | None = None,
        cone: tuple[float, float, float] | None = None,
    ) -> list[WindowEntry]:
        """Entries with ``t_min <= time <= t_max`` (unix s) having any of ``classes`` (None: any).

        With ``cone = (ra, dec, radius)`` (deg), only entries whose localization may overlap it: angular
        separation <= radius + extent (+ :data:`CONE_TOLERANCE_DEG`); entries without a position or with
        ``extent`` None always pass.  Ordered by time, then broker id.
        """
        ...

    def remove_event(self, event_key: str) -> WindowEntry | None:
        """Remove the event's entry and return it (None: the event is not in the window)."""
        ...

    def get_event(self, event_key: str) -> WindowEntry | None:
        """The event's entry, if it is in the window."""
        ...

    def watermark(self) -> float | None:
        """The maximum event time ever added (unix s), None before the first entry."""
        ...

    def __len__(self) -> int:
        """Number of entries (events) in the window."""
        ...


class StateStore(Protocol):
    """The shared hot state of the workers: recent-alert window, revisions, de-duplication, claims."""

    @property
    def window(self) -> RecentWindow:
        """The recent-alert window."""
        ...

    def record_versions(self, versions: Sequence[tuple[str, Version]]) -> dict[str, EventState]:
        """Append each ``(event_key, version)`` unless its broker id is already recorded for the event.

        Atomic per event across workers.  Returns the state of every touched event after the append.
        """
        ...

    def events(self, event_keys: Collection[str]) -> dict[str, EventState]:
        """The states of the known events among ``event_keys`` (unknown ones are absent)."""
        ...

    def add_tags(self, tags: Mapping[str, Collection[str]]) -> None:
        """Add tags to events (event key -> tags; union, atomic)."""
        ...

    def seen(self, keys: Collection[str]) -> set[str]:
        """The idempotency keys among ``keys`` already marked done."""
        ...

    def mark_done(self, keys: Collection[str]) -> None:
        """Mark idempotency keys done (they expire after the store's TTL)."""
        ...

    def claim(self, key: str, owner: str) -> bool:
        """Claim ``key`` for ``owner``; first claim wins (SET NX semantics).

        Returns True if nobody held ``key`` or ``owner`` already holds it, False if another owner does.
        """
        ...

    def put_coincidences(self, coincidences: Sequence[Coincidence]) -> None:
        """Store coincidences (replacing by id) and add their ids to both events' ``coincidence_ids``."""
        ...

    def coincidences_of(self, event_key: str) -> list[Coincidence]:
        """The stored coincidences of an event, sorted by coincidence id."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


# --------------------------------------------------------------------------- helpers shared by the backends


def order_key(revision: int | None, issued: float | None) -> OrderKey:
    """Sort key of ``(revision, issued)`` with None lowest."""
    return (revision is not None, 0 if revision is None else revision, issued is not None,
            0.0 if issued is None else issued)


def version_json(v: Version) -> str:
    """Compact JSON of a version: ``[broker_id, revision, issued, retraction]``."""
    return json.dumps([v.broker_id, v.revision, v.issued, v.retraction], separators=(",", ":"))


def version_from_json(data: bytes | str) -> Version:
    """Inverse of :func:`version_json`."""
    bid, rev, issued, retraction = json.loads(data)
    return Version(str(bid), None if rev is None else int(rev), None if issued is None else float(issued),
                   bool(retraction))


# Binary layout of a window entry: layout version, flags (bit i set: field i is None, for revision, issued,
# far, ra, dec, extent), time, revision, issued, far, ra, dec, extent (little-endian), the length of the text
# part, the text part (UTF-8: broker_id, event_key, messenger and the classes separated by \x1e, the classes
# among themselves by \x1f), then the payload.
_ENTRY = struct.Struct("<BBdqdddddI")
_ENTRY_VERSION = 1
_FIELD_SEP = "\x1e"
_CLASS_SEP = "\x1f"
_FORBIDDEN = ("\n", _FIELD_SEP, _CLASS_SEP)


def encode_entry(e: WindowEntry) -> bytes:
    """Serialize a window entry (fixed binary header, one UTF-8 text part, payload).

    Raises
    ------
    StateError
        The broker id, event key, messenger or a class contains a newline, ``\\x1e`` or ``\\x1f``.
    """
    strings = (e.broker_id, e.event_key, e.messenger, *e.classes)
    if any(sep in x for x in strings for sep in _FORBIDDEN):
        raise StateError(f"window entry {e.broker_id!r}: ids, messenger and classes must not contain "
                         f"a newline, \\x1e or \\x1f")
    flags = 0
    for i, v in enumerate((e.revision, e.issued, e.far, e.ra, e.dec, e.extent)):
        if v is None:
            flags |= 1 << i
    text = _FIELD_SEP.join((e.broker_id, e.event_key, e.messenger, _CLASS_SEP.join(e.classes))).encode()
    head = _ENTRY.pack(
        _ENTRY_VERSION, flags, e.time, e.revision or 0, e.issued or 0.0, e.far or 0.0, e.ra or 0.0, e.dec or 0.0,
        e.extent or 0.0, len(text),
    )
    return b"".join((head, text, e.payload))


def decode_entry(blob: bytes) -> WindowEntry:
    """Inverse of :func:`encode_entry`."""
    ver, flags, t, rev, issued, far, ra, dec, ext, n = _ENTRY.unpack_from(blob)
    if ver != _ENTRY_VERSION:
        raise StateError(f"window entry of unknown layout version {ver}")
    o = _ENTRY.size
    bid, ek, msg, cls = blob[o:o + n].decode().split(_FIELD_SEP)
    return WindowEntry(
        bid, ek,
        None if flags & 1 else rev,
        None if flags & 2 else issued,
        tuple(cls.split(_CLASS_SEP)) if cls else (),
        msg, t,
        None if flags & 4 else far,
        None if flags & 8 else ra,
        None if flags & 16 else dec,
        None if flags & 32 else ext,
        blob[o + n:],
    )
