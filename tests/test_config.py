# SPDX-License-Identifier: Apache-2.0
"""Settings precedence, secrets, and the librdkafka configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Settings, load_settings
from broker.errors import ConfigError
from broker.kafka.clients import client_config


def test_precedence_defaults_file_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "mmbroker.yaml"
    cfg.write_text("prefix: fromfile\nbatch_size: 7\ngroup_id: filegroup\nkafka: {linger.ms: 9}\n")
    monkeypatch.setenv("MMBROKER_CONFIG", str(cfg))
    assert Settings().batch_timeout_ms == 20  # default
    assert Settings().prefix == "fromfile"  # file over default
    monkeypatch.setenv("MMBROKER_PREFIX", "fromenv")
    s = Settings()
    assert s.prefix == "fromenv"  # env over file
    assert s.batch_size == 7
    assert s.kafka == {"linger.ms": "9"}
    s = load_settings(prefix="fromcli", group_id=None)  # None: not given on the command line
    assert s.prefix == "fromcli"
    assert s.group_id == "filegroup"


def test_kafka_bootstrap_servers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker1:9092")
    assert Settings().bootstrap_servers == "broker1:9092"


def test_user_kafka_settings_win_over_defaults() -> None:
    s = Settings(bootstrap_servers="b:1", kafka={"linger.ms": "50", "auto.offset.reset": "latest"})
    prod = client_config(s, "producer")
    cons = client_config(s, "consumer")
    assert prod["linger.ms"] == "50"
    assert prod["enable.idempotence"] == "true"
    assert cons["auto.offset.reset"] == "latest"
    assert cons["enable.auto.commit"] == "false"
    assert cons["group.id"] == s.group_id


def test_gcn_oidc_login_like_gcn_kafka() -> None:
    s = Settings(gcn_client_id="my-id", gcn_client_secret="s3cret")
    conf = client_config(s, "consumer")
    assert conf["bootstrap.servers"] == "kafka.gcn.nasa.gov"
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanisms"] == "OAUTHBEARER"
    assert conf["sasl.oauthbearer.method"] == "oidc"
    assert conf["sasl.oauthbearer.client.id"] == "my-id"
    assert conf["sasl.oauthbearer.client.secret"] == "s3cret"
    assert conf["sasl.oauthbearer.token.endpoint.url"] == "https://auth.gcn.nasa.gov/oauth2/token"
    assert Path(conf["ssl.ca.location"]).is_file()
    test = client_config(Settings(gcn_client_id="x", gcn_client_secret="y", gcn_domain="test.gcn.nasa.gov"), "admin")
    assert test["bootstrap.servers"] == "kafka.test.gcn.nasa.gov"


def test_secrets_are_never_printed() -> None:
    s = Settings(gcn_client_id="my-id", gcn_client_secret="s3cret", kafka={"sasl.password": "pw"})
    for text in (str(s), repr(s), str(s.redacted())):
        assert "s3cret" not in text
        assert "pw'" not in text


def test_missing_secret_or_cluster_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        client_config(Settings(gcn_client_id="x"), "consumer")
    with pytest.raises(ConfigError):
        client_config(Settings(), "consumer")
