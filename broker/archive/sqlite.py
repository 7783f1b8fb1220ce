# SPDX-License-Identifier: Apache-2.0
"""SQLite archive: the embedded default.

One row per alert revision, keyed by :attr:`Alert.broker_id` (a hash of event,
revision and raw payload), so a redelivered notice is stored once.  Tags and
catalog matches (from the annotations) are in their own tables for queries; the raw upstream payload is kept once per
SHA-256; sky positions are indexed by HEALPix nested pixel at
:data:`~broker.archive.HPX_ORDER`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import healpy as hp
import numpy as np

from broker.archive import HPX_ORDER, ArchivedAlert
from broker.avro import decode_alert
from broker.errors import ArchiveError
from broker.model import Alert, Circle, Ellipse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    broker_id TEXT PRIMARY KEY,
    event_key TEXT NOT NULL,
    mission TEXT NOT NULL,
    event_id TEXT NOT NULL,
    revision INTEGER,
    kind TEXT NOT NULL,
    is_test INTEGER NOT NULL,
    messenger TEXT NOT NULL,
    instrument TEXT,
    notice_type TEXT NOT NULL,
    event_time_us INTEGER,
    issued_us INTEGER,
    ingested_us INTEGER NOT NULL,
    ra REAL,
    dec REAL,
    error_radius REAL,
    hpx INTEGER,
    far REAL,
    tags TEXT NOT NULL,
    raw_sha256 TEXT NOT NULL,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset INTEGER NOT NULL,
    avro BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_hpx ON alerts(hpx);
CREATE INDEX IF NOT EXISTS alerts_event ON alerts(event_key, revision);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(event_time_us);
CREATE TABLE IF NOT EXISTS alert_tags (
    tag TEXT NOT NULL,
    broker_id TEXT NOT NULL,
    PRIMARY KEY (tag, broker_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_matches (
    broker_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    catalog TEXT NOT NULL,
    source_id TEXT NOT NULL,
    separation REAL NOT NULL,
    containment REAL,
    PRIMARY KEY (broker_id, annotator, catalog, source_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_matches_source ON alert_matches(catalog, source_id);
CREATE TABLE IF NOT EXISTS raw_payloads (
    sha256 TEXT PRIMARY KEY,
    payload BLOB NOT NULL
) WITHOUT ROWID;
"""


_INSERT_ALERT = "INSERT OR IGNORE INTO alerts VALUES (" + ",".join("?" * 24) + ")"  # noqa: S608 - fixed text


def _us(t: Any) -> int | None:
    return None if t is None else int(round(t.timestamp() * 1e6))


def _error_radius(alert: Alert) -> float | None:
    r = alert.region
    if isinstance(r, Circle):
        return r.radius
    if isinstance(r, Ellipse):
        return r.semi_major
    return None


