# SPDX-License-Identifier: Apache-2.0
"""SQLite archive: the embedded default.

One row per alert revision, keyed by :attr:`Alert.broker_id` (a hash of event,
revision and raw payload), so a redelivered notice is stored once.  Tags,
numeric properties and catalog matches (from the annotations) are in their
own tables for queries; the raw upstream payload is kept once per SHA-256;
sky positions are indexed by HEALPix nested pixel at
:data:`~broker.archive.HPX_ORDER` and by unit vector for the exact cut.

Schema versions (``PRAGMA user_version``): 0 is the file the worker wrote
before search existed; :func:`_migrate_v1` adds the search columns and
tables to such a file in place (one transaction, back-filled from the stored
Avro), so an existing archive stays readable and becomes searchable.

How the queries use the indexes
-------------------------------
``search`` picks one of four plans (the ``EXPLAIN QUERY PLAN`` lines are
those SQLite 3.40 prints for them):

* **cone** (radius up to :data:`~broker.archive.index.CONE_DRIVE_MAX_DEG`):
  the pixel ranges of :func:`~broker.archive.index.cone_ranges` drive a nested
  loop over ``alerts_hpx_t (hpx, t_us)``::

      SCAN json_each VIRTUAL TABLE INDEX 1:
      SEARCH a USING INDEX alerts_hpx_t (hpx>? AND hpx<?)
      CORRELATED SCALAR SUBQUERY 2
      SEARCH g2 USING PRIMARY KEY (tag=? AND t_us=? AND broker_id=?)
      USE TEMP B-TREE FOR ORDER BY

  each range is one index seek; the time bounds are tested on the index
  entry (no table access for alerts outside the time range); the row is read
  for the exact cut (unit vector dot product) and each tag is one primary-key
  probe of ``alert_tags (tag, t_us, broker_id)``.  The surviving rows (a few
  dozen for a 5 deg cone, one year and one tag over a million alerts) are
  sorted.  ``bench/bench_archive.py``: 3-4 ms median, < 20 ms p95 over
  1,000,000 alerts.
* **text** (no small cone, a text of three characters or more found in at
  most :data:`TEXT_DRIVE_MAX` alerts): the trigram full-text index
  ``alert_text`` gives the broker ids containing the needle (``MATCH``, one
  query), and those alerts are fetched, filtered and sorted::

      SCAN json_each VIRTUAL TABLE INDEX 1:
      SEARCH a USING INDEX sqlite_autoindex_alerts_1 (broker_id=?)

  A more common needle is a filter of the time plan instead.

* **tag** (no small cone, at least one tag): ``alert_tags`` is clustered by
  ``(tag, t_us, broker_id)``, so the first tag's rows are walked in result
  order from the cursor on and the scan stops after ``limit + 1`` matches::

      SEARCH g USING PRIMARY KEY (tag=? AND t_us>? AND t_us<?)
      SEARCH a USING INDEX sqlite_autoindex_alerts_1 (broker_id=?)

  (no sort step: the index order is the result order).

* **time** (anything else): ``alerts_t (t_us, broker_id, messenger,
  is_latest)`` is walked in result order (``SCAN a USING INDEX alerts_t``),
  filters tested row by row (the messenger and latest-version filters on the
  index entry itself), stopping after ``limit + 1``.

The total is counted with the same plan, stopping after
:data:`~broker.archive.query.TOTAL_LIMIT` + 1 matches (not at all when the
first page holds every match).  Pagination is keyset:
``(t_us, broker_id) < (?, ?)`` (``>`` ascending) seeks in the same indexes,
so a page costs the same wherever it is and new alerts never shift the
pages a user is reading.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.archive import ArchivedAlert
from broker.archive.index import (
    CONE_DRIVE_MAX_DEG,
    Cone,
    Indexed,
    cone_ranges,
    error_radius,
    indexed,
    rank,
)
from broker.archive.query import TOTAL_LIMIT, AlertSummary, Page, Query, encode_cursor, from_us, to_us
from broker.avro import decode_alert, decode_coincidence, encode_coincidence
from broker.errors import ArchiveError
from broker.model import Alert, Coincidence

log = logging.getLogger(__name__)

TEXT_DRIVE_MAX = 2000
"""A text matching at most this many alerts drives the search from the full-text index; more, the time order does."""

SCHEMA_VERSION = 1

# Version 0: the archive the worker wrote before search (kept verbatim: it is what old files contain).
_SCHEMA_V0 = """
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

