# SPDX-License-Identifier: Apache-2.0
"""The coincidence stage: pair each new alert with the recent-alert window.

For every alert of a batch that belongs to a coincidence class
(:func:`~broker.coincidence.rules.alert_classes`) and is a live version of its
event (``first`` or ``update``):

1. its localization footprint is added to the shared recent-alert window
   *before* the window is searched, so that when two workers process the two
   sides of a pair at the same time at least one of them sees the other;
2. for every rule naming one of its classes, the window is searched for the
   other class inside the rule's time window, and the spatial test of the two
   localizations is run (:mod:`broker.coincidence.spatial`);
3. each pair found is *claimed* in the state store under (coincidence id,
   both broker ids) by this alert: the first claimer publishes it, so two
   workers never publish the same pair twice, and a worker re-processing a
   batch after a crash re-publishes its own claims (no coincidence is lost).

The coincidences are added to the newer alert (the one that found them),
which gets the tags ``coincidence`` and the rule's pair tag; each is also
published as its own ``<prefix>.coincidence`` message by the worker.

A retraction removes its event from the window and withdraws every active
coincidence of the event (status ``withdrawn``); the withdrawn records ride on
the retraction alert and are published to the coincidence topic again.

Test alerts (mock, drill, MDC) only pair with test alerts, real with real.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.coincidence.far import spatiotemporal_far, targeted_temporal_far, temporal_far
from broker.coincidence.rules import Rule, alert_classes
from broker.coincidence.spatial import Footprint, compare_many, footprint
from broker.model import Alert, Coincidence
from broker.revisions import LIVE_STATES
from broker.state import StateStore, WindowEntry

log = logging.getLogger(__name__)

_TEST_PREFIX = "test:"
_FOOTPRINT_CACHE = 4096


def window_classes(alert: Alert) -> tuple[str, ...]:
    """The classes an alert is filed under in the window (``test:`` prefixed for test alerts)."""
    classes = alert_classes(alert)
    return tuple(_TEST_PREFIX + c for c in classes) if alert.is_test else classes


def coincidence_id(rule: Rule, a_event_key: str, b_event_key: str) -> str:
    """Deterministic id of a coincidence: rule and the two events (not their revisions)."""
    h = hashlib.sha256(f"{rule.name}\x00{a_event_key}\x00{b_event_key}".encode())
    return "mmc-" + h.hexdigest()[:24]


@dataclass
class CoincidenceStats:
    """Counters of the stage (for metrics and the dashboard)."""

    searched: int = 0
    candidates: int = 0
    found: int = 0
    claimed_elsewhere: int = 0
    withdrawn: int = 0
    seconds: float = 0.0


@dataclass
class CoincidenceStage:
    """Finds coincidences against the shared recent-alert window.

    Parameters
    ----------
    state
        Shared state (window, claims, stored coincidences).
    rules
        The coincidence rules.
    settle_s
        How long a retraction waits for the earlier versions of its event
        that another worker is still processing (s); see :meth:`process`.
    """

    state: StateStore
    rules: Sequence[Rule]
    name: str = "coincidences"
    settle_s: float = 20.0
    stats: CoincidenceStats = field(default_factory=CoincidenceStats)
    _footprints: OrderedDict[str, Footprint] = field(default_factory=OrderedDict)

    def process(self, alerts: list[Alert]) -> list[Alert]:
        """Add the batch to the window, search it, attach the coincidences found, withdraw the retracted."""
        t0 = time.perf_counter()
        retracted = {a.event_key for a in alerts if a.revision_state == "retraction"}
        for key in retracted:
            self.state.window.remove_event(key)
        entries: dict[int, WindowEntry] = {}
        for i, a in enumerate(alerts):
            if a.revision_state in LIVE_STATES and a.event_time is not None and a.event_key not in retracted:
                classes = window_classes(a)
                if classes:
                    entries[i] = self._entry(a, classes)
        if entries:
            self.state.window.add(list(entries.values()))
        out = list(alerts)
        found_here: list[Coincidence] = []
        for i, entry in entries.items():
            found = self._search(alerts[i], entry)
            if found:
                found_here.extend(found)
                tags = ("coincidence", *sorted({c.tag for c in found}))
                out[i] = alerts[i].with_coincidences(tuple(found)).with_tags(alerts[i].tags + tags)
        if retracted:
            self._settle([a for a in alerts if a.revision_state == "retraction"], {a.broker_id for a in alerts})
        for i, a in enumerate(alerts):
            if a.revision_state == "retraction":
                out[i] = self._withdraw(out[i], found_here)
        self.stats.seconds += time.perf_counter() - t0
        return out

    # Window --------------------------------------------------------------------
    def _entry(self, alert: Alert, classes: tuple[str, ...]) -> WindowEntry:
        fp = footprint(alert)
        self._remember(alert.broker_id, fp)
        return WindowEntry.from_alert(alert, classes, fp.extent, fp.to_bytes())

    def _remember(self, broker_id: str, fp: Footprint) -> None:
        self._footprints[broker_id] = fp
        self._footprints.move_to_end(broker_id)
        while len(self._footprints) > _FOOTPRINT_CACHE:
            self._footprints.popitem(last=False)

    def _footprint_of(self, entry: WindowEntry) -> Footprint:
        fp = self._footprints.get(entry.broker_id)
        if fp is None:
            fp = Footprint.from_bytes(entry.payload)
            self._remember(entry.broker_id, fp)
        return fp

    # Search --------------------------------------------------------------------
    def _search(self, alert: Alert, me: WindowEntry) -> list[Coincidence]:
        """Every rule's window query, then one spatial comparison of all their candidates (vectorised)."""
        prefix = _TEST_PREFIX if alert.is_test else ""
        mine = {c.removeprefix(_TEST_PREFIX) for c in me.classes}
        queries: list[tuple[Rule, bool, list[WindowEntry]]] = []
        unique: dict[str, int] = {}  # broker id -> row of the comparison
        others: list[Footprint] = []
        for rule in self.rules:
            for me_is_a in (True, False):
                if (rule.a if me_is_a else rule.b) not in mine:
                    continue
                low, high = rule.window
                # window on t_b - t_a: for side a the other (b) is at t + [low, high]; for side b, t - [high, low]
                t_min, t_max = (me.time + low, me.time + high) if me_is_a else (me.time - high, me.time - low)
                other_class = prefix + (rule.b if me_is_a else rule.a)
                cands = [
                    e for e in self.state.window.query(t_min, t_max, classes=[other_class])
                    if e.event_key != me.event_key
                ]
                self.stats.searched += 1
                self.stats.candidates += len(cands)
                if cands:
                    queries.append((rule, me_is_a, cands))
                    for e in cands:
                        if e.broker_id not in unique:
                            unique[e.broker_id] = len(others)
                            others.append(self._footprint_of(e))
        if not queries:
            return []
        results = compare_many(self._footprint_of(me), others)
        found: list[Coincidence] = []
        for rule, me_is_a, cands in queries:
            for other in cands:
                res = results[unique[other.broker_id]]
                if rule.spatial and not res.coincident:
                    continue
                a, b = (me, other) if me_is_a else (other, me)
                c = self._coincidence(rule, a, b, res.test, res.overlap, res.separation)
                if self._claim(c, alert.broker_id):
                    found.append(c)
        self.stats.found += len(found)
        return found

    def _coincidence(
        self, rule: Rule, a: WindowEntry, b: WindowEntry, test: str, overlap: float | None, separation: float | None
    ) -> Coincidence:
        far_t = joint_temporal_far(rule, a.far, b.far)
        far_st = None if far_t is None or overlap is None else spatiotemporal_far(far_t, overlap)
        return Coincidence(
            coincidence_id=coincidence_id(rule, a.event_key, b.event_key),
            rule=rule.name,
            tag=rule.tag,
            status="active",
            a_broker_id=a.broker_id,
            a_event_key=a.event_key,
            a_messenger=a.messenger,  # type: ignore[arg-type]
            b_broker_id=b.broker_id,
            b_event_key=b.event_key,
            b_messenger=b.messenger,  # type: ignore[arg-type]
            time_difference=b.time - a.time,
            window=(float(rule.window[0]), float(rule.window[1])),
            spatial_test=test,
            overlap=overlap,
            separation=separation,
            far_temporal=far_t,
            far_spatiotemporal=far_st,
        )

    def _claim(self, c: Coincidence, owner: str) -> bool:
        ok = self.state.claim(f"coincidence:{c.coincidence_id}:{c.a_broker_id}:{c.b_broker_id}", owner)
        if not ok:
            self.stats.claimed_elsewhere += 1
        return ok

    # Retractions ---------------------------------------------------------------
    def _settle(self, retractions: Sequence[Alert], batch: set[str]) -> None:
        """Wait until every earlier version of the retracted events is done (published, archived, coincidences
        stored), up to ``settle_s``.

        With several workers, an update and the retraction of one event can be
        processed at the same time; the update's worker may be finding a
        coincidence the retraction must withdraw.  The update was recorded
        before the retraction (else it would be ``after_retraction``), and its
        worker stores its coincidences before marking it done, so once every
        earlier version is done the stored coincidences are complete: the
        retraction then withdraws exactly what a single worker would.
        Versions of this batch are handled in the batch itself.
        """
        states = self.state.events([a.event_key for a in retractions])
        pending = {v.broker_id for st in states.values() for v in st.versions if not v.retraction} - batch
        deadline = time.monotonic() + self.settle_s
        while pending:
            pending -= self.state.seen(pending)
            if not pending:
                return
            if time.monotonic() >= deadline:
                log.warning("retraction: %d earlier version(s) still not done after %.0f s; withdrawing what is"
                            " stored", len(pending), self.settle_s)
                return
            time.sleep(0.05)

    def _withdraw(self, alert: Alert, found_here: Sequence[Coincidence]) -> Alert:
        """The retraction carries its event's active coincidences, withdrawn (stored ones and this batch's)."""
        latest: dict[str, Coincidence] = {}
        for c in (*self.state.coincidences_of(alert.event_key), *found_here):
            if c.involves(alert.event_key):
                latest[c.coincidence_id] = c
        active = [c for c in latest.values() if c.status == "active"]
        if not active:
            return alert
        reason = f"{alert.event_key} retracted ({alert.broker_id})"
        withdrawn = tuple(c.withdrawn(reason) for c in active)
        self.stats.withdrawn += len(withdrawn)
        return alert.with_coincidences(withdrawn)


def joint_temporal_far(rule: Rule, far_a: float | None, far_b: float | None) -> float | None:
    """RAVEN's temporal joint FAR for a pair found by ``rule`` (Hz), or None if side a has no FAR.

    ``(high - low) * R_b * FAR_a`` (ligo-raven ``search.coinc_far``), with
    ``R_b`` the background rate of side b's class; for RAVEN's targeted
    sub-threshold searches, when both sides have a FAR, the product-of-uniform
    formula of :func:`~broker.coincidence.far.targeted_temporal_far`.
    """
    if far_a is None or far_a <= 0:
        return None
    if rule.targeted is not None and far_b is not None and far_b > 0:
        return targeted_temporal_far(rule.window, far_a, far_b, rule.targeted[0], rule.targeted[1])
    rate = rule.background_rate_b
    if rate is None:
        return None
    return temporal_far(rule.window, far_a, rate)
