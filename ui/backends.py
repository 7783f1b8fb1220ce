# SPDX-License-Identifier: Apache-2.0
"""Where the dashboard's data come from: settings, the archive, Kafka, the filter files.

The Streamlit process reads its settings like every broker process
(``MMBROKER_*`` environment variables, ``MMBROKER_CONFIG``); ``mmbroker ui``
and ``mmbroker up`` pass the command line's settings that way.  Nothing here
touches Streamlit: the pages cache these objects with ``st.cache_resource``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.archive import Archive, open_archive
from broker.cli.common import bootstrap_file
from broker.config import Settings, load_settings
from broker.errors import ArchiveError, BrokerError, KafkaError
from broker.model import Alert, Coincidence


def current_settings(base: Settings | None = None) -> Settings:
    """Settings from the environment, pointing at a running ``mmbroker up`` when no cluster is configured."""
    settings = base if base is not None else load_settings()
    if settings.bootstrap_servers:
        return settings
    f = bootstrap_file(settings)
    try:
        address = f.read_text().strip()
    except OSError:
        return settings
    return settings.model_copy(update={"bootstrap_servers": address}) if address else settings


# --------------------------------------------------------------------------------------------- archive


def open_archive_readonly(settings: Settings) -> Archive:
    """Open the configured archive for reading.

    A SQLite archive must exist already: the dashboard never creates an empty
    one (it would hide a wrong path).

    Raises
    ------
    ArchiveError
        If the archive cannot be opened or does not answer.
    """
    if settings.archive_backend == "sqlite":
        path = Path(settings.archive_path)
        if not path.is_file():
            raise ArchiveError(f"SQLite archive {path} does not exist")
    try:
        archive = open_archive(settings)
    except BrokerError:
        raise
    except Exception as exc:  # driver errors of any backend: the page shows them as "unavailable"
        raise ArchiveError(f"cannot open the {settings.archive_backend} archive: {exc}") from exc
    check_archive(archive, settings)
    return archive


def check_archive(archive: Any, settings: Settings) -> None:
    """Raise :class:`ArchiveError` if ``archive`` does not answer (``ping``) or its file is gone."""
    if settings.archive_backend == "sqlite" and not Path(settings.archive_path).is_file():
        raise ArchiveError(f"SQLite archive {settings.archive_path} does not exist any more")
    try:
        if hasattr(archive, "ping"):
            archive.ping()
        else:
            archive.count()
    except BrokerError:
        raise
    except Exception as exc:
        raise ArchiveError(f"the {settings.archive_backend} archive does not answer: {exc}") from exc


def has(archive: Any, method: str) -> bool:
    """Whether the archive backend implements ``method`` yet."""
    return archive is not None and hasattr(archive, method)


def archive_call(archive: Any, method: str, *args: Any, default: Any = None, **kwargs: Any) -> Any:
    """``archive.method(*args, **kwargs)``, or ``default`` when the backend lacks the method.

    Raises
    ------
    ArchiveError
        When the call fails for any other reason than a missing method.
    """
    if not has(archive, method):
        return default
    try:
        return getattr(archive, method)(*args, **kwargs)
    except BrokerError:
        raise
    except Exception as exc:
        raise ArchiveError(f"archive {method} failed: {type(exc).__name__}: {exc}") from exc


def recent_alerts_from_archive(archive: Any, limit: int) -> list[Alert]:
    """The ``limit`` most recently archived alerts, decoded (empty when the backend cannot list them)."""
    summaries = archive_call(archive, "recent", limit, default=[])
    out: list[Alert] = []
    for s in summaries:
        alert = archive_call(archive, "get", s.broker_id)
        if alert is not None:
            out.append(alert)
    return out


def coincidences_of(alerts: list[Alert], archive: Any, event_key: str | None = None) -> list[Coincidence]:
    """Coincidences from the archive (when it has them) and carried by ``alerts``, latest status per id."""
    found: dict[str, Coincidence] = {}
    for a in alerts:
        for c in a.coincidences:
            if event_key is None or c.involves(event_key):
                found[c.coincidence_id] = c
    if archive is not None:
        for c in archive_call(archive, "coincidences", event_key, default=[]) or []:
            found[c.coincidence_id] = c
    return list(found.values())


# --------------------------------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class TopicInfo:
    """A topic of the cluster."""

    name: str
    partitions: int


def tag_topics(settings: Settings, timeout_s: float = 5.0) -> list[TopicInfo]:
    """The tag topics (``<prefix>.tag.*``) of the cluster, sorted by name.

    Raises
    ------
    KafkaError
        If the cluster does not answer.
    """
    from confluent_kafka.admin import AdminClient

    from broker.kafka.clients import client_config

    if not settings.bootstrap_servers and "bootstrap.servers" not in settings.kafka and not settings.gcn_client_id:
        raise KafkaError("no Kafka cluster: start 'mmbroker up' or set KAFKA_BOOTSTRAP_SERVERS")
    admin = AdminClient(dict(client_config(settings, "admin")))
    try:
        md = admin.list_topics(timeout=timeout_s)
    except Exception as exc:
        raise KafkaError(f"cannot list the topics of {settings.bootstrap_servers or 'the cluster'}: {exc}") from exc
    prefix = settings.tag_topic("")
    return [TopicInfo(name, len(md.topics[name].partitions)) for name in sorted(md.topics) if name.startswith(prefix)]


# --------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class FilterRow:
    """One filter as the filters page shows it."""

    name: str
    version: str
    kind: str
    enabled: bool
    description: str
    tags: tuple[str, ...]
    origin: str
    reason: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterOverview:
    """The registry, the state file and the worker's statistics, merged."""

    rows: tuple[FilterRow, ...]
    refused: tuple[str, ...]
    pending: tuple[str, ...]
    stats_written: str | None
    stats_error: str | None


