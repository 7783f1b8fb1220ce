# SPDX-License-Identifier: Apache-2.0
"""The stage chain a micro-batch of alerts goes through.

``normalize -> annotate -> coincide -> filter -> tag``: each stage takes the
whole batch and returns it (alerts are frozen; a stage returns new ones).
Annotators and filters are hooks for now; the built-in tagger gives the
substreams every broker needs from day one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from broker.model import Alert


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
    """Annotators, then filters, then the built-in tagger, on each batch."""

    annotators: Sequence[Stage] = field(default_factory=list)
    filters: Sequence[Stage] = field(default_factory=list)
    tagger: Stage = field(default_factory=BuiltinTagger)

    @property
    def stages(self) -> list[Stage]:
        """The stages in order."""
        return [*self.annotators, *self.filters, self.tagger]

    def run(self, alerts: list[Alert]) -> list[Alert]:
        """Apply every stage to the batch."""
        for stage in self.stages:
            alerts = stage.process(alerts)
        return alerts
