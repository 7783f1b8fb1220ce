# SPDX-License-Identifier: Apache-2.0
"""Fixtures: a real Kafka-compatible broker process per session, factories per test.

The broker is the embedded Tansu binary on a free loopback port, unless
``KAFKA_BOOTSTRAP_SERVERS`` names a real cluster, which is then used instead.
Each test gets its own topic prefix and consumer group, so tests never see
each other's messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.kafka.embedded import EmbeddedKafka


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bootstrap.servers`` of a running Kafka-compatible broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedKafka(log_path=log) as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture
def settings_factory(kafka_bootstrap: str, tmp_path: Path) -> Callable[..., Settings]:
    """Make settings with a unique prefix, input topic and group for this test."""

    def make(**overrides: Any) -> Settings:
        uid = uuid.uuid4().hex[:10]
        base: dict[str, Any] = {
            "bootstrap_servers": kafka_bootstrap,
            "prefix": f"t{uid}",
            "group_id": f"g{uid}",
            "input_topics": (f"t{uid}.input",),
            "archive_path": tmp_path / f"{uid}.sqlite3",
            "state_dir": tmp_path / uid,
        }
        base.update(overrides)
        return Settings(**base)

    return make