def read_filter_stats(path: Path) -> tuple[dict[str, Any], str | None]:
    """The stats file the worker writes (``{}`` if absent) and an error message if it is unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"cannot read {path}: {exc}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {}, f"{path} is not valid JSON: {exc}"
    return (data, None) if isinstance(data, dict) else ({}, f"{path}: expected a JSON object")


def filter_overview(settings: Settings, loader: Callable[..., Any] | None = None) -> FilterOverview:
    """Every filter: built-ins from the registry, contributed ones from the worker's statistics.

    The dashboard does not import user filters (contributed code runs only in
    the worker's sandbox): user files are listed from the statistics the worker
    wrote, or as pending when the worker has not registered them yet.
    """
    from broker.filter_registry import load_registry

    load = loader or load_registry
    user_dir = settings.user_filter_dir if settings.user_filter_dir.is_dir() else None
    registry = load(settings.filter_state_file, user_dir=user_dir, import_user=False)
    stats, stats_error = read_filter_stats(settings.filter_stats_file)
    per_filter: dict[str, Any] = stats.get("filters", {}) if isinstance(stats.get("filters"), dict) else {}
    rows: list[FilterRow] = []
    for info in registry:
        st = registry.state(info.name)
        rows.append(FilterRow(
            name=info.name, version=info.version, kind="built-in" if info.trusted else info.ref.kind,
            enabled=st.enabled, description=info.description, tags=tuple(info.tags), origin=info.ref.origin,
            reason=st.reason, stats=dict(per_filter.get(info.name) or {}),
        ))
    known = {r.name for r in rows}
    for name, entry in per_filter.items():
        if name in known or not isinstance(entry, dict):
            continue
        st = registry.state(name)
        enabled = bool(entry.get("enabled", True)) and st.enabled
        rows.append(FilterRow(
            name=name, version=str(entry.get("version", "?")), kind="user", enabled=enabled, description="",
            tags=tuple(entry.get("tags", {}) or ()), origin=str(entry.get("origin", "")),
            reason=st.reason or str(entry.get("reason") or ""), stats=dict(entry),
        ))
    registered = {r.origin.split(":")[0] for r in rows}
    pending = tuple(ref.origin for ref in registry.pending if ref.origin not in registered)
    refused = tuple(str(e) for e in registry.errors) + tuple(str(e) for e in stats.get("refused", []) or [])
    return FilterOverview(tuple(rows), tuple(dict.fromkeys(refused)), pending, stats.get("written"), stats_error)
