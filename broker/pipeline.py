# SPDX-License-Identifier: Apache-2.0
"""The stage chain a micro-batch of alerts goes through.

``revisions -> annotate -> coincide -> filter -> tag -> revision policy``:
each stage takes the whole batch and returns it (alerts are frozen; a stage
returns new ones).  The revision stages and the coincidence search use the
shared state store (:mod:`broker.state`); without one (``mmbroker parse``,
unit tests) only annotators, filters and the built-in tagger run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from broker.model import Alert

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from broker.config import Settings
    from broker.filter_stage import FilterFailure, FilterStage
    from broker.state import StateStore

log = logging.getLogger(__name__)


class Stage(Protocol):
    """One step of the chain, applied to a whole micro-batch."""

    name: str

    def process(self, alerts: list[Alert]) -> list[Alert]:
        """Return the batch after this stage (same length and order)."""
        ...


def builtin_tags(alert: Alert) -> tuple[str, ...]:
    """The substream tags every alert gets.

    * real (non-test) alerts get their messenger (``neutrino``, ``gamma``,
      ``xray``, ``optical``, ``radio``, ``gw``);
    * test, drill and mock alerts get ``test`` *instead*, so that a telescope
      subscribed to ``gw`` never slews to a mock event;
    * retractions additionally get ``retraction`` (and keep their messenger
      tag, so every subscriber who saw the event sees it withdrawn).
    """
    tags: list[str] = ["test"] if alert.is_test else [alert.messenger]
    if alert.kind == "retraction":
        tags.append("retraction")
    return tuple(tags)


@dataclass
class BuiltinTagger:
    """Adds :func:`builtin_tags` to each alert's tags."""

    name: str = "builtin-tags"

    def process(self, alerts: list[Alert]) -> list[Alert]:
        """Tag every alert of the batch."""
        return [a.with_tags(a.tags + builtin_tags(a)) for a in alerts]


@dataclass
class Pipeline:
    """Revisions, annotators, coincidences, filters, the built-in tagger and the revision policy, on each batch."""

    annotators: Sequence[Stage] = field(default_factory=list)
    filters: Sequence[Stage] = field(default_factory=list)
    tagger: Stage = field(default_factory=BuiltinTagger)
    revisions: Stage | None = None
    coincidences: Stage | None = None
    policy: Stage | None = None

    @property
    def stages(self) -> list[Stage]:
        """The stages in order."""
        head = [self.revisions] if self.revisions is not None else []
        mid = [self.coincidences] if self.coincidences is not None else []
        tail = [self.policy] if self.policy is not None else []
        return [*head, *self.annotators, *mid, *self.filters, self.tagger, *tail]

    def run(self, alerts: list[Alert]) -> list[Alert]:
        """Apply every stage to the batch."""
        for stage in self.stages:
            alerts = stage.process(alerts)
        return alerts

    def take_failures(self) -> list[FilterFailure]:
        """Filter failures of the last batch (the worker dead-letters them)."""
        out: list[FilterFailure] = []
        for stage in self.filters:
            take = getattr(stage, "take_failures", None)
            if take is not None:
                out.extend(take())
        return out

    def close(self) -> None:
        """Release what the stages hold (the filter sandbox process, remote clients)."""
        for stage in self.stages:
            close = getattr(stage, "close", None)
            if close is not None:
                close()


def build_pipeline(
    settings: Settings, registry: CollectorRegistry | None = None, state: StateStore | None = None
) -> Pipeline:
    """The pipeline the settings ask for: revisions, annotators, coincidences, filters, the built-in tagger.

    Catalogs are loaded, and filters discovered and validated, here at
    start-up, so a bad catalog stops the worker before it consumes anything
    and a bad filter is refused (and reported) before the first batch.  User
    filters are imported only in the sandbox process, never in the worker.

    Parameters
    ----------
    settings
        Process settings.
    registry
        Prometheus registry receiving the per-filter metrics.
    state
        Shared state store; revision tracking and coincidences need one.
    """
    annotators: list[Stage] = []
    filters: list[Stage] = []
    if settings.annotate:
        from annotators.registry import build_annotators  # the annotators package depends on broker, not back
        from broker.annotate import AnnotationStage

        annotators.append(AnnotationStage(build_annotators(settings)))
    if settings.filters:
        filters.append(build_filter_stage(settings, registry))
    pipeline = Pipeline(annotators=annotators, filters=filters)
    if state is not None:
        from broker.revisions import RevisionPolicy, RevisionStage

        pipeline.revisions = RevisionStage(state)
        pipeline.policy = RevisionPolicy(state)
        if settings.coincidences:
            from broker.coincidence.rules import load_rules
            from broker.coincidence.stage import CoincidenceStage

            rules = load_rules(settings.coincidence_rules_file, settings.neutrino_grb_window_s)
            pipeline.coincidences = CoincidenceStage(state, rules)
    return pipeline


def build_filter_stage(settings: Settings, registry: CollectorRegistry | None = None) -> FilterStage:
    """The filter stage: built-ins in-process, user filters in a supervised sandbox process."""
    from broker.filter_registry import load_registry
    from broker.filter_stage import FilterMetrics, FilterStage
    from broker.sandbox import Sandbox

    user_dir = settings.user_filter_dir if settings.user_filter_dir.is_dir() else None
    filters = load_registry(settings.filter_state_file, user_dir=user_dir, import_user=False)
    for error in filters.errors:
        log.error("filter refused: %s", error)
    sandbox = None
    if filters.pending:
        sandbox = Sandbox(
            filters.pending, settings.filter_time_budget_s, settings.filter_memory_mb, registry=filters
        )
    return FilterStage(
        filters,
        sandbox,
        settings.filter_error_budget,
        settings.filter_time_budget_s,
        settings.filter_stats_file,
        metrics=FilterMetrics(registry),
        raise_errors=settings.filter_raise_errors,
    )
