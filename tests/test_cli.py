# SPDX-License-Identifier: Apache-2.0
"""The command line: parse, replay + subscribe, and the embedded ``up``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.archive.sqlite import SQLiteArchive
from broker.cli.main import main
from broker.config import Settings
from broker.replay import guess_topic, notice_paths, sample_dir
from tests.corpus import NOTICES


def test_parse_prints_the_normalized_alert(capsys: pytest.CaptureFixture[str]) -> None:
    f = NOTICES / "gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json"
    assert main(["parse", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["event_name"] == "IceCube-230416A"
    assert out["region"]["radius"] == 0.5
    assert out["messenger"] == "neutrino"


def test_parse_explains_a_rejection(capsys: pytest.CaptureFixture[str]) -> None:
    f = NOTICES / "igwn/gracedb-igwn-alert/gwcelery_S230413b.json"
    assert main(["parse", str(f)]) == 1
    assert json.loads(capsys.readouterr().out)["rejected"] == "not_public_alert"


def test_guess_topic() -> None:
    assert guess_topic(Path("x/gcn-json/icecube/a.json")) == "gcn.notices.icecube"
    assert guess_topic(Path("voevent/fermi/a.xml")) == "gcn.classic.voevent.FERMI"
    assert guess_topic(Path("notices/igwn/voevent/a.xml")) == "igwn.gwalert"


def test_samples_are_real_notices_with_provenance() -> None:
    files = notice_paths([sample_dir()])
    assert len(files) > 100
    for f in files:
        rel = f.relative_to(sample_dir())
        assert (NOTICES / rel).read_bytes() == f.read_bytes(), f"{rel} differs from the test corpus"
    assert (sample_dir() / "igwn" / "PROVENANCE.md").exists()


@pytest.mark.kafka
def test_replay_then_subscribe(settings_factory: Callable[..., Settings], capsys: pytest.CaptureFixture[str]) -> None:
    s = settings_factory()
    common = ["--bootstrap-servers", s.bootstrap_servers, "--prefix", s.prefix]
    f = NOTICES / "gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json"
    assert main(["replay", str(f), "--topic", s.input_topics[0], *common]) == 0
    from tests.test_worker_kafka import run_worker_over

    run_worker_over(s, 1)
    capsys.readouterr()
    assert main(["subscribe", "--tag", "neutrino", "--from-beginning", "--max", "1", "--timeout", "20", *common]) == 0
    line = capsys.readouterr().out
    assert "IceCube/IC86 137840_57034692 rev 1 [initial]" in line
    assert "tags=neutrino" in line


@pytest.mark.kafka
@pytest.mark.slow
def test_up_once_runs_the_demo_end_to_end(tmp_path: Path) -> None:
    """The README's first command, with --once so that it ends."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "up", "--once", "--no-ui", "--port", "0", "--state-dir",
         str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "replayed" in proc.stdout
    assert "S230518h" in proc.stdout
    assert "DLQ" in proc.stdout
    assert "not_public_alert" in proc.stdout
    archive = SQLiteArchive(tmp_path / "archive.sqlite3")
    assert archive.count() > 100
    assert not (tmp_path / "bootstrap").exists()


@pytest.mark.kafka
@pytest.mark.slow
def test_up_uses_a_configured_cluster_instead(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    s = settings_factory()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=s.bootstrap_servers, MMBROKER_GROUP_ID=s.group_id)
    proc = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "up", "--once", "--no-ui", "--prefix", s.prefix, "--state-dir",
         str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "embedded" not in proc.stdout
    from tests.kafka_helpers import read_topic

    alerts = read_topic(s, s.alerts_topic)
    assert len(alerts) == SQLiteArchive(tmp_path / "archive.sqlite3").count() > 100
