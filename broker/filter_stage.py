# SPDX-License-Identifier: Apache-2.0
"""The filter stage of the pipeline: run every enabled filter on a batch, measured and isolated.

Built-in filters (trusted) run in the worker process; contributed ones run in
the :class:`~broker.sandbox.Sandbox` process.  Either way, an alert lacking a
required field is skipped (counted), an exception or an undeclared output is
that filter's error on that alert (counted, and listed as a
:class:`FilterFailure` for the dead-letter topic) and never stops the batch:
the alert goes on with the other filters' tags.  A filter that reaches its
error budget, exceeds its time budget or kills the filter process is
disabled (state file, WARNING log, ``mmbroker_filter_enabled`` 0) until
``mmbroker filters enable`` turns it back on; the stage notices state-file
changes at the start of each batch.

What a filter emits is added to the alert: its tags to ``alert.tags``, and,
when it emitted anything, an :class:`~broker.model.Annotation` named
``filter:<name>`` with its version and properties.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from broker.filter_registry import FilterInfo, Registry, exception_text
from broker.filtering import Filter, FilterError, FilterRegistrationError, FilterResult
from broker.model import Alert, Annotation
from broker.sandbox import AlertOutcome, BatchOutcome, Sandbox, Skipped, execute, missing_requirement

log = logging.getLogger(__name__)

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
"""Run-time quantiles reported per filter."""


@dataclass(frozen=True)
class FilterFailure:
    """A filter failed on an alert; the worker dead-letters it (the alert itself goes on).

    Parameters
    ----------
    broker_id
        The alert (:attr:`~broker.model.Alert.broker_id`).
    filter, version
        The filter.
    reason
        What went wrong (exception and location, undeclared output, time
        budget exceeded, filter process died...).
    """

    broker_id: str
    filter: str
    version: str
    reason: str


@dataclass
class FilterStats:
    """Counters and run times of one filter since the worker started.

    Attributes
    ----------
    calls
        Alerts the filter was run on (successes and errors; skips excluded).
    skips
        Alerts skipped because a required field was absent.
    errors
        Alerts on which it failed.
    tags
        Tag -> number of alerts it gave that tag to.
    run_times
        The last ``window`` run times (s), for the quantiles.
    """

    name: str
    version: str
    window: int = 10_000
    calls: int = 0
    skips: int = 0
    errors: int = 0
    tags: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    run_times: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.run_times = deque(maxlen=self.window)

    def record(self, outcome: AlertOutcome, run_time: float | None) -> None:
        """Count one alert's outcome; ``run_time`` in s (None when the filter did not run)."""
        if isinstance(outcome, Skipped):
            self.skips += 1
            return
        self.calls += 1
        if run_time is not None:
            self.run_times.append(run_time)
        if isinstance(outcome, str):
            self.errors += 1
            self.last_error = outcome
        else:
            self.tags.update(outcome.tags)

    def quantiles(self) -> dict[float, float | None]:
        """Run-time quantiles (s) over the window (numpy linear interpolation); None before any run."""
        if not self.run_times:
            return dict.fromkeys(QUANTILES)
        values = np.quantile(np.fromiter(self.run_times, dtype=float), QUANTILES)
        return {q: float(v) for q, v in zip(QUANTILES, values, strict=True)}

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the dashboard and ``mmbroker filters stats``; run times in s."""
        q = self.quantiles()
        return {
            "name": self.name,
            "version": self.version,
            "calls": self.calls,
            "skips": self.skips,
            "errors": self.errors,
            "tags": dict(sorted(self.tags.items())),
            "runtime_s": {"p50": q[0.5], "p90": q[0.9], "p99": q[0.99], "samples": len(self.run_times)},
            "last_error": self.last_error,
        }


class FilterMetrics:
    """Prometheus metrics of the filters, labelled by filter (and tag, quantile).

    ``mmbroker_filter_calls_total``, ``mmbroker_filter_skips_total``,
    ``mmbroker_filter_errors_total``, ``mmbroker_filter_tags_total{filter,tag}``,
    ``mmbroker_filter_runtime_seconds{filter,quantile}`` (gauges: 0.5, 0.9,
    0.99 over the last run times, s) and ``mmbroker_filter_enabled{filter}`` (1 or 0).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.calls = PromCounter(
            "mmbroker_filter_calls", "Alerts each filter ran on", ["filter"], registry=self.registry
        )
        self.skips = PromCounter(
            "mmbroker_filter_skips", "Alerts skipped for a missing required field", ["filter"], registry=self.registry
        )
        self.errors = PromCounter(
            "mmbroker_filter_errors", "Alerts on which the filter failed", ["filter"], registry=self.registry
        )
        self.tags = PromCounter(
            "mmbroker_filter_tags", "Tags emitted, by filter and tag", ["filter", "tag"], registry=self.registry
        )
        self.runtime = Gauge(
            "mmbroker_filter_runtime_seconds",
            "Run time of one filter on one alert, quantile over the last runs, s",
            ["filter", "quantile"],
            registry=self.registry,
        )
        self.enabled = Gauge(
            "mmbroker_filter_enabled", "Whether the filter runs (1) or not (0)", ["filter"], registry=self.registry
        )

    def observe(self, stats: FilterStats, outcome: BatchOutcome) -> None:
        """Add one batch outcome of a filter (its ``stats`` already updated)."""
        name = outcome.name
        ran = [o for o in outcome.outcomes if not isinstance(o, Skipped)]
        errors = sum(isinstance(o, str) for o in ran)
        self.calls.labels(name).inc(len(ran))
        self.skips.labels(name).inc(len(outcome.outcomes) - len(ran))
        self.errors.labels(name).inc(errors)
        emitted: Counter[str] = Counter()
        for o in ran:
            if isinstance(o, FilterResult):
                emitted.update(o.tags)
        for tag, n in emitted.items():
            self.tags.labels(name, tag).inc(n)
        for q, v in stats.quantiles().items():
            if v is not None:
                self.runtime.labels(name, str(q)).set(v)