# Version 1: search.  Run on a version-0 file (new or old) inside one transaction.
_MIGRATE_V1 = """
ALTER TABLE alerts ADD COLUMN event_name TEXT;
ALTER TABLE alerts ADD COLUMN revision_state TEXT;
ALTER TABLE alerts ADD COLUMN t_us INTEGER;
ALTER TABLE alerts ADD COLUMN cx REAL;
ALTER TABLE alerts ADD COLUMN cy REAL;
ALTER TABLE alerts ADD COLUMN cz REAL;
ALTER TABLE alerts ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN n_matches INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN is_latest INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS alerts_hpx;
DROP INDEX IF EXISTS alerts_time;
ALTER TABLE alert_tags RENAME TO alert_tags_v0;
CREATE TABLE alert_tags (
    tag TEXT NOT NULL,
    t_us INTEGER NOT NULL,
    broker_id TEXT NOT NULL,
    PRIMARY KEY (tag, t_us, broker_id)
) WITHOUT ROWID;
CREATE TABLE alert_properties (
    broker_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (broker_id, name)
) WITHOUT ROWID;
CREATE TABLE tag_counts (
    tag TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE event_latest (
    event_key TEXT PRIMARY KEY,
    broker_id TEXT NOT NULL,
    revision INTEGER,
    issued_us INTEGER,
    ingested_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE coincidences (
    coincidence_id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    status TEXT NOT NULL,
    a_event_key TEXT NOT NULL,
    b_event_key TEXT NOT NULL,
    a_broker_id TEXT NOT NULL,
    b_broker_id TEXT NOT NULL,
    record BLOB NOT NULL,
    updated_us INTEGER NOT NULL
);
"""

# Free text: a trigram full-text index of the search text (substring search through an index; needles of
# three characters or more).  Optional: without FTS5 in the SQLite library, text search scans.
_FTS_V1 = "CREATE VIRTUAL TABLE alert_text USING fts5(broker_id UNINDEXED, text, tokenize='trigram')"

# Indexes are created after the back-fill (cheaper than maintaining them row by row).
_INDEXES_V1 = """
CREATE INDEX alerts_hpx_t ON alerts(hpx, t_us);
CREATE INDEX alerts_t ON alerts(t_us, broker_id, messenger, is_latest);
CREATE INDEX alerts_ingested ON alerts(ingested_us);
CREATE INDEX alert_properties_value ON alert_properties(name, value);
CREATE INDEX coincidences_a ON coincidences(a_event_key);
CREATE INDEX coincidences_b ON coincidences(b_event_key);
CREATE INDEX coincidences_updated ON coincidences(updated_us);
"""

_ALERT_COLUMNS = (
    "broker_id", "event_key", "mission", "event_id", "revision", "kind", "is_test", "messenger", "instrument",
    "notice_type", "event_time_us", "issued_us", "ingested_us", "ra", "dec", "error_radius", "hpx", "far", "tags",
    "raw_sha256", "source_topic", "source_partition", "source_offset", "avro",
    "event_name", "revision_state", "t_us", "cx", "cy", "cz", "search_text", "n_matches", "is_latest",
)
_INSERT_ALERT = (
    f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)}) VALUES ({', '.join('?' * len(_ALERT_COLUMNS))})"  # noqa: S608
)

_SUMMARY = (
    "a.broker_id, a.event_key, a.event_id, a.event_name, a.mission, a.instrument, a.messenger, a.notice_type, "
    "a.kind, a.revision, a.revision_state, a.is_test, a.event_time_us, a.issued_us, a.ingested_us, a.ra, a.dec, "
    "a.error_radius, a.far, a.tags, a.n_matches, a.t_us"
)


def _from_us(us: int) -> datetime:
    t = from_us(us)
    if t is None:
        raise ArchiveError("archive row without an ingestion time")
    return t


def _text(values: Sequence[str]) -> str:
    """Search text column: the lower-cased identifiers, one per line (a needle never spans two)."""
    return "\n".join(values)


