# SPDX-License-Identifier: Apache-2.0
"""In-process hot state: one worker (the embedded default), thread-safe.

The window keeps parallel numpy arrays sorted by (event time, broker id): a
time range is two binary searches, the class and cone filters are vectorised
over that slice only, so a query costs O(log n + slice).  New entries first go
to a small staging list, kept sorted the same way (a query bisects it too), and
are merged into the arrays with one ``np.insert`` per array once it holds
:data:`STAGE_MAX` entries, so adding one alert at a time to a 100,000-entry
window does not copy the arrays each time.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from broker.model import Coincidence
from broker.sky import angular_separation
from broker.state.base import (
    CONE_TOLERANCE_DEG,
    DEFAULT_TTL_S,
    EventState,
    Version,
    WindowEntry,
    order_key,
)

Clock = Callable[[], float]

#: Entries staged before they are merged into the sorted arrays.
STAGE_MAX = 1024
_AFTER_ANY_ID = "\U0010ffff"  # sorts after every broker id (bisecting the staging keys up to a time)


class MemoryWindow:
    """The recent-alert window in process memory (see :class:`broker.state.base.RecentWindow`).

    Parameters
    ----------
    retention_s
        Entries with event time < watermark - ``retention_s`` are evicted (s).
    """

    def __init__(self, retention_s: float) -> None:
        self.retention_s = float(retention_s)
        self._lock = threading.Lock()
        self._by_event: dict[str, WindowEntry] = {}
        self._by_id: dict[str, WindowEntry] = {}
        self._wm: float | None = None
        self._class_bit: dict[str, int] = {}
        # parallel arrays sorted by (time, broker_id); positionless / extent-less entries hold NaN
        self._t: npt.NDArray[np.float64] = np.empty(0)
        self._ra: npt.NDArray[np.float64] = np.empty(0)
        self._dec: npt.NDArray[np.float64] = np.empty(0)
        self._ext: npt.NDArray[np.float64] = np.empty(0)
        self._cls: npt.NDArray[np.uint64] = np.zeros((0, 1), dtype=np.uint64)
        self._obj: npt.NDArray[np.object_] = np.empty(0, dtype=object)
        # recent additions not yet in the arrays, sorted by (time, broker_id) like them, and their sort keys
        self._stage: list[WindowEntry] = []
        self._stage_keys: list[tuple[float, str]] = []

    # ------------------------------------------------------------------ internals (lock held)

    def _index_of(self, e: WindowEntry) -> int:
        i = int(np.searchsorted(self._t, e.time, side="left"))
        while self._obj[i] is not e:
            i += 1
        return i

    def _class_row(self, classes: Collection[str], grow: bool) -> npt.NDArray[np.uint64] | None:
        words = self._cls.shape[1]
        row = np.zeros(words, dtype=np.uint64)
        for c in classes:
            bit = self._class_bit.get(c)
            if bit is None:
                if not grow:
                    continue
                bit = self._class_bit[c] = len(self._class_bit)
                if bit >= 64 * words:
                    self._cls = np.hstack([self._cls, np.zeros((len(self._cls), 1), dtype=np.uint64)])
                    row = np.append(row, np.uint64(0))
                    words += 1
            row[bit // 64] |= np.uint64(1 << (bit % 64))
        return row if row.any() else None

    def _delete(self, idx: npt.NDArray[np.intp] | slice) -> None:
        self._t = np.delete(self._t, idx)
        self._ra = np.delete(self._ra, idx)
        self._dec = np.delete(self._dec, idx)
        self._ext = np.delete(self._ext, idx)
        self._cls = np.delete(self._cls, idx, axis=0)
        self._obj = np.delete(self._obj, idx)

    def _insert(self, new: list[WindowEntry]) -> None:
        new.sort(key=lambda e: (e.time, e.broker_id))
        times = np.fromiter((e.time for e in new), dtype=np.float64, count=len(new))
        pos = np.searchsorted(self._t, times, side="left")
        right = np.searchsorted(self._t, times, side="right")
        for j in np.flatnonzero(right > pos).tolist():  # equal times: order by broker id
            p = int(pos[j])
            while p < right[j] and self._obj[p].broker_id < new[j].broker_id:
                p += 1
            pos[j] = p
        nan = float("nan")
        ra = [nan if e.ra is None or e.dec is None else e.ra for e in new]
        dec = [nan if e.ra is None or e.dec is None else e.dec for e in new]
        ext = [nan if e.extent is None else e.extent for e in new]
        rows = [self._class_row(e.classes, grow=True) for e in new]  # may widen self._cls first
        cls = np.zeros((len(new), self._cls.shape[1]), dtype=np.uint64)
        for k, r in enumerate(rows):
            if r is not None:
                cls[k, : r.size] = r
        objs = np.empty(len(new), dtype=object)
        for k, e in enumerate(new):
            objs[k] = e
        self._t = np.insert(self._t, pos, times)
        self._ra = np.insert(self._ra, pos, ra)
        self._dec = np.insert(self._dec, pos, dec)
        self._ext = np.insert(self._ext, pos, ext)
        self._cls = np.insert(self._cls, pos, cls, axis=0)
        self._obj = np.insert(self._obj, pos, objs)

    # ------------------------------------------------------------------ the contract

    def add(self, entries: Sequence[WindowEntry]) -> None:
        """Insert or replace entries per event key; update the watermark; evict expired entries."""
        if not entries:
            return
        with self._lock:
            accepted: dict[str, WindowEntry] = {}
            batch_max = max(e.time for e in entries)
            for e in entries:
                if e.broker_id in self._by_id:
                    continue
                cur = accepted.get(e.event_key) or self._by_event.get(e.event_key)
                if cur is not None and (
                    cur.broker_id == e.broker_id
                    or order_key(e.revision, e.issued) < order_key(cur.revision, cur.issued)
                ):
                    continue
                accepted[e.event_key] = e
            self._wm = batch_max if self._wm is None else max(self._wm, batch_max)
            cutoff = self._wm - self.retention_s
            replaced = [self._by_event[k] for k in accepted if k in self._by_event]
            for e in replaced:
                self._forget(e)
            n_old = int(np.searchsorted(self._t, cutoff, side="left"))
            if n_old:
                for e in self._obj[:n_old]:
                    del self._by_id[e.broker_id]
                    del self._by_event[e.event_key]
                self._delete(slice(0, n_old))
            n_old = bisect.bisect_left(self._stage_keys, (cutoff, ""))
            if n_old:
                for e in self._stage[:n_old]:
                    del self._by_id[e.broker_id]
                    del self._by_event[e.event_key]
                del self._stage[:n_old], self._stage_keys[:n_old]
            for e in accepted.values():
                if e.time >= cutoff:
                    self._by_id[e.broker_id] = e
                    self._by_event[e.event_key] = e
                    key = (e.time, e.broker_id)
                    k = bisect.bisect_left(self._stage_keys, key)
                    self._stage.insert(k, e)
                    self._stage_keys.insert(k, key)
            if len(self._stage) >= STAGE_MAX:
                self._insert(self._stage)
                self._stage, self._stage_keys = [], []

    def _forget(self, e: WindowEntry) -> None:
        """Drop an entry (staged or in the arrays) and its index entries (lock held)."""
        del self._by_id[e.broker_id]
        del self._by_event[e.event_key]
        k = bisect.bisect_left(self._stage_keys, (e.time, e.broker_id))
        if k < len(self._stage) and self._stage[k] is e:
            del self._stage[k], self._stage_keys[k]
            return
        self._delete(np.array([self._index_of(e)], dtype=np.intp))

    def query(
        self,
        t_min: float,
        t_max: float,
        classes: Collection[str] | None = None,
        cone: tuple[float, float, float] | None = None,
    ) -> list[WindowEntry]:
        """Entries in ``[t_min, t_max]`` (unix s) with any of ``classes``, possibly overlapping ``cone`` (deg)."""
        with self._lock:
            staged = self._staged_matches(t_min, t_max, classes, cone) if self._stage else []
            lo = int(np.searchsorted(self._t, t_min, side="left"))
            hi = int(np.searchsorted(self._t, t_max, side="right"))
            if lo >= hi:
                return staged
            keep: npt.NDArray[np.bool_] | None = None
            if classes is not None:
                row = self._class_row(classes, grow=False)
                if row is None:
                    return staged
                keep = np.asarray((self._cls[lo:hi] & row).any(axis=1), dtype=np.bool_)
            if cone is not None:
                ra0, dec0, radius = cone
                ra, ext = self._ra[lo:hi], self._ext[lo:hi]
                sep = angular_separation(ra, self._dec[lo:hi], ra0, dec0)
                near = np.isnan(ra) | np.isnan(ext) | (sep <= radius + ext + CONE_TOLERANCE_DEG)
                keep = near if keep is None else keep & near
            objs = self._obj[lo:hi] if keep is None else self._obj[lo:hi][keep]
            found: list[WindowEntry] = objs.tolist()
            for e in staged:  # both sorted, the staged few: insert them
                bisect.insort(found, e, key=_time_id)
            return found

    def _staged_matches(
        self, t_min: float, t_max: float, classes: Collection[str] | None, cone: tuple[float, float, float] | None
    ) -> list[WindowEntry]:
        """The staged entries a query selects, sorted (lock held; the time range is bisected)."""
        lo = bisect.bisect_left(self._stage_keys, (t_min, ""))
        hi = bisect.bisect_right(self._stage_keys, (t_max, _AFTER_ANY_ID))
        if classes is None:
            out = self._stage[lo:hi]
        else:
            wanted = set(classes)
            out = [e for e in self._stage[lo:hi] if not wanted.isdisjoint(e.classes)]
        if cone is None or not out:
            return out
        ra0, dec0, radius = cone
        keep = []
        for e in out:
            if e.ra is None or e.dec is None or e.extent is None:
                keep.append(e)
                continue
            sep = float(angular_separation(e.ra, e.dec, ra0, dec0))
            if sep <= radius + e.extent + CONE_TOLERANCE_DEG:
                keep.append(e)
        return keep

    def remove_event(self, event_key: str) -> WindowEntry | None:
        """Remove the event's entry and return it (None if absent)."""
        with self._lock:
            e = self._by_event.get(event_key)
            if e is None:
                return None
            self._forget(e)
            return e

    def get_event(self, event_key: str) -> WindowEntry | None:
        """The event's entry, if in the window."""
        with self._lock:
            return self._by_event.get(event_key)

    def watermark(self) -> float | None:
        """Maximum event time added (unix s), None before the first add."""
        with self._lock:
            return self._wm

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_event)