class SQLiteArchive:
    """Alerts in a SQLite file (WAL mode, one transaction per batch).

    Parameters
    ----------
    path
        Database file; parent folders are created.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open archive {self.path}: {exc}") from exc

    @staticmethod
    def _row(item: ArchivedAlert, pos: tuple[float, float] | None, hpx: int | None, now_us: int) -> tuple[Any, ...]:
        a, src = item.alert, item.source
        return (
            a.broker_id, a.event_key, a.mission, a.event_id, a.revision, a.kind, int(a.is_test), a.messenger,
            a.instrument, a.notice_type, _us(a.event_time), _us(a.issued), now_us,
            None if pos is None else pos[0], None if pos is None else pos[1], _error_radius(a), hpx, a.far,
            json.dumps(list(a.tags)), a.provenance.raw_sha256, src.topic, src.partition, src.offset,
            item.encoded,
        )

    @staticmethod
    def _pixels(positions: list[tuple[float, float] | None]) -> list[int | None]:
        """HEALPix nested pixels at HPX_ORDER of the positions, in one vectorised call."""
        known = [i for i, p in enumerate(positions) if p is not None]
        out: list[int | None] = [None] * len(positions)
        if known:
            ra = np.array([positions[i][0] for i in known])  # type: ignore[index]
            dec = np.array([positions[i][1] for i in known])  # type: ignore[index]
            pix = hp.ang2pix(1 << HPX_ORDER, ra, dec, nest=True, lonlat=True)
            for i, p in zip(known, np.atleast_1d(pix), strict=True):
                out[i] = int(p)
        return out

    def write_batch(self, items: Sequence[ArchivedAlert]) -> int:
        """Store a batch in one transaction; return the number of new alerts.

        Raises
        ------
        ArchiveError
            On any database failure (the transaction is rolled back).
        """
        now_us = int(time.time() * 1e6)
        positions = [i.alert.position for i in items]
        rows = [
            self._row(i, pos, hpx, now_us)
            for i, pos, hpx in zip(items, positions, self._pixels(positions), strict=True)
        ]
        try:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            cur.executemany(
                _INSERT_ALERT,
                rows,
            )
            new = self._db.total_changes - before
            cur.executemany(
                "INSERT OR IGNORE INTO alert_tags VALUES (?, ?)",
                [(t, i.alert.broker_id) for i in items for t in i.alert.tags],
            )
            cur.executemany(
                "INSERT OR IGNORE INTO alert_matches VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (i.alert.broker_id, an.annotator, m.catalog, m.source_id, m.separation, m.containment)
                    for i in items
                    for an in i.alert.annotations
                    for m in an.matches
                ],
            )
            cur.executemany(
                "INSERT OR IGNORE INTO raw_payloads VALUES (?, ?)",
                [(i.alert.provenance.raw_sha256, i.source.value) for i in items],
            )
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise ArchiveError(f"archive write of {len(items)} alerts failed: {exc}") from exc
        return new

    # Read side (the search issue builds the full query language on this) --------
    def count(self) -> int:
        """Number of archived alert revisions."""
        row = self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()
        return int(row[0])

    def broker_ids(self) -> list[str]:
        """Every archived broker id (with multiplicity, which must be one)."""
        return [r[0] for r in self._db.execute("SELECT broker_id FROM alerts")]

    def get(self, broker_id: str) -> Alert | None:
        """The archived alert with ``broker_id``, or None."""
        row = self._db.execute("SELECT avro FROM alerts WHERE broker_id = ?", (broker_id,)).fetchone()
        return None if row is None else decode_alert(row[0])

    def raw(self, sha256: str) -> bytes | None:
        """The raw upstream payload with this digest, or None."""
        row = self._db.execute("SELECT payload FROM raw_payloads WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else bytes(row[0])

    def with_tag(self, tag: str) -> set[str]:
        """Broker ids of the alerts carrying ``tag``."""
        return {r[0] for r in self._db.execute("SELECT broker_id FROM alert_tags WHERE tag = ?", (tag,))}

    def matched_to(self, catalog: str, source_id: str) -> set[str]:
        """Broker ids of the alerts an annotator matched to this catalog source."""
        rows = self._db.execute(
            "SELECT broker_id FROM alert_matches WHERE catalog = ? AND source_id = ?", (catalog, source_id)
        )
        return {r[0] for r in rows}

    def revisions(self, event_key: str) -> Iterator[Alert]:
        """Every archived revision of one event, oldest first."""
        rows = self._db.execute(
            "SELECT avro FROM alerts WHERE event_key = ? ORDER BY revision, issued_us, ingested_us", (event_key,)
        )
        for (blob,) in rows:
            yield decode_alert(blob)

    def cone(self, ra: float, dec: float, radius: float) -> list[str]:
        """Broker ids whose best position lies within ``radius`` deg of (ra, dec) deg.

        HEALPix pixel ranges at a coarse order select candidates through the
        index; an exact angular-separation cut decides.
        """
        coarse = int(np.clip(np.floor(np.log2(60.0 / max(radius, 1e-6))), 0, HPX_ORDER))
        vec = hp.ang2vec(ra, dec, lonlat=True)
        pix = hp.query_disc(1 << coarse, vec, np.radians(radius), inclusive=True, nest=True)
        shift = 2 * (HPX_ORDER - coarse)
        rows: list[tuple[str, float, float]] = []
        for p in np.asarray(pix, dtype=np.int64):
            rows.extend(
                self._db.execute(
                    "SELECT broker_id, ra, dec FROM alerts WHERE hpx >= ? AND hpx < ?",
                    (int(p) << shift, (int(p) + 1) << shift),
                )
            )
        if not rows:
            return []
        r = np.radians([x[1] for x in rows])
        d = np.radians([x[2] for x in rows])
        ra0, dec0 = np.radians(ra), np.radians(dec)
        cos_sep = np.sin(d) * np.sin(dec0) + np.cos(d) * np.cos(dec0) * np.cos(r - ra0)
        sep = np.degrees(np.arccos(np.clip(cos_sep, -1.0, 1.0)))
        return [rows[i][0] for i in np.flatnonzero(sep <= radius)]

    def close(self) -> None:
        """Close the database."""
        self._db.close()