class SQLiteArchive:
    """Alerts in a SQLite file (WAL mode, one transaction per batch).

    Parameters
    ----------
    path
        Database file; parent folders are created.  A file written by an
        earlier version is migrated in place.

    Raises
    ------
    ArchiveError
        If the file cannot be opened, is not a database, or cannot be migrated.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache
            self._fts = False
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version < 1:
                self._db.executescript(_SCHEMA_V0)  # a new file starts as version 0 and is migrated like an old one
                self._migrate_v1()
            elif version > SCHEMA_VERSION:
                raise ArchiveError(
                    f"archive {self.path} has schema version {version}; this mmbroker reads up to {SCHEMA_VERSION}"
                )
            self._fts = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alert_text'").fetchone() is not None
        except (sqlite3.Error, OSError) as exc:
            raise ArchiveError(f"cannot open archive {self.path}: {exc}") from exc

    # Schema ---------------------------------------------------------------------------------------------------
    def _migrate_v1(self) -> None:
        """Add the search columns and tables to a version-0 file, back-filled from the stored Avro."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if int(db.execute("PRAGMA user_version").fetchone()[0]) >= 1:  # another process migrated it first
                db.execute("ROLLBACK")
                return
            for stmt in _MIGRATE_V1.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            try:
                db.execute(_FTS_V1)
                self._fts = True
            except sqlite3.OperationalError as exc:  # "no such module: fts5" (or no trigram tokenizer)
                log.warning("archive %s: no full-text index (%s); text search will scan", self.path, exc)
            rows = db.execute("SELECT broker_id, avro, ingested_us FROM alerts ORDER BY ingested_us").fetchall()
            for broker_id, blob, ingested_us in rows:
                alert = decode_alert(blob)
                ix = indexed([alert], ingested_us)[0]
                db.execute(  # every derived column is recomputed from the Avro, the source of truth
                    "UPDATE alerts SET event_time_us = ?, issued_us = ?, ra = ?, dec = ?, error_radius = ?, hpx = ?, "
                    "event_name = ?, revision_state = ?, t_us = ?, cx = ?, cy = ?, cz = ?, search_text = ?, "
                    "n_matches = ? WHERE broker_id = ?",
                    (to_us(alert.event_time), to_us(alert.issued), ix.ra, ix.dec, ix.error_radius, ix.hpx,
                     alert.event_name, alert.revision_state, ix.t_us, *(ix.xyz or (None, None, None)),
                     _text(ix.search_text), ix.n_matches, broker_id),
                )
                self._insert_properties(db, [(broker_id, ix)])
                self._insert_text(db, [(broker_id, ix)])
                self._update_latest(db, [(alert, ix)])
            db.execute(
                "INSERT INTO alert_tags (tag, t_us, broker_id) SELECT g.tag, a.t_us, g.broker_id "
                "FROM alert_tags_v0 g JOIN alerts a ON a.broker_id = g.broker_id"
            )
            db.execute("INSERT INTO tag_counts (tag, n) SELECT tag, COUNT(*) FROM alert_tags GROUP BY tag")
            db.execute("DROP TABLE alert_tags_v0")
            for stmt in _INDEXES_V1.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # Write side -----------------------------------------------------------------------------------------------
    @staticmethod
    def _insert_properties(db: sqlite3.Connection, rows: Sequence[tuple[str, Indexed]]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO alert_properties (broker_id, name, value) VALUES (?, ?, ?)",
            [(bid, name, value) for bid, ix in rows for name, value in ix.properties.items()],
        )

    def _insert_text(self, db: sqlite3.Connection, rows: Sequence[tuple[str, Indexed]]) -> None:
        if self._fts:
            db.executemany("INSERT INTO alert_text (broker_id, text) VALUES (?, ?)",
                           [(bid, _text(ix.search_text)) for bid, ix in rows])

    @staticmethod
    def _update_latest(db: sqlite3.Connection, versions: Sequence[tuple[Alert, Indexed]]) -> None:
        """Move each event's latest pointer (and ``is_latest`` flags) to the best new non-stale version."""
        best: dict[str, tuple[tuple[int, int, int, str], Alert, Indexed]] = {}
        for alert, ix in versions:
            if alert.revision_state == "stale":
                continue
            r = rank(alert.revision, to_us(alert.issued), ix.ingested_us, alert.broker_id)
            cur = best.get(alert.event_key)
            if cur is None or r > cur[0]:
                best[alert.event_key] = (r, alert, ix)
        if not best:
            return
        current = {
            row[0]: row[1:] for row in db.execute(
                "SELECT event_key, broker_id, revision, issued_us, ingested_us FROM event_latest "
                "WHERE event_key IN (SELECT value FROM json_each(?))",
                (json.dumps(list(best)),),
            )
        }
        demote: list[tuple[str]] = []
        promote: list[tuple[str]] = []
        pointers: list[tuple[str, str, int | None, int | None, int]] = []
        for key, (r, alert, ix) in best.items():
            cur = current.get(key)
            if cur is not None:
                if rank(cur[1], cur[2], cur[3], cur[0]) >= r:
                    continue
                demote.append((cur[0],))
            promote.append((alert.broker_id,))
            pointers.append((key, alert.broker_id, alert.revision, to_us(alert.issued), ix.ingested_us))
        db.executemany("UPDATE alerts SET is_latest = 0 WHERE broker_id = ?", demote)
        db.executemany("UPDATE alerts SET is_latest = 1 WHERE broker_id = ?", promote)
        db.executemany(
            "INSERT OR REPLACE INTO event_latest (event_key, broker_id, revision, issued_us, ingested_us) "
            "VALUES (?, ?, ?, ?, ?)",
            pointers,
        )

    def write_batch(self, items: Sequence[ArchivedAlert]) -> int:
        """Store a batch in one transaction; return the number of new alerts.

        Alerts already archived (same broker id) are left as they are.  The
        batch's alerts get consecutive ingestion microseconds in batch order.

        Raises
        ------
        ArchiveError
            On any database failure (the transaction is rolled back).
        """
        unique: dict[str, ArchivedAlert] = {}
        for item in items:
            unique.setdefault(item.alert.broker_id, item)
        if not unique:
            return 0
        batch = list(unique.values())
        ixs = indexed([i.alert for i in batch], int(time.time() * 1e6))
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                existing = {
                    r[0] for r in db.execute(
                        "SELECT broker_id FROM alerts WHERE broker_id IN (SELECT value FROM json_each(?))",
                        (json.dumps(list(unique)),),
                    )
                }
                new = [(i, ix) for i, ix in zip(batch, ixs, strict=True) if i.alert.broker_id not in existing]
                db.executemany(_INSERT_ALERT, [self._row(i, ix) for i, ix in new])
                db.executemany(
                    "INSERT INTO alert_tags (tag, t_us, broker_id) VALUES (?, ?, ?)",
                    [(t, ix.t_us, i.alert.broker_id) for i, ix in new for t in set(i.alert.tags)],
                )
                counts: dict[str, int] = {}
                for i, _ in new:
                    for t in set(i.alert.tags):
                        counts[t] = counts.get(t, 0) + 1
                db.executemany(
                    "INSERT INTO tag_counts (tag, n) VALUES (?, ?) ON CONFLICT (tag) DO UPDATE SET n = n + excluded.n",
                    list(counts.items()),
                )
                self._insert_properties(db, [(i.alert.broker_id, ix) for i, ix in new])
                self._insert_text(db, [(i.alert.broker_id, ix) for i, ix in new])
                db.executemany(
                    "INSERT OR IGNORE INTO alert_matches VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (i.alert.broker_id, an.annotator, m.catalog, m.source_id, m.separation, m.containment)
                        for i, _ in new
                        for an in i.alert.annotations
                        for m in an.matches
                    ],
                )
                raws = {i.alert.provenance.raw_sha256: i.source.value for i, _ in new}
                if raws:  # payloads already kept (replays, the same notice on two topics) are not re-bound
                    raws_kept = {r[0] for r in db.execute(
                        "SELECT sha256 FROM raw_payloads WHERE sha256 IN (SELECT value FROM json_each(?))",
                        (json.dumps(list(raws)),),
                    )}
                    db.executemany("INSERT INTO raw_payloads VALUES (?, ?)",
                                   [(k, v) for k, v in raws.items() if k not in raws_kept])
                self._update_latest(db, [(i.alert, ix) for i, ix in new])
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise ArchiveError(f"archive write of {len(items)} alerts to {self.path} failed: {exc}") from exc
        return len(new)

    @staticmethod
    def _row(item: ArchivedAlert, ix: Indexed) -> tuple[Any, ...]:
        a, src = item.alert, item.source
        x, y, z = ix.xyz or (None, None, None)
        return (
            a.broker_id, a.event_key, a.mission, a.event_id, a.revision, a.kind, int(a.is_test), a.messenger,
            a.instrument, a.notice_type, to_us(a.event_time), to_us(a.issued), ix.ingested_us,
            ix.ra, ix.dec, error_radius(a), ix.hpx, a.far, json.dumps(list(a.tags)),
            a.provenance.raw_sha256, src.topic, src.partition, src.offset, item.encoded,
            a.event_name, a.revision_state, ix.t_us, x, y, z, _text(ix.search_text), ix.n_matches, 0,
        )

    def write_coincidences(self, coincidences: Sequence[Coincidence]) -> None:
        """Upsert coincidences by id; the last written status (and statistics) win.

        Raises
        ------
        ArchiveError
            On any database failure.
        """
        now_us = int(time.time() * 1e6)
        rows = [
            (c.coincidence_id, c.rule, c.status, c.a_event_key, c.b_event_key, c.a_broker_id, c.b_broker_id,
             encode_coincidence(c), now_us + k)
            for k, c in enumerate(coincidences)
        ]
        with self._lock, self._reading("write coincidences"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO coincidences VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # Read side ------------------------------------------------------------------------------------------------
    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise ArchiveError(f"archive {self.path}: {what} failed: {exc}") from exc

    def _all(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._reading(what):
            return self._db.execute(sql, params).fetchall()

    def count(self) -> int:
        """Number of archived alert revisions."""
        return int(self._all("count", "SELECT COUNT(*) FROM alerts")[0][0])

    def broker_ids(self) -> list[str]:
        """Every archived broker id (with multiplicity, which must be one)."""
        return [r[0] for r in self._all("list", "SELECT broker_id FROM alerts")]

    def get(self, broker_id: str) -> Alert | None:
        """The archived alert with ``broker_id``, or None."""
        rows = self._all("get", "SELECT avro FROM alerts WHERE broker_id = ?", (broker_id,))
        return decode_alert(rows[0][0]) if rows else None

    def raw(self, sha256: str) -> bytes | None:
        """The raw upstream payload with this digest, or None."""
        rows = self._all("raw", "SELECT payload FROM raw_payloads WHERE sha256 = ?", (sha256,))
        return bytes(rows[0][0]) if rows else None

    def with_tag(self, tag: str) -> set[str]:
        """Broker ids of the alerts carrying ``tag``."""
        return {r[0] for r in self._all("tag lookup", "SELECT broker_id FROM alert_tags WHERE tag = ?", (tag,))}

    def matched_to(self, catalog: str, source_id: str) -> set[str]:
        """Broker ids of the alerts an annotator matched to this catalog source."""
        rows = self._all(
            "match lookup", "SELECT broker_id FROM alert_matches WHERE catalog = ? AND source_id = ?",
            (catalog, source_id),
        )
        return {r[0] for r in rows}

    def revisions(self, event_key: str) -> list[Alert]:
        """Every archived revision of one event, oldest first (revision, issue time, arrival)."""
        rows = self._all(
            "revisions",
            "SELECT avro FROM alerts WHERE event_key = ? ORDER BY coalesce(revision, -1), coalesce(issued_us, -1), "
            "ingested_us, broker_id",
            (event_key,),
        )
        return [decode_alert(r[0]) for r in rows]

    def latest(self, event_key: str) -> Alert | None:
        """The latest non-stale version of the event, or None."""
        rows = self._all(
            "latest",
            "SELECT a.avro FROM event_latest e JOIN alerts a ON a.broker_id = e.broker_id WHERE e.event_key = ?",
            (event_key,),
        )
        return decode_alert(rows[0][0]) if rows else None

    def known_tags(self) -> dict[str, int]:
        """Every tag of an archived alert, with its number of alerts."""
        return {t: int(n) for t, n in self._all("tags", "SELECT tag, n FROM tag_counts WHERE n > 0 ORDER BY tag")}

    def recent(self, limit: int = 50) -> list[AlertSummary]:
        """The most recently archived alerts, newest first."""
        rows = self._all(
            "recent", f"SELECT {_SUMMARY} FROM alerts a ORDER BY a.ingested_us DESC, a.broker_id DESC LIMIT ?",  # noqa: S608
            (int(limit),),
        )
        return self._summaries(rows, None)

    def coincidences(self, event_key: str | None = None, limit: int = 200) -> list[Coincidence]:
        """Coincidences involving ``event_key`` (either side), or all; last written first."""
        if event_key is None:
            rows = self._all(
                "coincidences", "SELECT record FROM coincidences ORDER BY updated_us DESC LIMIT ?", (int(limit),)
            )
        else:
            rows = self._all(
                "coincidences",
                "SELECT record FROM coincidences WHERE a_event_key = ? OR b_event_key = ? "
                "ORDER BY updated_us DESC LIMIT ?",
                (event_key, event_key, int(limit)),
            )
        return [decode_coincidence(r[0]) for r in rows]

    def ping(self) -> None:
        """Raise :class:`ArchiveError` unless the file can be read."""
        self._all("ping", "SELECT COUNT(*) FROM sqlite_master")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # Search ---------------------------------------------------------------------------------------------------
    def search(self, query: Query) -> Page:
        """One page of the alerts matching ``query`` (see the module docstring for the plans).

        Raises
        ------
        QueryError
            If a tag is unknown.
        ArchiveError
            On a database failure.
        """
        if query.tags:
            query.validate_tags(self.known_tags())
        desc = query.sort == "time_desc"
        plan, source, params = self._plan(query)
        where, wparams = self._filters(query, plan)
        after = query.after()
        t_col, id_col = ("g.t_us", "g.broker_id") if plan == "tag" else ("a.t_us", "a.broker_id")
        page_where, page_params = list(where), list(wparams)
        if after is not None:
            page_where.append(f"({t_col}, {id_col}) {'<' if desc else '>'} (?, ?)")
            page_params.extend(after)
        order = "DESC" if desc else "ASC"
        sql = (
            f"SELECT {_SUMMARY} FROM {source} WHERE {' AND '.join(page_where) or '1'} "  # noqa: S608 - fixed fragments
            f"ORDER BY {t_col} {order}, {id_col} {order} LIMIT ?"
        )
        count_source = source
        if plan == "tag" and not any("a." in w for w in where):
            count_source = "alert_tags g"  # every criterion is on the tag index: no need to read the alerts
        count_sql = (
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {count_source} WHERE {' AND '.join(where) or '1'} LIMIT ?)"  # noqa: S608
        )
        rows = self._all("search", sql, [*params, *page_params, query.limit + 1])
        more = len(rows) > query.limit
        total: int | None = len(rows)  # when the first page holds every match, no need to count again
        if after is not None or more:
            counted = int(self._all("count", count_sql, [*params, *wparams, TOTAL_LIMIT + 1])[0][0])
            total = None if counted > TOTAL_LIMIT else counted
        rows = rows[: query.limit]
        items = self._summaries(rows, Cone(*query.cone) if query.cone else None)
        cursor = encode_cursor(query.sort, int(rows[-1][-1]), rows[-1][0]) if more else None
        return Page(items=tuple(items), next_cursor=cursor, total=total)

    def _plan(self, query: Query) -> tuple[str, str, list[Any]]:
        """The driving access path: (plan name, FROM clause, its parameters)."""
        if query.cone is not None and query.cone[2] <= CONE_DRIVE_MAX_DEG:
            ranges = cone_ranges(*query.cone)
            source = (
                "(SELECT json_extract(value, '$[0]') AS lo, json_extract(value, '$[1]') AS hi FROM json_each(?)) r "
                "CROSS JOIN alerts a INDEXED BY alerts_hpx_t ON a.hpx >= r.lo AND a.hpx < r.hi"
            )
            return "cone", source, [json.dumps(ranges)]
        needle = (query.text or "").strip().lower()
        if self._fts and len(needle) >= 3:
            phrase = '"' + needle.replace('"', '""') + '"'
            ids = [r[0] for r in self._all(
                "text search", "SELECT broker_id FROM alert_text WHERE alert_text MATCH ? LIMIT ?",
                (phrase, TEXT_DRIVE_MAX + 1),
            )]
            if len(ids) <= TEXT_DRIVE_MAX:  # a selective needle (an id, a name): fetch those alerts
                source = (
                    "(SELECT value AS broker_id FROM json_each(?)) f CROSS JOIN alerts a ON a.broker_id = f.broker_id"
                )
                return "text", source, [json.dumps(ids)]
            # a common needle ("fermi"): walking the time order finds a page sooner than sorting every hit
        if query.tags:
            return "tag", "alert_tags g CROSS JOIN alerts a ON a.broker_id = g.broker_id", []
        return "time", "alerts a INDEXED BY alerts_t", []

    @staticmethod
    def _filters(query: Query, plan: str) -> tuple[list[str], list[Any]]:
        """WHERE terms (and parameters) of every criterion not answered by the access path."""
        where: list[str] = []
        params: list[Any] = []
        t_col = "g.t_us" if plan == "tag" else "a.t_us"
        lo, hi = query.time_range_us
        if lo is not None:
            where.append(f"{t_col} >= ?")
            params.append(lo)
        if hi is not None:
            where.append(f"{t_col} <= ?")
            params.append(hi)
        tags = list(query.tags)
        if plan == "tag":
            where.append("g.tag = ?")
            params.append(tags.pop(0))
        for tag in tags:
            where.append("EXISTS (SELECT 1 FROM alert_tags g2 WHERE g2.tag = ? AND g2.t_us = a.t_us "
                         "AND g2.broker_id = a.broker_id)")
            params.append(tag)
        if query.cone is not None:
            cone = Cone(*query.cone)
            cx, cy, cz = cone.centre
            where.append("a.cx * ? + a.cy * ? + a.cz * ? >= ?")
            params.extend((cx, cy, cz, cone.cos_radius))
        if query.messengers:
            where.append(f"a.messenger IN ({', '.join('?' * len(query.messengers))})")
            params.extend(query.messengers)
        if query.missions:
            keys = [m.lower() for m in query.missions]
            marks = ", ".join("?" * len(keys))
            where.append(f"(lower(a.mission) IN ({marks}) OR lower(a.instrument) IN ({marks}))")
            params.extend(keys + keys)
        for p in query.properties:
            term = "EXISTS (SELECT 1 FROM alert_properties p WHERE p.broker_id = a.broker_id AND p.name = ?"
            params.append(p.name)
            if p.low is not None:
                term += " AND p.value >= ?"
                params.append(p.low)
            if p.high is not None:
                term += " AND p.value <= ?"
                params.append(p.high)
            where.append(term + ")")
        if query.text is not None:
            where.append("instr(a.search_text, ?) > 0")
            params.append(query.text.strip().lower())
        if query.latest_only:
            where.append("a.is_latest = 1")
        return where, params

    def _summaries(self, rows: Sequence[Sequence[Any]], cone: Cone | None) -> list[AlertSummary]:
        keys = list(dict.fromkeys(r[1] for r in rows))
        n_coinc = self._active_coincidences(keys)
        out = []
        for r in rows:
            sep = None
            if cone is not None and r[15] is not None:
                sep = float(cone.separation(r[15], r[16]))
            out.append(AlertSummary(
                broker_id=r[0], event_key=r[1], event_id=r[2], event_name=r[3], mission=r[4], instrument=r[5],
                messenger=r[6], notice_type=r[7], kind=r[8], revision=r[9], revision_state=r[10],
                is_test=bool(r[11]), event_time=from_us(r[12]), issued=from_us(r[13]),
                ingested=_from_us(r[14]),
                ra=r[15], dec=r[16], error_radius=r[17], far=r[18], tags=tuple(json.loads(r[19])),
                n_matches=int(r[20]), n_coincidences=n_coinc.get(r[1], 0), separation=sep,
            ))
        return out

    def _active_coincidences(self, event_keys: Sequence[str]) -> dict[str, int]:
        if not event_keys:
            return {}
        rows = self._all(
            "coincidence count",
            "SELECT a_event_key, b_event_key FROM coincidences WHERE status = 'active' AND "
            "(a_event_key IN (SELECT value FROM json_each(?1)) OR b_event_key IN (SELECT value FROM json_each(?1)))",
            (json.dumps(list(event_keys)),),
        )
        out: dict[str, int] = {}
        for a, b in rows:
            for k in (a, b):
                out[k] = out.get(k, 0) + 1
        return out