def _time_id(e: WindowEntry) -> tuple[float, str]:
    return (e.time, e.broker_id)


@dataclass
class _Event:
    versions: list[Version] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    coincidence_ids: set[str] = field(default_factory=set)
    expires: float = 0.0

    def state(self, key: str) -> EventState:
        return EventState(key, tuple(self.versions), frozenset(self.tags), frozenset(self.coincidence_ids))


class MemoryState:
    """In-process :class:`~broker.state.base.StateStore` (one worker; thread-safe).

    Parameters
    ----------
    retention_s
        Retention of the recent-alert window, s of event time behind the watermark.
    ttl_s
        Lifetime of event states, done keys, claims and coincidences after their last write (s).
    clock
        Monotonic clock (s) for the TTLs.
    """

    def __init__(self, retention_s: float, *, ttl_s: float = DEFAULT_TTL_S, clock: Clock = time.monotonic) -> None:
        self._window = MemoryWindow(retention_s)
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, _Event] = {}
        self._done: dict[str, float] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._coincidences: dict[str, tuple[Coincidence, float]] = {}
        self._next_sweep = clock() + min(self.ttl_s, 60.0)

    @property
    def window(self) -> MemoryWindow:
        """The recent-alert window."""
        return self._window

    # ------------------------------------------------------------------ expiry (lock held)

    def _now(self) -> float:
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + min(self.ttl_s, 60.0)
            self._events = {k: v for k, v in self._events.items() if v.expires > now}
            self._done = {k: v for k, v in self._done.items() if v > now}
            self._claims = {k: v for k, v in self._claims.items() if v[1] > now}
            self._coincidences = {k: v for k, v in self._coincidences.items() if v[1] > now}
        return now

    def _event(self, key: str, now: float) -> _Event:
        ev = self._events.get(key)
        if ev is None or ev.expires <= now:
            ev = self._events[key] = _Event()
        ev.expires = now + self.ttl_s
        return ev

    # ------------------------------------------------------------------ the contract

    def record_versions(self, versions: Sequence[tuple[str, Version]]) -> dict[str, EventState]:
        """Append versions not yet recorded; the states of the touched events after the append."""
        with self._lock:
            now = self._now()
            touched: dict[str, _Event] = {}
            for key, v in versions:
                ev = touched.get(key) or self._event(key, now)
                touched[key] = ev
                if v.broker_id not in ev.ids:
                    ev.ids.add(v.broker_id)
                    ev.versions.append(v)
            return {k: ev.state(k) for k, ev in touched.items()}

    def events(self, event_keys: Collection[str]) -> dict[str, EventState]:
        """States of the known events among ``event_keys``."""
        with self._lock:
            now = self._now()
            out = {}
            for k in event_keys:
                ev = self._events.get(k)
                if ev is not None and ev.expires > now and (ev.versions or ev.tags or ev.coincidence_ids):
                    out[k] = ev.state(k)
            return out

    def add_tags(self, tags: Mapping[str, Collection[str]]) -> None:
        """Union ``tags`` into each event's tag set."""
        with self._lock:
            now = self._now()
            for k, ts in tags.items():
                self._event(k, now).tags.update(ts)

    def seen(self, keys: Collection[str]) -> set[str]:
        """The keys already marked done (and not expired)."""
        with self._lock:
            now = self._now()
            return {k for k in keys if self._done.get(k, 0.0) > now}

    def mark_done(self, keys: Collection[str]) -> None:
        """Mark keys done for ``ttl_s``."""
        with self._lock:
            expires = self._now() + self.ttl_s
            for k in keys:
                self._done[k] = expires

    def claim(self, key: str, owner: str) -> bool:
        """First claim wins; the holder re-claiming gets True (and a fresh TTL)."""
        with self._lock:
            now = self._now()
            held = self._claims.get(key)
            if held is not None and held[1] > now and held[0] != owner:
                return False
            self._claims[key] = (owner, now + self.ttl_s)
            return True

    def put_coincidences(self, coincidences: Sequence[Coincidence]) -> None:
        """Store (replace by id) and index by both event keys."""
        with self._lock:
            now = self._now()
            for c in coincidences:
                self._coincidences[c.coincidence_id] = (c, now + self.ttl_s)
                self._event(c.a_event_key, now).coincidence_ids.add(c.coincidence_id)
                self._event(c.b_event_key, now).coincidence_ids.add(c.coincidence_id)

    def coincidences_of(self, event_key: str) -> list[Coincidence]:
        """Stored coincidences of the event, by coincidence id."""
        with self._lock:
            now = self._now()
            ev = self._events.get(event_key)
            if ev is None or ev.expires <= now:
                return []
            found = (self._coincidences.get(i) for i in sorted(ev.coincidence_ids))
            return [c for c, exp in (f for f in found if f is not None) if exp > now]

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> MemoryState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
