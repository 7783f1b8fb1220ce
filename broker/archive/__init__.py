# SPDX-License-Identifier: Apache-2.0
"""Archive backends: where every alert revision is kept for search.

The contract is :class:`Archive`, with two backends:
:class:`~broker.archive.sqlite.SQLiteArchive` (the embedded default, one file)
and :class:`~broker.archive.elastic.ElasticsearchArchive` (for scale).
:func:`open_archive` picks one from the settings.  Queries are
:class:`~broker.archive.query.Query` objects; results are
:class:`~broker.archive.query.Page` objects of
:class:`~broker.archive.query.AlertSummary` rows, exported by
:func:`~broker.archive.export.export`.

Sky positions are indexed by HEALPix nested pixel at :data:`HPX_ORDER` in
every backend (see :mod:`broker.archive.index`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from broker.archive.query import AlertSummary, Page, PropertyRange, Query, QueryError
from broker.model import Alert, Coincidence, SourceMessage

if TYPE_CHECKING:
    from broker.config import Settings

__all__ = [
    "HPX_ORDER", "AlertSummary", "Archive", "ArchivedAlert", "Page", "PropertyRange", "Query", "QueryError",
    "open_archive",
]

HPX_ORDER = 14
"""HEALPix order of the position index (nside 16384, pixels of ~12.9 arcsec)."""


@dataclass(frozen=True)
class ArchivedAlert:
    """An alert to archive, with the message it came from and its Avro encoding.

    ``encoded`` is :func:`broker.avro.encode_alert` of ``alert``, computed once
    by the worker for both the topics and the archive.
    """

    alert: Alert
    source: SourceMessage
    encoded: bytes


class Archive(Protocol):
    """What the worker, the CLI and the dashboard need of an archive.

    Every method raises :class:`~broker.errors.ArchiveError` when the backend
    fails or cannot be reached, and :meth:`search` raises
    :class:`~broker.archive.query.QueryError` for a query naming an unknown tag.
    """

    def write_batch(self, items: Sequence[ArchivedAlert]) -> int:
        """Store ``items``; return how many were new (redeliveries, same broker id, are ignored)."""
        ...

    def write_coincidences(self, coincidences: Sequence[Coincidence]) -> None:
        """Upsert coincidences by ``coincidence_id`` (the last written status wins)."""
        ...

    def get(self, broker_id: str) -> Alert | None:
        """The archived alert with ``broker_id``, or None."""
        ...

    def raw(self, sha256: str) -> bytes | None:
        """The raw upstream payload with this SHA-256 (hex), or None."""
        ...

    def revisions(self, event_key: str) -> list[Alert]:
        """Every archived version of one event, oldest first (revision, issue time, arrival)."""
        ...

    def latest(self, event_key: str) -> Alert | None:
        """The latest non-stale version: highest (revision, issued, ingested) with revision_state != "stale"."""
        ...

    def search(self, query: Query) -> Page:
        """One page of the alerts matching ``query``."""
        ...

    def coincidences(self, event_key: str | None = None, limit: int = 200) -> list[Coincidence]:
        """Coincidences of one event (either side), or all when ``event_key`` is None; last written first."""
        ...

    def known_tags(self) -> dict[str, int]:
        """Every tag carried by an archived alert, with its number of alerts."""
        ...

    def recent(self, limit: int = 50) -> list[AlertSummary]:
        """The most recently archived alerts, newest first."""
        ...

    def count(self) -> int:
        """Number of archived alert versions."""
        ...

    def ping(self) -> None:
        """Raise :class:`~broker.errors.ArchiveError` if the backend cannot be reached."""
        ...

    def close(self) -> None:
        """Release the backend."""
        ...


def open_archive(settings: Settings) -> Archive:
    """The archive the settings ask for.

    ``archive_backend`` ``sqlite`` opens ``archive_path``; ``elasticsearch``
    connects to ``elasticsearch_url`` with index prefix ``elasticsearch_index``.

    Raises
    ------
    ConfigError
        If Elasticsearch is chosen without a URL.
    ArchiveError
        If the backend cannot be opened.
    """
    if settings.archive_backend == "elasticsearch":
        from broker.archive.elastic import ElasticsearchArchive
        from broker.errors import ConfigError

        if settings.elasticsearch_url is None:
            raise ConfigError(
                "archive_backend is elasticsearch but elasticsearch_url (MMBROKER_ELASTICSEARCH_URL) is not set"
            )
        return ElasticsearchArchive(settings.elasticsearch_url.get_secret_value(), index=settings.elasticsearch_index)
    from broker.archive.sqlite import SQLiteArchive

    return SQLiteArchive(settings.archive_path)