class FilterStage:
    """The pipeline stage running the enabled filters on each batch.

    Parameters
    ----------
    registry
        The registered filters and their state (see
        :func:`~broker.filter_registry.load_registry`).
    sandbox
        The filter process for contributed filters (None: built-ins only).
        Closed by :meth:`close`.
    error_budget
        A filter is disabled once it has failed on this many alerts (counted
        from start-up, or from when it was last enabled); at least 1.
    time_budget_s
        Per-alert budget (s).  Built-ins cannot be interrupted: a call over
        budget is logged at WARNING.  (The sandbox enforces its own.)
    stats_path
        JSON file receiving the statistics (atomic writes) every
        ``stats_interval_s`` and at :meth:`close`; None for none.
    metrics
        Prometheus metrics (a private registry when omitted).
    stats_interval_s
        Minimum time between two stats-file writes (s).
    raise_errors
        Raise instead of isolating filter errors (for tests): built-ins'
        exceptions propagate, other errors raise :class:`FilterError`.
    """

    name = "filter"

    def __init__(
        self,
        registry: Registry,
        sandbox: Sandbox | None = None,
        error_budget: int = 100,
        time_budget_s: float = 1.0,
        stats_path: Path | None = None,
        *,
        metrics: FilterMetrics | None = None,
        stats_interval_s: float = 10.0,
        raise_errors: bool = False,
    ) -> None:
        if error_budget < 1:
            raise ValueError("error_budget must be at least 1")
        self.registry = registry
        self.sandbox = sandbox
        self.error_budget = error_budget
        self.time_budget_s = time_budget_s
        self.stats_path = None if stats_path is None else Path(stats_path)
        self.metrics = metrics or FilterMetrics()
        self.stats_interval_s = stats_interval_s
        self.raise_errors = raise_errors
        self.stats: dict[str, FilterStats] = {}
        self.unavailable: dict[str, str] = {}
        self._builtins: dict[str, Filter] = {}
        self._budget_used: dict[str, int] = {}
        self._enabled: dict[str, bool] = {}
        self._failures: list[FilterFailure] = []
        self._last_write = time.monotonic() - stats_interval_s  # the first batch writes the file
        if registry.pending and sandbox is None:
            log.warning(
                "%d contributed filter source(s) not loaded: no sandbox (%s)",
                len(registry.pending),
                ", ".join(r.origin for r in registry.pending),
            )
        for info in registry.trusted():
            self._load_builtin(info)
        sandboxed = set(sandbox.infos) if sandbox is not None else set()
        for info in registry:
            if not info.trusted and info.name not in sandboxed:
                self.unavailable[info.name] = "contributed filter not loaded in the sandbox"
            self.stats[info.name] = FilterStats(info.name, info.version)
            self._budget_used[info.name] = 0
        self._sync_state()

    def _load_builtin(self, info: FilterInfo) -> None:
        try:
            inst = self.registry.load_class(info.name)()
            inst.setup(dict(info.files))
        except Exception as exc:
            if self.raise_errors:
                raise
            err = FilterRegistrationError(
                f"filter {info.name!r} from {info.ref.origin}: setup failed: {exception_text(exc)}"
            )
            self.registry.refuse(err)
            self.unavailable[info.name] = str(err)
            return
        self._builtins[info.name] = inst

    # ---- state

    def _sync_state(self) -> None:
        """Pick up state-file changes (``mmbroker filters enable/disable``)."""
        self.registry.refresh()
        for name in self.registry.infos:
            enabled = self.registry.is_enabled(name) and name not in self.unavailable
            if enabled and self._enabled.get(name) is False:
                log.info("filter %s enabled", name)
                self._budget_used[name] = 0
                if self.sandbox is not None:
                    self.sandbox.include(name)
            self._enabled[name] = enabled
            self.metrics.enabled.labels(name).set(1 if enabled else 0)

    def _disable(self, name: str, reason: str) -> None:
        if self.registry.is_enabled(name):
            self.registry.disable(name, reason)
        self._enabled[name] = False
        self.metrics.enabled.labels(name).set(0)

    # ---- running

    def _run_builtin(self, name: str, inst: Filter, alerts: list[Alert]) -> BatchOutcome:
        info = self.registry.infos[name]
        outcomes: list[AlertOutcome] = []
        times: list[float | None] = []
        idx: list[int] = []
        for i, alert in enumerate(alerts):
            missing = missing_requirement(info, alert)
            outcomes.append(Skipped(missing) if missing is not None else "")
            times.append(None)
            if missing is None:
                idx.append(i)
        catch: tuple[type[BaseException], ...] = () if self.raise_errors else (Exception,)
        results = execute(
            inst,
            [alerts[i] for i in idx],
            single=info.overrides_run,
            batch=info.overrides_run_batch,
            catch=catch,
        )
        slow = 0
        for i, (res, t) in zip(idx, results, strict=True):
            outcomes[i], times[i] = res, t
            slow += t > self.time_budget_s
        if slow:
            log.warning("built-in filter %s took more than %g s on %d alert(s)", name, self.time_budget_s, slow)
        return BatchOutcome(name, info.version, tuple(outcomes), tuple(times))

    def process(self, alerts: list[Alert]) -> list[Alert]:
        """Run the enabled filters on the batch; return the alerts with tags and annotations added.

        Failures are kept for :meth:`take_failures`.
        """
        self._sync_state()
        results: dict[str, BatchOutcome] = {}
        for name, inst in self._builtins.items():
            if self._enabled.get(name):
                results[name] = self._run_builtin(name, inst, alerts)
        if self.sandbox is not None:
            wanted = [n for n in self.sandbox.live if self._enabled.get(n)]
            if wanted and alerts:
                results.update(self.sandbox.run_batch(alerts, wanted))
            for name, reason in list(self.sandbox.excluded.items()):
                if self._enabled.get(name):
                    self._disable(name, reason)

        tags: list[list[str]] = [[] for _ in alerts]
        annotations: list[list[Annotation]] = [[] for _ in alerts]
        for name in self.registry.infos:
            outcome = results.get(name)
            if outcome is not None:
                self._account(outcome, alerts, tags, annotations)
        out = [
            alert.with_annotations(tuple(ann)).with_tags(alert.tags + tuple(t)) if (t or ann) else alert
            for alert, t, ann in zip(alerts, tags, annotations, strict=True)
        ]
        if self.stats_path is not None and time.monotonic() - self._last_write >= self.stats_interval_s:
            self.write_stats()
        return out

    def _account(
        self,
        outcome: BatchOutcome,
        alerts: list[Alert],
        tags: list[list[str]],
        annotations: list[list[Annotation]],
    ) -> None:
        name = outcome.name
        stats = self.stats.setdefault(name, FilterStats(name, outcome.version))
        failures: list[FilterFailure] = []
        for i, (res, t) in enumerate(zip(outcome.outcomes, outcome.run_times, strict=True)):
            stats.record(res, t)
            if isinstance(res, FilterResult):
                if res.tags or res.properties:
                    tags[i].extend(res.tags)
                    annotations[i].append(
                        Annotation(annotator=f"filter:{name}", version=outcome.version, properties=dict(res.properties))
                    )
            elif isinstance(res, str):
                failures.append(FilterFailure(alerts[i].broker_id, name, outcome.version, res))
        self.metrics.observe(stats, outcome)
        if failures:
            log.warning(
                "filter %s %s failed on %d of %d alert(s); first, on %s: %s",
                name,
                outcome.version,
                len(failures),
                len(alerts),
                failures[0].broker_id,
                failures[0].reason,
            )
            if self.raise_errors:
                f = failures[0]
                raise FilterError(f"filter {name!r} {f.version} failed on alert {f.broker_id}: {f.reason}")
            self._failures.extend(failures)
        if outcome.disabled_reason is not None:
            self._disable(name, outcome.disabled_reason)
        elif failures:
            self._budget_used[name] = self._budget_used.get(name, 0) + len(failures)
            if self._budget_used[name] >= self.error_budget:
                self._disable(
                    name,
                    f"{self._budget_used[name]} errors reached the error budget of {self.error_budget} "
                    f"(last, on alert {failures[-1].broker_id}: {failures[-1].reason})",
                )

    def take_failures(self) -> list[FilterFailure]:
        """The failures since the last call (the worker dead-letters them after :meth:`process`)."""
        out, self._failures = self._failures, []
        return out

    # ---- statistics

    def stats_dict(self) -> dict[str, Any]:
        """Everything the dashboard and the CLI show: per-filter stats, state, refusals."""
        filters: dict[str, Any] = {}
        for name, info in self.registry.infos.items():
            st = self.registry.state(name)
            entry = self.stats.get(name, FilterStats(name, info.version)).as_dict()
            entry.update(
                enabled=self._enabled.get(name, False),
                reason=self.unavailable.get(name) or st.reason,
                since=st.as_dict()["since"],
                trusted=info.trusted,
                origin=info.ref.origin,
                error_budget_used=self._budget_used.get(name, 0),
            )
            filters[name] = entry
        return {
            "written": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "error_budget": self.error_budget,
            "filters": filters,
            "refused": [str(e) for e in self.registry.errors],
        }

    def write_stats(self) -> None:
        """Write :meth:`stats_dict` to ``stats_path`` atomically (no-op without a path)."""
        self._last_write = time.monotonic()
        if self.stats_path is None:
            return
        path = self.stats_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.stats_dict(), fh, indent=2)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def close(self) -> None:
        """Write the stats a last time and stop the sandbox."""
        try:
            self.write_stats()
        finally:
            if self.sandbox is not None:
                self.sandbox.close()
