# SPDX-License-Identifier: Apache-2.0
"""The filter stage: tags and annotations on real alerts, failures, statistics, metrics, error budget."""

from __future__ import annotations

import json
import logging
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from broker.filter_registry import Registry, load_registry
from broker.filter_stage import FilterFailure, FilterMetrics, FilterStage, FilterStats
from broker.filtering import FilterResult
from broker.model import Alert
from broker.sandbox import Sandbox, Skipped
from tests.corpus import parsed_alerts
from tests.filter_sources import BRIGHT_NU, MESSENGER_ECHO

BUILTINS = (
    """
from broker.filtering import Filter, FilterResult


"""
    + BRIGHT_NU
    + MESSENGER_ECHO
    + """

class Fragile(Filter):
    name = "fragile"
    version = "0.9"
    description = "fails on GW alerts"
    tags = {"fragile-ok": "survived"}

    def run(self, alert):
        if alert.messenger == "gw":
            raise RuntimeError(f"GW alert {alert.event_id} not handled")
        return None


class Silent(Filter):
    name = "silent"
    version = "1"
    description = "never emits anything"
    tags = {"silent": "never emitted"}

    def run(self, alert):
        return None
"""
)


@pytest.fixture(scope="module")
def alerts() -> list[Alert]:
    return parsed_alerts()


