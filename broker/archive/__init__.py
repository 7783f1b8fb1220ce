# SPDX-License-Identifier: Apache-2.0
"""Archive backends: where every alert revision is kept for search.

The contract is :class:`Archive`; :class:`~broker.archive.sqlite.SQLiteArchive`
is the embedded default.  Sky positions are indexed by HEALPix nested pixel
at :data:`HPX_ORDER` in every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.model import Alert, SourceMessage

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
    """What the worker needs of an archive."""

    def write_batch(self, items: Sequence[ArchivedAlert]) -> int:
        """Store ``items`` atomically; return how many were new (redeliveries are ignored)."""
        ...

    def close(self) -> None:
        """Release the backend."""
        ...
