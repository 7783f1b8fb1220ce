# SPDX-License-Identifier: Apache-2.0
"""Annotator plugins and the annotation stage of the pipeline.

An annotator adds context to alerts: catalog sources inside the error region,
credible regions of a sky map and the galaxies ranked inside them, what SIMBAD
knows about the position.  It works on a whole micro-batch at once and
returns one :class:`~broker.model.Annotation` (or ``None`` when it does not
apply) per alert it was given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast, runtime_checkable

from broker.errors import ConfigError
from broker.model import Alert, Annotation

log = logging.getLogger(__name__)

Need = Literal["position", "region", "skymap", "localization"]
"""What an annotator needs from an alert.

* ``position``: a best position (a region centre or a sky-map peak);
* ``region``: a point-like error region (point, circle, ellipse, rectangle);
* ``skymap``: a HEALPix sky map;
* ``localization``: either a region or a sky map.
"""


@runtime_checkable
class Annotator(Protocol):
    """An annotator plugin.

    Attributes
    ----------
    name, version
        Identify the plugin; stored in every :class:`Annotation` it makes.
    needs
        What an alert must have for the annotator to be called on it.
    adds
        One sentence saying what the annotation contains (shown by the CLI).
    """

    name: str
    version: str
    needs: Need
    adds: str

    def annotate(self, alerts: Sequence[Alert]) -> list[Annotation | None]:
        """Annotate a batch; one result per alert, in order (``None``: nothing to add)."""
        ...


def satisfies(alert: Alert, need: Need) -> bool:
    """Whether ``alert`` has what an annotator needing ``need`` requires."""
    if need == "skymap":
        return alert.skymap is not None
    if need == "region":
        return alert.region is not None
    return alert.region is not None or alert.skymap is not None


NO_LOCALIZATION = Annotation(
    annotator="localization",
    version="1",
    status="skipped",
    reason="alert has no localization (no position, error region or sky map): not annotated",
)
"""Attached to alerts that no localization-based annotator can work on."""

_NEEDS: tuple[Need, ...] = ("position", "region", "skymap", "localization")


def validate_annotator(obj: object, where: str) -> Annotator:
    """Check that ``obj`` is a usable annotator; raise :class:`ConfigError` saying what is wrong.

    Parameters
    ----------
    obj
        The candidate plugin instance.
    where
        Where it came from (entry point, module), for the message.
    """
    problems = []
    for attr in ("name", "version", "adds"):
        value = getattr(obj, attr, None)
        if not isinstance(value, str) or not value:
            problems.append(f"missing or empty string attribute {attr!r}")
    if getattr(obj, "needs", None) not in _NEEDS:
        problems.append(f"'needs' must be one of {', '.join(_NEEDS)}, got {getattr(obj, 'needs', None)!r}")
    if not callable(getattr(obj, "annotate", None)):
        problems.append("no callable annotate(alerts) method")
    if problems:
        raise ConfigError(f"annotator from {where} refused: " + "; ".join(problems))
    return cast(Annotator, obj)


@dataclass
class AnnotatorStats:
    """Counters of one annotator, for metrics and the dashboard."""

    alerts: int = 0
    batches: int = 0
    errors: int = 0
    missing: int = 0
    seconds: float = 0.0


@dataclass
class AnnotationStage:
    """The pipeline stage running every annotator on the batch.

    Each annotator sees only the alerts that have what it needs.  An alert
    with no localization at all gets :data:`NO_LOCALIZATION` and goes on.
    An annotator that raises does not stop the stream: the alerts it was
    given get an annotation with status ``missing`` naming the error, and
    the error is logged and counted.
    """

    annotators: Sequence[Annotator] = ()
    name: str = "annotate"
    stats: dict[str, AnnotatorStats] = field(default_factory=dict)

    def process(self, alerts: list[Alert]) -> list[Alert]:
        """Annotate the batch; returns new alerts in the same order."""
        added: list[list[Annotation]] = [[] for _ in alerts]
        for i, alert in enumerate(alerts):
            if alert.region is None and alert.skymap is None:
                added[i].append(NO_LOCALIZATION)
        for annotator in self.annotators:
            idx = [i for i, a in enumerate(alerts) if satisfies(a, annotator.needs)]
            if not idx:
                continue
            stats = self.stats.setdefault(annotator.name, AnnotatorStats())
            t0 = time.perf_counter()
            try:
                results: list[Annotation | None] = list(annotator.annotate([alerts[i] for i in idx]))
                if len(results) != len(idx):
                    raise ValueError(f"returned {len(results)} results for {len(idx)} alerts")
            except Exception as exc:  # a plugin bug must not stop the stream
                log.exception("annotator %s failed on a batch of %d alerts", annotator.name, len(idx))
                stats.errors += 1
                reason = f"annotator error: {type(exc).__name__}: {exc}"
                results = [Annotation(annotator.name, annotator.version, "missing", reason)] * len(idx)
            stats.seconds += time.perf_counter() - t0
            stats.batches += 1
            stats.alerts += len(idx)
            for i, result in zip(idx, results, strict=True):
                if result is not None:
                    stats.missing += result.status == "missing"
                    added[i].append(result)
        return [a.with_annotations(tuple(extra)) if extra else a for a, extra in zip(alerts, added, strict=True)]

    def close(self) -> None:
        """Release what the annotators hold (thread pools of remote clients)."""
        for annotator in self.annotators:
            close = getattr(annotator, "close", None)
            if close is not None:
                close()