@pytest.fixture
def builtin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A trusted filter package (stands in for ``filters``), importable for this test."""
    name = f"mmb_builtins_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "site" / name
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "science.py").write_text(BUILTINS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return name


def builtin_registry(package: str, state: Path | None = None) -> Registry:
    registry = load_registry(state, builtin_package=package, entry_point_group=None)
    assert registry.errors == []
    assert all(i.trusted for i in registry)
    return registry


def sample(metrics: FilterMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_builtins_tag_annotate_and_fail_in_isolation(builtin_package: str, alerts: list[Alert]) -> None:
    metrics = FilterMetrics(CollectorRegistry())
    stage = FilterStage(builtin_registry(builtin_package), None, error_budget=1000, time_budget_s=1.0, metrics=metrics)
    out = stage.process(alerts)

    assert [a.broker_id for a in out] == [a.broker_id for a in alerts]
    gw = [a for a in alerts if a.messenger == "gw"]
    with_signalness = [a for a in alerts if a.properties.get("signalness") is not None]
    bright = [a for a in with_signalness if float(a.properties["signalness"]) >= 0.5]
    assert gw
    assert bright
    assert len(with_signalness) > len(bright)

    for before, after in zip(alerts, out, strict=True):
        expected = {"from-gw" if before.messenger == "gw" else "from-elsewhere"}
        if before in bright:
            expected.add("bright-nu")
        assert set(after.tags) == set(before.tags) | expected
        added = after.annotations[len(before.annotations) :]
        names = [a.annotator for a in added]
        assert names == (["filter:bright-nu"] if before in bright else []) + ["filter:messenger-echo"]
        if before in bright:
            assert added[0].version == "1.0"
            assert added[0].properties == {"signalness": before.properties["signalness"]}
        assert added[-1].version == "2.1"
        assert added[-1].properties == {}

    failures = stage.take_failures()
    assert [(f.broker_id, f.filter, f.version) for f in failures] == [(a.broker_id, "fragile", "0.9") for a in gw]
    for f, a in zip(failures, gw, strict=True):
        assert f.reason.startswith(f"RuntimeError: GW alert {a.event_id} not handled (at ")
    assert stage.take_failures() == []

    n = len(alerts)
    bn = stage.stats["bright-nu"]
    assert (bn.calls, bn.skips, bn.errors) == (len(with_signalness), n - len(with_signalness), 0)
    assert bn.tags == {"bright-nu": len(bright)}
    fr = stage.stats["fragile"]
    assert (fr.calls, fr.skips, fr.errors) == (n, 0, len(gw))
    assert fr.last_error == failures[-1].reason
    assert stage.stats["messenger-echo"].tags == {"from-gw": len(gw), "from-elsewhere": n - len(gw)}
    assert stage.stats["silent"].calls == n
    assert not stage.stats["silent"].tags

    assert sample(metrics, "mmbroker_filter_calls_total", filter="bright-nu") == len(with_signalness)
    assert sample(metrics, "mmbroker_filter_skips_total", filter="bright-nu") == n - len(with_signalness)
    assert sample(metrics, "mmbroker_filter_errors_total", filter="fragile") == len(gw)
    assert sample(metrics, "mmbroker_filter_errors_total", filter="bright-nu") == 0
    assert sample(metrics, "mmbroker_filter_tags_total", filter="bright-nu", tag="bright-nu") == len(bright)
    assert sample(metrics, "mmbroker_filter_tags_total", filter="messenger-echo", tag="from-gw") == len(gw)
    for q in (0.5, 0.9, 0.99):
        assert sample(metrics, "mmbroker_filter_runtime_seconds", filter="fragile", quantile=str(q)) == pytest.approx(
            fr.quantiles()[q]
        )
    assert sample(metrics, "mmbroker_filter_enabled", filter="fragile") == 1

    stage.process(alerts)
    assert stage.stats["bright-nu"].calls == 2 * len(with_signalness)
    assert sample(metrics, "mmbroker_filter_calls_total", filter="messenger-echo") == 2 * n


def test_filter_stats_quantiles_and_window() -> None:
    stats = FilterStats("x", "1", window=100)
    assert stats.quantiles() == {0.5: None, 0.9: None, 0.99: None}
    for ms in range(1, 151):
        stats.record(FilterResult(("a",)) if ms % 2 else FilterResult(), ms / 1000)
    stats.record(Skipped("far"), None)
    stats.record("KeyError: 'far'", 0.5)
    window = [ms / 1000 for ms in range(52, 151)] + [0.5]
    assert list(stats.run_times) == window
    q = stats.quantiles()
    assert q == pytest.approx(dict(zip((0.5, 0.9, 0.99), np.quantile(window, [0.5, 0.9, 0.99]), strict=True)))
    assert q[0.5] == pytest.approx(0.1015)
    d = stats.as_dict()
    assert (d["calls"], d["skips"], d["errors"], d["tags"]) == (151, 1, 1, {"a": 75})
    assert d["runtime_s"]["samples"] == 100
    assert d["runtime_s"]["p90"] == pytest.approx(q[0.9])
    assert d["last_error"] == "KeyError: 'far'"


def test_error_budget_disables_and_enable_brings_back(
    builtin_package: str, alerts: list[Alert], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "filters-state.json"
    metrics = FilterMetrics(CollectorRegistry())
    stats_path = tmp_path / "stats" / "filters.json"
    stage = FilterStage(
        builtin_registry(builtin_package, state),
        None,
        error_budget=3,
        time_budget_s=1.0,
        stats_path=stats_path,
        metrics=metrics,
        stats_interval_s=0.0,
    )
    n_gw = sum(a.messenger == "gw" for a in alerts)
    assert n_gw >= 3
    with caplog.at_level(logging.WARNING):
        stage.process(alerts)
    failures = stage.take_failures()
    assert len(failures) == n_gw
    saved = json.loads(state.read_text())["fragile"]
    assert saved["enabled"] is False
    assert saved["reason"] == (
        f"{n_gw} errors reached the error budget of 3 (last, on alert {failures[-1].broker_id}: {failures[-1].reason})"
    )
    assert "filter fragile disabled: " in caplog.text
    assert sample(metrics, "mmbroker_filter_enabled", filter="fragile") == 0
    assert sample(metrics, "mmbroker_filter_enabled", filter="bright-nu") == 1

    stage.process(alerts)
    assert stage.stats["fragile"].calls == len(alerts), "a disabled filter does not run"
    assert stage.take_failures() == []
    written = json.loads(stats_path.read_text())
    assert written["filters"]["fragile"]["enabled"] is False
    assert written["filters"]["fragile"]["reason"] == saved["reason"]
    assert written["filters"]["fragile"]["errors"] == n_gw
    assert written["filters"]["bright-nu"]["calls"] == 2 * sum("signalness" in a.properties for a in alerts)
    assert written["filters"]["bright-nu"]["runtime_s"]["p50"] > 0

    load_registry(state, builtin_package=builtin_package, entry_point_group=None).enable("fragile")  # the CLI
    stage.process(alerts)
    assert stage.stats["fragile"].calls == 2 * len(alerts)
    assert sample(metrics, "mmbroker_filter_enabled", filter="fragile") == 0, "budget spent again"
    assert len(stage.take_failures()) == n_gw
    stage.close()


def test_raise_errors_switch(builtin_package: str, alerts: list[Alert]) -> None:
    stage = FilterStage(builtin_registry(builtin_package), None, error_budget=1, raise_errors=True)
    with pytest.raises(RuntimeError, match="not handled"):
        stage.process(alerts)


@pytest.mark.slow
def test_stage_runs_contributed_filters_in_the_sandbox(
    builtin_package: str, alerts: list[Alert], tmp_path: Path
) -> None:
    folder = tmp_path / "filters"
    folder.mkdir()
    (folder / "mine.py").write_text(
        textwrap.dedent("""
        from broker.filtering import Filter, FilterResult


        class Loud(Filter):
            name = "loud-grb"
            version = "3.0"
            description = "gamma-ray alerts, with their mission"
            tags = {"loud-grb": "a gamma-ray alert"}
            properties = {"mission": "who saw it"}

            def run(self, alert):
                if alert.messenger == "gamma":
                    return FilterResult(("loud-grb",), {"mission": alert.mission})
                return None


        class Liar(Filter):
            name = "liar"
            version = "0.4"
            description = "emits a tag it did not declare on neutrinos"
            tags = {"declared": "declared"}

            def run(self, alert):
                return ("declared", "surprise") if alert.messenger == "neutrino" else "declared"


        class Looper(Filter):
            name = "looper"
            version = "0.2"
            description = "loops forever"
            tags = {"never": "never emitted"}

            def run(self, alert):
                while True:
                    pass


        class Shadow(Filter):
            name = "fragile"
            version = "5"
            description = "takes a built-in's name"
            tags = {"shadow": "x"}

            def run(self, alert):
                return None
    """)
    )
    state = tmp_path / "filters-state.json"
    registry = load_registry(
        state, builtin_package=builtin_package, user_dir=folder, entry_point_group=None, import_user=False
    )
    sandbox = Sandbox(registry.pending, time_budget_s=0.5, memory_limit_mb=1024, registry=registry)
    (dup,) = registry.errors
    assert str(dup).startswith(
        f"duplicate filter name 'fragile': defined by built-in {builtin_package}.science:Fragile"
        f" and by {(folder / 'mine.py').resolve()}:Shadow"
    )
    metrics = FilterMetrics(CollectorRegistry())
    stage = FilterStage(registry, sandbox, error_budget=10_000, time_budget_s=0.5, metrics=metrics)
    try:
        out = stage.process(alerts)
        gamma = [i for i, a in enumerate(alerts) if a.messenger == "gamma"]
        neutrino = [i for i, a in enumerate(alerts) if a.messenger == "neutrino"]
        assert gamma
        assert neutrino
        for i, (before, after) in enumerate(zip(alerts, out, strict=True)):
            assert ("loud-grb" in after.tags) is (i in gamma)
            assert ("declared" in after.tags) is (i not in neutrino)
            assert ("from-gw" in after.tags) is (before.messenger == "gw")  # the built-ins ran too
            loud = after.annotation("filter:loud-grb")
            if i in gamma:
                assert loud is not None
                assert loud.version == "3.0"
                assert loud.properties == {"mission": before.mission}
            else:
                assert loud is None
        failures = stage.take_failures()
        liar = [f for f in failures if f.filter == "liar"]
        assert liar == [
            FilterFailure(alerts[i].broker_id, "liar", "0.4", "filter 'liar' emitted undeclared tag(s) 'surprise'")
            for i in neutrino
        ]
        looper = [f for f in failures if f.filter == "looper"]
        assert len(looper) == len(alerts)
        assert all(f.version == "0.2" for f in looper)
        reason = f"exceeded time budget of 0.5 s on alert {alerts[0].broker_id}"
        assert looper[0].reason == reason
        assert registry.state("looper").enabled is False
        assert registry.state("looper").reason == reason
        assert json.loads(state.read_text())["looper"]["reason"] == reason
        assert sample(metrics, "mmbroker_filter_enabled", filter="looper") == 0
        assert sample(metrics, "mmbroker_filter_errors_total", filter="liar") == len(neutrino)

        starts = sandbox.starts
        stage.process(alerts)
        assert not [f for f in stage.take_failures() if f.filter == "looper"], "disabled: not run"
        assert sandbox.starts == starts + 1, "restarted once, lazily, without the looper"

        load_registry(state, builtin_package=builtin_package, user_dir=folder, entry_point_group=None).enable("looper")
        stage.process(alerts)
        again = [f for f in stage.take_failures() if f.filter == "looper"]
        assert len(again) == len(alerts)
        assert again[0].reason == reason
        assert registry.state("looper").enabled is False
    finally:
        stage.close()
    assert sandbox._proc is None


def test_empty_registry_and_bad_budget(alerts: list[Alert]) -> None:
    stage = FilterStage(Registry(), None)
    assert stage.process(alerts[:3]) == alerts[:3]
    assert stage.take_failures() == []
    with pytest.raises(ValueError, match="error_budget"):
        FilterStage(Registry(), None, error_budget=0)
