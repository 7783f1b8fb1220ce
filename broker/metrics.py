# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics of a worker, labelled by topic and reason."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class WorkerMetrics:
    """Counters and histograms of one worker (own registry, so tests can make many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.consumed = Counter(
            "mmbroker_messages_consumed", "Input messages consumed", ["topic"], registry=self.registry
        )
        self.alerts = Counter(
            "mmbroker_alerts", "Alerts normalized, by messenger", ["messenger"], registry=self.registry
        )
        self.published = Counter(
            "mmbroker_messages_published", "Messages published, by output topic", ["topic"], registry=self.registry
        )
        self.dead_letters = Counter(
            "mmbroker_dead_letters", "Messages dead-lettered, by reason code", ["reason"], registry=self.registry
        )
        self.duplicates = Counter(
            "mmbroker_duplicates", "Notices delivered again and skipped (already processed)", registry=self.registry
        )
        self.coincidences = Counter(
            "mmbroker_coincidences", "Coincidence messages published, by status", ["status"], registry=self.registry
        )
        self.archived = Counter("mmbroker_alerts_archived", "New alerts archived", registry=self.registry)
        self.batch_seconds = Histogram(
            "mmbroker_batch_seconds",
            "Wall time of one micro-batch from consume to commit, s",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
