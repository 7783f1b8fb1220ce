# SPDX-License-Identifier: Apache-2.0
"""Event revisions: every notice is one version of one upstream event.

The broker keeps, per event (``mission/event_id``), the versions it has seen
in arrival order (:class:`~broker.state.EventState`), shared between workers
through the state store.  Each new version gets a
:attr:`~broker.model.Alert.revision_state` by these documented rules:

``first``
    No earlier version of the event was seen (also for an update of an event
    never seen: the broker may have joined the stream late; it is processed
    as the event's first version).
``update``
    Not older than any earlier version: re-annotated, re-filtered, published
    to its tag topics like any alert.  When it no longer has a tag an earlier
    version went out with (a filter's tag it falls below, e.g.
    ``grb-well-localized`` for an update without a position), it is also
    published to that tag topic, with the tag in
    :attr:`~broker.model.Alert.dropped_tags` (header ``dropped-tags``), so
    the telescopes that followed the event there learn that it no longer
    qualifies: once an event went out on a tag topic, that topic receives its
    later versions and its retraction.  Built-in routing tags (messenger,
    ``test``) and the tags of the event's active coincidences are never
    dropped, and a test update never announces drops on real topics.  A version is *older* than another when
    both have upstream revision numbers and its number is lower, or, when
    either has none (e.g. an IGWN Kafka notice next to a GCN Classic VOEvent
    of the same superevent) or the numbers are equal, when it was issued
    earlier; a version equal in both is an upstream correction and counts as
    an update.
``stale``
    Older than a version already seen (out-of-order delivery).  Archived, and
    published on the alerts topic only, with no tags, so a telescope that
    follows a tag topic is never sent back to an older localization; it does
    not enter the coincidence window.
``retraction``
    Published to every tag topic the event was ever published to (and to the
    tag topics of the coincidences it was part of), flagged as a retraction;
    its coincidences are withdrawn and the event leaves the coincidence window.
``unknown_retraction``
    A retraction of an event never seen: published on the alerts topic and
    its built-in tag topics (messenger or ``test``, and ``retraction``);
    nothing else to withdraw.
``after_retraction``
    A notice for an event already retracted: archived and published on the
    alerts topic only, with no tags (a retraction is final).

Only versions recorded *before* an alert count for its state, so a notice
re-delivered after a crash gets the same state as the first time.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from broker.model import Alert, Coincidence, Messenger, RevisionState
from broker.state import EventState, StateStore, Version

#: Revision states whose alerts go to tag topics and take part in coincidences.
LIVE_STATES: frozenset[RevisionState] = frozenset({"first", "update"})
#: Revision states published on the alerts topic only.
SILENT_STATES: frozenset[RevisionState] = frozenset({"stale", "after_retraction"})


def unix_time(alert: Alert, which: str = "issued") -> float | None:
    """``alert.issued`` (or ``event_time``) as unix seconds, UTC."""
    t = alert.issued if which == "issued" else alert.event_time
    return None if t is None else t.timestamp()


def version_of(alert: Alert) -> Version:
    """The :class:`~broker.state.Version` recorded for ``alert``."""
    return Version(alert.broker_id, alert.revision, unix_time(alert), alert.kind == "retraction")


def is_older(v: Version, than: Version) -> bool:
    """Whether version ``v`` is strictly older than ``than`` (see the module docstring)."""
    if v.revision is not None and than.revision is not None and v.revision != than.revision:
        return v.revision < than.revision
    return v.issued is not None and than.issued is not None and v.issued < than.issued


def _order(v: Version) -> tuple[float, float]:
    return (
        -math.inf if v.revision is None else float(v.revision),
        -math.inf if v.issued is None else v.issued,
    )


def classify(alert: Alert, state: EventState | None) -> tuple[RevisionState, str | None]:
    """Revision state of ``alert`` and the broker id of the latest earlier version.

    Parameters
    ----------
    alert
        The new version.
    state
        The event's state *including* this version (as recorded), or None.
    """
    earlier: list[Version] = []
    if state is not None:
        for v in state.versions:
            if v.broker_id == alert.broker_id:
                break
            earlier.append(v)
    # the latest earlier version: highest (revision, issue time), the later arrival on ties
    previous = max(enumerate(earlier), key=lambda iv: (_order(iv[1]), iv[0]))[1].broker_id if earlier else None
    if alert.kind == "retraction":
        return ("retraction" if earlier else "unknown_retraction"), previous
    if any(v.retraction for v in earlier):
        return "after_retraction", previous
    if not earlier:
        return "first", None
    mine = version_of(alert)
    return ("stale" if any(is_older(mine, v) for v in earlier) else "update"), previous


@dataclass
class RevisionStage:
    """Records every alert's version in the state store and sets its revision state.

    Parameters
    ----------
    state
        The shared state store.
    """

    state: StateStore
    name: str = "revisions"

    def process(self, alerts: list[Alert]) -> list[Alert]:
        """Record the batch's versions (in stream order) and classify each alert."""
        if not alerts:
            return alerts
        states = self.state.record_versions([(a.event_key, version_of(a)) for a in alerts])
        out = []
        for a in alerts:
            rs, previous = classify(a, states.get(a.event_key))
            out.append(replace(a, revision_state=rs, previous_broker_id=previous))
        return out


@dataclass
class RevisionPolicy:
    """Last stage: which tag topics each alert goes to, given its revision state.

    Stale and after-retraction versions lose their tags (alerts topic only); a
    retraction gains every tag its event was ever published with, and the tags
    of the coincidences it withdraws; an update names the tags it dropped
    (see the module notes).
    """

    state: StateStore
    name: str = "revision-policy"

    def process(self, alerts: list[Alert]) -> list[Alert]:
        """Apply the policy to the batch."""
        asked = [a.event_key for a in alerts if a.revision_state == "retraction" or _may_drop(a)]
        known = self.state.events(asked) if asked else {}
        out = []
        for a in alerts:
            if a.revision_state in SILENT_STATES:
                a = replace(a, tags=())
            elif a.revision_state == "retraction":
                extra: set[str] = set(known[a.event_key].tags) if a.event_key in known else set()
                extra |= withdrawn_tags(a.coincidences)
                a = a.with_tags(a.tags + tuple(extra))
            elif _may_drop(a) and a.event_key in known:
                a = self._with_dropped(a, known[a.event_key].tags)
            out.append(a)
        return out

    def _with_dropped(self, alert: Alert, published: Collection[str]) -> Alert:
        """The update with the tags it lost since earlier versions (none of the kept ones, see the module notes)."""
        lost = set(published) - set(alert.tags) - _NEVER_DROPPED
        if not lost:
            return alert
        for c in self.state.coincidences_of(alert.event_key):
            if c.status == "active":
                lost -= {"coincidence", c.tag}
        return replace(alert, dropped_tags=tuple(sorted(lost))) if lost else alert


#: Routing tags an update never drops: they follow the messenger and the test flag, not the science.
_NEVER_DROPPED = frozenset({"test", "retraction", *typing.get_args(Messenger)})


def _may_drop(alert: Alert) -> bool:
    """Whether the alert is an update that can announce dropped tags (a real, live update)."""
    return alert.revision_state == "update" and not alert.is_test


def withdrawn_tags(coincidences: Sequence[Coincidence]) -> set[str]:
    """Tags of the tag topics withdrawn coincidences were published to (``coincidence`` + their pair tag)."""
    withdrawn = [c for c in coincidences if c.status == "withdrawn"]
    return {"coincidence", *(c.tag for c in withdrawn)} if withdrawn else set()
