# SPDX-License-Identifier: Apache-2.0
"""Options and settings shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from broker.config import Settings, load_settings
from broker.errors import ConfigError


def add_settings_args(p: argparse.ArgumentParser) -> None:
    """Options that override settings (each defaults to 'not given')."""
    p.add_argument("--config", dest="config_file", type=Path, help="YAML settings file")
    p.add_argument("--bootstrap-servers", help="Kafka cluster (default: KAFKA_BOOTSTRAP_SERVERS or the embedded one)")
    p.add_argument("--prefix", help="output topic prefix (default mmbroker)")
    p.add_argument("--state-dir", type=Path, help="folder of the archive and the embedded broker's address")


def settings_from(args: argparse.Namespace, **more: object) -> Settings:
    """Settings with the command line taking precedence."""
    given = {k: getattr(args, k, None) for k in ("config_file", "bootstrap_servers", "prefix", "state_dir")}
    state_dir = given.get("state_dir")
    if state_dir is not None:
        more.setdefault("archive_path", Path(str(state_dir)) / "archive.sqlite3")
    return load_settings(**given, **more)


def bootstrap_file(settings: Settings) -> Path:
    """Where ``mmbroker up`` writes the embedded broker's address."""
    return settings.state_dir / "bootstrap"


def with_running_cluster(settings: Settings) -> Settings:
    """Settings pointing at the configured cluster, else at a running ``mmbroker up``.

    Raises
    ------
    ConfigError
        If neither is available.
    """
    if settings.bootstrap_servers:
        return settings
    f = bootstrap_file(settings)
    if f.exists():
        return settings.model_copy(update={"bootstrap_servers": f.read_text().strip()})
    raise ConfigError("no Kafka cluster: set KAFKA_BOOTSTRAP_SERVERS, pass --bootstrap-servers, or start 'mmbroker up'")
