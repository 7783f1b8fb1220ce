# SPDX-License-Identifier: Apache-2.0
"""Settings of a broker process.

One frozen settings model per process.  Precedence, lowest to highest:
defaults < YAML config file (``--config`` or ``MMBROKER_CONFIG``) < environment
(``MMBROKER_*``, plus the conventional ``KAFKA_BOOTSTRAP_SERVERS``) < command
line.  Secrets are :class:`~pydantic.SecretStr`: never printed, never logged.

Kafka client settings pass through untouched as a librdkafka dict
(``kafka:`` in the file, ``MMBROKER_KAFKA='{"linger.ms": "5"}'`` in the
environment); the broker only ``setdefault``s what it needs, so the user's
settings always win.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_INPUT_TOPICS = ("^gcn\\.notices\\..*", "^gcn\\.classic\\.voevent\\..*", "igwn.gwalert")


class Settings(BaseSettings):
    """Settings of the worker and of the CLI commands around it.

    Parameters
    ----------
    bootstrap_servers
        Kafka cluster to use.  Empty: start the embedded broker (``mmbroker up``).
    kafka
        librdkafka settings passed through to every client.
    input_topics
        Topics (or ``^regex`` patterns) the worker consumes.
    prefix
        Output topics are ``<prefix>.alerts``, ``<prefix>.tag.<tag>``, ``<prefix>.dlq``.
    batch_size, batch_timeout_ms
        A micro-batch closes after this many messages or this many ms (ms).
    max_message_bytes
        Larger input payloads are dead-lettered as oversized (bytes).
    parse_processes
        Processes parsing large batches in parallel (0: parse in the worker).
    archive_path
        SQLite archive file.
    gcn_client_id, gcn_client_secret, gcn_domain
        NASA GCN Kafka OIDC client credentials, as gcn-kafka takes them.
    """

    model_config = SettingsConfigDict(
        env_prefix="MMBROKER_",
        frozen=True,
        extra="forbid",
        populate_by_name=True,
    )

    bootstrap_servers: str = Field(
        default="",
        validation_alias=AliasChoices("bootstrap_servers", "MMBROKER_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka: dict[str, str] = Field(default_factory=dict)
    input_topics: tuple[str, ...] = DEFAULT_INPUT_TOPICS
    input_partitions: int = 3
    prefix: str = "mmbroker"
    group_id: str = "mmbroker-worker"
    batch_size: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=20, ge=1)
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    parse_processes: int = Field(default=0, ge=0)
    archive_path: Path = Path(".mmbroker/archive.sqlite3")
    state_dir: Path = Path(".mmbroker")
    gcn_client_id: str | None = None
    gcn_client_secret: SecretStr | None = None
    gcn_domain: str = "gcn.nasa.gov"
    log_level: str = "INFO"
    metrics_port: int | None = None
    config_file: Path | None = Field(default=None, validation_alias=AliasChoices("config_file", "MMBROKER_CONFIG"))

    @field_validator("kafka", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): (str(x).lower() if isinstance(x, bool) else str(x)) for k, x in v.items()}
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: CLI (init) > environment > YAML file > defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path(init_settings)
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    # Topic names -----------------------------------------------------------
    @property
    def alerts_topic(self) -> str:
        """Topic receiving every alert."""
        return f"{self.prefix}.alerts"

    @property
    def dlq_topic(self) -> str:
        """Dead-letter topic."""
        return f"{self.prefix}.dlq"

    def tag_topic(self, tag: str) -> str:
        """Topic receiving the alerts that carry ``tag``."""
        return f"{self.prefix}.tag.{tag}"

    def __repr_args__(self) -> Any:
        """Arguments shown by ``repr``/``str``: passwords in ``kafka`` masked."""
        for name, value in super().__repr_args__():
            if name == "kafka" and isinstance(value, dict):
                value = _mask(value)
            yield name, value

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict safe to print: secrets and SASL passwords masked."""
        out = self.model_dump(mode="json")
        out["kafka"] = _mask(self.kafka)
        return out


def _mask(kafka: dict[str, str]) -> dict[str, str]:
    return {k: ("**********" if _is_secret_key(k) else v) for k, v in kafka.items()}


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(s in k for s in ("password", "secret", "token", "key.pem", "private"))


def _config_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    init = init_settings()
    value = init.get("config_file") or os.environ.get("MMBROKER_CONFIG")
    return Path(value) if value else None


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, command-line ``overrides`` taking precedence.

    ``None`` values in ``overrides`` mean "not given on the command line".
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)
