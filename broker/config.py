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
from typing import Any, Literal

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
    annotate
        Run the annotators (catalog matching, sky-map regions and galaxies, CDS).
    bundled_catalogs
        Match against the catalogs shipped with mmbroker (4FGL-DR4, 4LAC-DR3,
        3HSP, Roma-BZCAT5, IceCat-1, 50 Mpc Galaxy Catalog, Swift GRB table).
    catalog_files
        Extra catalog declarations (YAML files, see ``mmbroker catalogs add``);
        ``<state_dir>/catalogs.yaml`` is always read when it exists.
    disabled_catalogs
        Names of catalogs not to match against.
    galaxy_catalog, top_galaxies
        Catalog whose sources are ranked inside GW sky maps, and how many of
        them are attached to the alert.
    max_matches_per_catalog
        Matches kept per alert and catalog, nearest first (the total is recorded).
    simbad, xmatch_tables
        Remote CDS annotators: nearest SIMBAD objects, and CDS XMatch against
        these VizieR tables (e.g. ``vizier:II/246/out``).  Off by default: the
        embedded demo runs without network.
    cds_radius_arcsec, cds_deadline_s, cds_xmatch_url
        Match radius (arcsec), per-batch deadline (s) and XMatch endpoint (a
        mirror, or a local replay server in tests) of the CDS annotators.
    cds_max_error_arcsec
        Only alerts localized at least this well (error radius, arcsec) are
        sent to CDS: a few arcsec around the centre of a degree-wide region
        (or a sky map's peak) says nothing about the source.
    cds_failure_threshold, cds_reset_s
        Circuit breaker: open after this many consecutive failures, try again after (s).
    redis_url
        Redis for state shared between workers (CDS cache); empty: in-process.
    filters
        Run the filters (built-in ones, the user folder, ``mmbroker.filters`` entry points).
    filter_dir
        Folder of user filter files (``*.py``); default ``<state_dir>/filters``.
    filter_time_budget_s
        Time a filter may take on one alert (s); a user filter past it is killed
        and disabled, the other filters' output is not delayed beyond it.
    filter_error_budget
        Errors after which a filter is disabled (reported, not the broker).
    filter_memory_mb
        Address-space limit of the process running user filters (MB).
    filter_raise_errors
        Raise filter errors instead of isolating them (for tests).
    state_backend
        Where the hot state lives (recent-alert window, event revisions,
        de-duplication, coincidence claims): ``memory`` (one worker, the
        embedded default) or ``redis`` (``redis_url``; workers scale out).
    window_retention_s
        How long alerts stay in the recent-alert window, s of event time
        behind the newest event time seen (stream time, so replays work).
    coincidences
        Search for multi-messenger coincidences.
    coincidence_rules_file
        YAML file replacing the default (RAVEN) coincidence rules.
    neutrino_grb_window_s
        Window of the ``neutrino/grb`` rule on t_grb - t_neutrino (s).
    archive_backend
        ``sqlite`` (``archive_path``, the default) or ``elasticsearch``.
    elasticsearch_url, elasticsearch_index
        Elasticsearch (or OpenSearch-compatible) endpoint and index prefix.
    ui_port
        Port of the Streamlit dashboard (``mmbroker up`` / ``mmbroker ui``).
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
    annotate: bool = True
    bundled_catalogs: bool = True
    catalog_files: tuple[Path, ...] = ()
    disabled_catalogs: tuple[str, ...] = ()
    galaxy_catalog: str = "50mgc"
    top_galaxies: int = Field(default=20, ge=0)
    max_matches_per_catalog: int = Field(default=5, ge=1)
    simbad: bool = False
    xmatch_tables: tuple[str, ...] = ()
    cds_radius_arcsec: float = Field(default=5.0, gt=0)
    cds_deadline_s: float = Field(default=2.0, gt=0)
    cds_xmatch_url: str | None = None
    cds_max_error_arcsec: float = Field(default=60.0, ge=0)
    cds_failure_threshold: int = Field(default=3, ge=1)
    cds_reset_s: float = Field(default=60.0, gt=0)
    redis_url: SecretStr | None = None
    filters: bool = True
    filter_dir: Path | None = None
    filter_time_budget_s: float = Field(default=1.0, gt=0)
    filter_error_budget: int = Field(default=100, ge=1)
    filter_memory_mb: int = Field(default=2048, ge=64)
    filter_raise_errors: bool = False
    state_backend: Literal["memory", "redis"] = "memory"
    window_retention_s: float = Field(default=3 * 86400.0, gt=0)
    coincidences: bool = True
    coincidence_rules_file: Path | None = None
    neutrino_grb_window_s: tuple[float, float] = (-500.0, 500.0)
    archive_backend: Literal["sqlite", "elasticsearch"] = "sqlite"
    elasticsearch_url: SecretStr | None = None
    elasticsearch_index: str = "mmbroker"
    ui_port: int = Field(default=8501, ge=0, le=65535)
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

    @property
    def user_filter_dir(self) -> Path:
        """Folder of the user's filter files."""
        return self.filter_dir if self.filter_dir is not None else self.state_dir / "filters"

    @property
    def filter_state_file(self) -> Path:
        """Enabled/disabled state of the filters (``mmbroker filters enable|disable``)."""
        return self.state_dir / "filters-state.json"

    @property
    def filter_stats_file(self) -> Path:
        """Per-filter statistics the worker writes for the CLI and the dashboard."""
        return self.state_dir / "filter-stats.json"

    @property
    def user_catalogs_file(self) -> Path:
        """Where ``mmbroker catalogs add`` and ``fetch`` register catalogs."""
        return self.state_dir / "catalogs.yaml"

    # Topic names -----------------------------------------------------------
    @property
    def alerts_topic(self) -> str:
        """Topic receiving every alert."""
        return f"{self.prefix}.alerts"

    @property
    def dlq_topic(self) -> str:
        """Dead-letter topic."""
        return f"{self.prefix}.dlq"

    @property
    def coincidence_topic(self) -> str:
        """Topic receiving every coincidence (and its withdrawal)."""
        return f"{self.prefix}.coincidence"

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
