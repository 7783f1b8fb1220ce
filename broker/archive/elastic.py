# SPDX-License-Identifier: Apache-2.0
"""Elasticsearch archive: the same contract as the SQLite one, for scale.

Four indices, named from a prefix (``elasticsearch_index``, default
``mmbroker``), each created from an index template with explicit, strict
mappings (an unexpected field is an error, not a silently guessed mapping):

``<prefix>-alerts``
    One document per alert version, ``_id`` = broker id.  Identifiers, tags,
    messenger and mission are ``keyword``; times are ``date`` (for people and
    Kibana) plus ``long`` microseconds (``t_us``, the sort and time-filter key,
    and ``ingested_us``) so sorting and cursors are exact and identical to
    SQLite; the position is ``double`` RA/Dec, a unit vector (not indexed,
    fetched for the exact cut) and ``hpx``, the ``long`` nested HEALPix pixel at
    :data:`~broker.archive.HPX_ORDER`; numeric properties are ``nested``
    ``{name: keyword, value: double}`` pairs (one mapping for any number of
    property names, each queried as a true numeric range on its own pair,
    which ``flattened`` cannot do); the Avro encoding is ``binary`` (kept in
    ``_source``, never indexed).
``<prefix>-events``
    One document per event (``_id`` = event key): the broker id of its latest
    non-stale version, updated with optimistic concurrency
    (``if_seq_no``/``if_primary_term``) so concurrent workers cannot move the
    pointer backwards.
    The per-document ``latest`` flag (what ``latest_only`` searches filter
    on) is flipped after the pointer moved; two workers archiving versions
    of the same event within milliseconds can leave both flagged until the
    event's next version (the pointer, and so :meth:`~ElasticsearchArchive.latest`,
    stays right).
``<prefix>-coincidences``
    One document per coincidence (``_id`` = coincidence id): upserted.
``<prefix>-raw``
    Raw upstream payloads (``_id`` = SHA-256), ``binary``.

Writes are idempotent: alerts and raw payloads are bulk-*created* with
``_id`` = broker id / digest, so a redelivered batch creates nothing (the
409 conflicts are counted as "already archived").  Transient failures are
retried: the client retries timeouts and 429/502/503/504 responses
(``max_retries``), and the bulk helper retries documents rejected with 429
with exponential back-off.

Refresh policy: by default every write uses ``refresh="wait_for"``, so when
:meth:`ElasticsearchArchive.write_batch` returns the batch is visible to
search (the worker commits its Kafka offsets after that, and the dashboard
sees what was committed).  This costs up to one ``refresh_interval`` (1 s) per
batch; pass ``refresh="false"`` for throughput when search may lag by a
second.  Reads by id (``get``, the latest-version pointers) are real-time
and never need a refresh.

Cone searches select candidates with one ``range`` clause on ``hpx`` per
pixel range (``bool.should``) and apply the exact cut client side with the
same arithmetic as SQLite; pages are filled by fetching further candidates
(``search_after`` on ``(t_us, broker_id)``, the broker id being the unique
tiebreak) until ``limit`` alerts passed the cut.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError
from elasticsearch.helpers import BulkIndexError, streaming_bulk

from broker.archive import ArchivedAlert
from broker.archive.index import Cone, Indexed, cone_ranges, error_radius, indexed, rank
from broker.archive.query import TOTAL_LIMIT, AlertSummary, Page, Query, encode_cursor, from_us, to_us
from broker.avro import decode_alert, decode_coincidence, encode_coincidence
from broker.errors import ArchiveError
from broker.model import Alert, Coincidence

log = logging.getLogger(__name__)

Refresh = Literal["wait_for", "true", "false"]
T = TypeVar("T")

_KW = {"type": "keyword"}
_LONG = {"type": "long"}
_DOUBLE = {"type": "double"}
_DATE = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
_FETCH_ONLY = {"type": "double", "index": False}

ALERT_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "broker_id": _KW, "event_key": _KW, "event_id": _KW, "event_name": _KW, "mission": _KW, "instrument": _KW,
        "mission_keys": _KW, "messenger": _KW, "notice_type": _KW, "kind": _KW, "revision": _LONG,
        "revision_state": _KW, "is_test": {"type": "boolean"},
        "event_time": _DATE, "issued": _DATE, "ingested": _DATE,
        "t_us": _LONG, "issued_us": _LONG, "ingested_us": _LONG,
        "ra": _DOUBLE, "dec": _DOUBLE, "x": _FETCH_ONLY, "y": _FETCH_ONLY, "z": _FETCH_ONLY, "hpx": _LONG,
        "error_radius": _DOUBLE, "far": _DOUBLE, "tags": _KW,
        "props": {"type": "nested", "properties": {"name": _KW, "value": _DOUBLE}},
        "search_text": _KW, "n_matches": {"type": "integer"}, "latest": {"type": "boolean"},
        "raw_sha256": _KW, "source_topic": _KW, "source_partition": {"type": "integer"}, "source_offset": _LONG,
        "avro": {"type": "binary"},
    },
}
"""Mappings of ``<prefix>-alerts``."""

EVENT_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {"event_key": _KW, "broker_id": _KW, "revision": _LONG, "issued_us": _LONG, "ingested_us": _LONG},
}
COINCIDENCE_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "coincidence_id": _KW, "rule": _KW, "status": _KW, "a_event_key": _KW, "b_event_key": _KW,
        "a_broker_id": _KW, "b_broker_id": _KW, "updated_us": _LONG, "updated": _DATE, "avro": {"type": "binary"},
    },
}
RAW_MAPPINGS: dict[str, Any] = {"dynamic": "strict", "properties": {"payload": {"type": "binary"}, "size": _LONG}}

_SUMMARY_FIELDS = [
    "broker_id", "event_key", "event_id", "event_name", "mission", "instrument", "messenger", "notice_type", "kind",
    "revision", "revision_state", "is_test", "event_time", "issued", "ingested_us", "t_us", "ra", "dec", "x", "y",
    "z", "error_radius", "far", "tags", "n_matches",
]
_RANK_FIELDS = ["event_key", "revision", "issued_us", "ingested_us", "revision_state"]
_CANDIDATE_BATCH = 500


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _wildcard_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?" else c for c in text)


def safe_url(url: str) -> str:
    """``scheme://host:port`` of ``url``, without credentials or path (for messages and logs)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or 'http'}://{host}{port}"


class ElasticsearchArchive:
    """Alerts in Elasticsearch (or an OpenSearch-compatible server).

    Parameters
    ----------
    url
        Endpoint, e.g. ``https://user:password@es.example.org:9200`` (never
        logged: messages show scheme, host and port only).
    index
        Prefix of the four index names.
    refresh
        Refresh policy of writes (see the module docstring).
    request_timeout
        Per-request timeout, s.
    max_retries
        Retries of a request on timeout, connection error or 429/502/503/504.
    client_options
        Extra keyword arguments for :class:`elasticsearch.Elasticsearch`
        (TLS, ``api_key``, ``node_class``, ``headers``, ...); they win over ours.

    Raises
    ------
    ArchiveError
        If the server cannot be reached or the templates and indices cannot be created.
    """

    def __init__(
        self,
        url: str,
        index: str = "mmbroker",
        *,
        refresh: Refresh = "wait_for",
        request_timeout: float = 30.0,
        max_retries: int = 3,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.where = f"{safe_url(url)} ({index}-*)"
        self.prefix = index
        self.alerts_index = f"{index}-alerts"
        self.events_index = f"{index}-events"
        self.coincidences_index = f"{index}-coincidences"
        self.raw_index = f"{index}-raw"
        self.refresh: Refresh = refresh
        options: dict[str, Any] = {
            "request_timeout": request_timeout,
            "max_retries": max_retries,
            "retry_on_timeout": True,
            "retry_on_status": (429, 502, 503, 504),
        }
        options.update(client_options or {})
        try:
            self._es = Elasticsearch(url, **options)
        except (ValueError, TypeError) as exc:
            raise ArchiveError(f"bad Elasticsearch settings for {self.where}: {exc}") from exc
        self._setup()

    # Plumbing -------------------------------------------------------------------------------------------------
    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except BulkIndexError as exc:
            raise ArchiveError(f"archive {self.where}: {what} failed: {exc.errors[:1]}") from exc
        except (ApiError, TransportError) as exc:
            raise ArchiveError(f"archive {self.where}: {what} failed: {exc}") from exc

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with self._errors(what):
            return fn()

    def _setup(self) -> None:
        """Index templates (explicit mappings) and the indices, created if missing."""
        specs = [
            (self.alerts_index, ALERT_MAPPINGS),
            (self.events_index, EVENT_MAPPINGS),
            (self.coincidences_index, COINCIDENCE_MAPPINGS),
            (self.raw_index, RAW_MAPPINGS),
        ]
        with self._errors("setting up the indices"):
            for name, mappings in specs:
                self._es.indices.put_index_template(
                    name=name, index_patterns=[name], priority=500,
                    template={"mappings": mappings},
                    meta={"managed_by": "mmbroker", "description": f"mmbroker archive: {name}"},
                )
                if not self._es.indices.exists(index=name):
                    try:
                        self._es.indices.create(index=name)
                    except ApiError as exc:
                        if "resource_already_exists" not in str(exc):  # another worker created it first
                            raise

    def _bulk(
        self, actions: Iterable[dict[str, Any]], refresh: Refresh | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Run bulk actions; return (op, item result) for each, in order (failed items included)."""
        out: list[tuple[str, dict[str, Any]]] = []
        kwargs: dict[str, Any] = {}
        if refresh is not None and refresh != "false":
            kwargs["refresh"] = refresh
        for _ok, item in streaming_bulk(
            self._es, actions, chunk_size=500, max_chunk_bytes=20 * 1024 * 1024, raise_on_error=False,
            raise_on_exception=True, max_retries=5, initial_backoff=0.2, max_backoff=5.0, **kwargs,
        ):
            op, result = next(iter(item.items()))
            out.append((op, result))
        return out

    # Write side -----------------------------------------------------------------------------------------------
    def _doc(self, item: ArchivedAlert, ix: Indexed) -> dict[str, Any]:
        a, src = item.alert, item.source
        x, y, z = ix.xyz or (None, None, None)
        return {
            "broker_id": a.broker_id, "event_key": a.event_key, "event_id": a.event_id, "event_name": a.event_name,
            "mission": a.mission, "instrument": a.instrument, "mission_keys": list(ix.mission_keys),
            "messenger": a.messenger, "notice_type": a.notice_type, "kind": a.kind, "revision": a.revision,
            "revision_state": a.revision_state, "is_test": a.is_test,
            "event_time": _iso(a.event_time), "issued": _iso(a.issued), "ingested": _iso(from_us(ix.ingested_us)),
            "t_us": ix.t_us, "issued_us": to_us(a.issued), "ingested_us": ix.ingested_us,
            "ra": ix.ra, "dec": ix.dec, "x": x, "y": y, "z": z, "hpx": ix.hpx,
            "error_radius": error_radius(a), "far": a.far, "tags": list(a.tags),
            "props": [{"name": k, "value": v} for k, v in ix.properties.items()],
            "search_text": list(ix.search_text), "n_matches": ix.n_matches, "latest": False,
            "raw_sha256": a.provenance.raw_sha256, "source_topic": src.topic, "source_partition": src.partition,
            "source_offset": src.offset, "avro": _b64(item.encoded),
        }

    def write_batch(self, items: Sequence[ArchivedAlert]) -> int:
        """Bulk-create the batch; return the number of new alerts.

        Order: (1) find which alerts are already archived (real-time multi-get),
        (2) move the latest-version pointers of the batch's events
        (optimistic concurrency), (3) create the new alerts and raw payloads
        and flip the ``latest`` flags, in one bulk request with the refresh
        policy.  Every step is idempotent, so a batch redelivered after a
        crash between steps repairs what the first attempt left undone.

        Raises
        ------
        ArchiveError
            If the server fails or refuses a document (other than "already exists").
        """
        unique: dict[str, ArchivedAlert] = {}
        for item in items:
            unique.setdefault(item.alert.broker_id, item)
        if not unique:
            return 0
        batch = list(unique.values())
        ixs = indexed([i.alert for i in batch], int(time.time() * 1e6))
        with self._errors(f"archive write of {len(batch)} alerts"):
            got = self._es.mget(index=self.alerts_index, ids=list(unique), source_includes=_RANK_FIELDS)
            existing = {d["_id"]: d["_source"] for d in got["docs"] if d.get("found")}
            versions: list[tuple[str, tuple[int, int, int, str]]] = []
            for item, ix in zip(batch, ixs, strict=True):
                a = item.alert
                if a.broker_id in existing:
                    s = existing[a.broker_id]
                    if s.get("revision_state") != "stale":
                        versions.append((a.event_key, rank(s.get("revision"), s.get("issued_us"),
                                                           s["ingested_us"], a.broker_id)))
                elif a.revision_state != "stale":
                    versions.append((a.event_key, rank(a.revision, to_us(a.issued), ix.ingested_us, a.broker_id)))
            latest, demoted = self._move_latest(versions)
            new_ids = [i.alert.broker_id for i in batch if i.alert.broker_id not in existing]
            actions: list[dict[str, Any]] = []
            for item, ix in zip(batch, ixs, strict=True):
                bid = item.alert.broker_id
                if bid in existing:
                    continue
                doc = self._doc(item, ix)
                doc["latest"] = latest.get(item.alert.event_key) == bid
                actions.append({"_op_type": "create", "_index": self.alerts_index, "_id": bid, "_source": doc})
                actions.append({
                    "_op_type": "create", "_index": self.raw_index, "_id": item.alert.provenance.raw_sha256,
                    "_source": {"payload": _b64(item.source.value), "size": len(item.source.value)},
                })
            for bid in latest.values():
                if bid in existing:
                    actions.append({"_op_type": "update", "_index": self.alerts_index, "_id": bid,
                                    "doc": {"latest": True}})
            for bid in demoted:
                if bid not in new_ids:
                    actions.append({"_op_type": "update", "_index": self.alerts_index, "_id": bid,
                                    "doc": {"latest": False}})
            results = self._bulk(actions, refresh=self.refresh) if actions else []
            if not actions and self.refresh != "false":
                self._es.indices.refresh(index=self.alerts_index)
        created = 0
        for (op, res), action in zip(results, actions, strict=True):
            status = int(res.get("status", 500))
            if op == "create" and status == 409:
                continue  # created by an earlier delivery (or a concurrent worker): idempotent
            if status >= 300:
                if op == "update" and status == 404:
                    log.warning("latest flag of %s not updated: document missing", action["_id"])
                    continue
                raise ArchiveError(
                    f"archive {self.where}: {op} of {action['_index']}/{action['_id']} refused: {res.get('error')}"
                )
            if op == "create" and action["_index"] == self.alerts_index:
                created += 1
        return created

    def _move_latest(
        self, versions: Sequence[tuple[str, tuple[int, int, int, str]]]
    ) -> tuple[dict[str, str], set[str]]:
        """Point each event at its best version; return (event key -> latest broker id, demoted broker ids).

        The pointer documents are written with ``if_seq_no``/``if_primary_term``
        (or created): a conflict means another writer moved the pointer, and
        the decision is made again against the new value.
        """
        best: dict[str, tuple[int, int, int, str]] = {}
        for key, r in versions:
            if key not in best or r > best[key]:
                best[key] = r
        latest: dict[str, str] = {}
        demoted: set[str] = set()
        pending = sorted(best)
        for _attempt in range(10):
            if not pending:
                break
            docs = self._es.mget(index=self.events_index, ids=pending)["docs"]
            actions: list[dict[str, Any]] = []
            previous: dict[str, str | None] = {}
            for key, d in zip(pending, docs, strict=True):
                mine = best[key]
                if d.get("found"):
                    s = d["_source"]
                    current = rank(s.get("revision"), s.get("issued_us"), s["ingested_us"], s["broker_id"])
                    if current >= mine:
                        latest[key] = s["broker_id"]
                        continue
                    previous[key] = s["broker_id"]
                    cond: dict[str, Any] = {"_op_type": "index", "if_seq_no": d["_seq_no"],
                                            "if_primary_term": d["_primary_term"]}
                else:
                    previous[key] = None
                    cond = {"_op_type": "create"}
                revision = None if mine[0] == -1 else mine[0]
                issued = None if mine[1] == -1 else mine[1]
                actions.append({**cond, "_index": self.events_index, "_id": key, "_source": {
                    "event_key": key, "broker_id": mine[3], "revision": revision, "issued_us": issued,
                    "ingested_us": mine[2],
                }})
            retry: list[str] = []
            for (_op, res), action in zip(self._bulk(actions), actions, strict=True):
                key = action["_id"]
                status = int(res.get("status", 500))
                if status == 409:
                    retry.append(key)
                elif status >= 300:
                    raise ArchiveError(f"archive {self.where}: latest pointer of {key} refused: {res.get('error')}")
                else:
                    latest[key] = best[key][3]
                    prev = previous[key]
                    if prev is not None and prev != best[key][3]:
                        demoted.add(prev)
            pending = retry
        if pending:
            raise ArchiveError(f"archive {self.where}: latest pointers of {pending[:3]} kept changing (10 attempts)")
        return latest, demoted

    def write_coincidences(self, coincidences: Sequence[Coincidence]) -> None:
        """Upsert coincidences by id (``index`` with ``_id`` = coincidence id): the last write wins."""
        now_us = int(time.time() * 1e6)
        actions = [
            {"_op_type": "index", "_index": self.coincidences_index, "_id": c.coincidence_id, "_source": {
                "coincidence_id": c.coincidence_id, "rule": c.rule, "status": c.status,
                "a_event_key": c.a_event_key, "b_event_key": c.b_event_key, "a_broker_id": c.a_broker_id,
                "b_broker_id": c.b_broker_id, "updated_us": now_us + k, "updated": _iso(from_us(now_us + k)),
                "avro": _b64(encode_coincidence(c)),
            }}
            for k, c in enumerate(coincidences)
        ]
        if not actions:
            return
        with self._errors(f"write of {len(actions)} coincidences"):
            for (op, res), action in zip(self._bulk(actions, refresh=self.refresh), actions, strict=True):
                if int(res.get("status", 500)) >= 300:
                    raise ArchiveError(f"archive {self.where}: {op} of coincidence {action['_id']}: {res.get('error')}")

    # Read side ------------------------------------------------------------------------------------------------
    def _get_source(self, index: str, doc_id: str, fields: list[str]) -> dict[str, Any] | None:
        try:
            with self._errors(f"get {index}/{doc_id}"):
                resp = self._es.get(index=index, id=doc_id, source_includes=fields)
        except ArchiveError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                return None
            raise
        src: dict[str, Any] = resp["_source"]
        return src

    def get(self, broker_id: str) -> Alert | None:
        """The archived alert with ``broker_id``, or None."""
        src = self._get_source(self.alerts_index, broker_id, ["avro"])
        return None if src is None else decode_alert(base64.b64decode(src["avro"]))

    def raw(self, sha256: str) -> bytes | None:
        """The raw upstream payload with this digest, or None."""
        src = self._get_source(self.raw_index, sha256, ["payload"])
        return None if src is None else base64.b64decode(src["payload"])

    def revisions(self, event_key: str) -> list[Alert]:
        """Every archived version of one event, oldest first (revision, issue time, arrival)."""
        hits = self._call("revisions", lambda: self._es.search(
            index=self.alerts_index, query={"term": {"event_key": event_key}}, size=10_000,
            source_includes=["avro", "broker_id", *_RANK_FIELDS],
        ))["hits"]["hits"]
        hits.sort(key=lambda h: rank(h["_source"].get("revision"), h["_source"].get("issued_us"),
                                     h["_source"]["ingested_us"], h["_source"]["broker_id"]))
        return [decode_alert(base64.b64decode(h["_source"]["avro"])) for h in hits]

    def latest(self, event_key: str) -> Alert | None:
        """The latest non-stale version of the event, or None."""
        src = self._get_source(self.events_index, event_key, ["broker_id"])
        return None if src is None else self.get(src["broker_id"])

    def count(self) -> int:
        """Number of archived alert versions."""
        return int(self._call("count", lambda: self._es.count(index=self.alerts_index))["count"])

    def known_tags(self) -> dict[str, int]:
        """Every tag of an archived alert, with its number of alerts (a terms aggregation)."""
        resp = self._call("tags", lambda: self._es.search(
            index=self.alerts_index, size=0, aggs={"tags": {"terms": {"field": "tags", "size": 10_000}}},
        ))
        return {b["key"]: int(b["doc_count"]) for b in sorted(resp["aggregations"]["tags"]["buckets"],
                                                             key=lambda b: b["key"])}

    def recent(self, limit: int = 50) -> list[AlertSummary]:
        """The most recently archived alerts, newest first."""
        resp = self._call("recent", lambda: self._es.search(
            index=self.alerts_index, query={"match_all": {}}, size=int(limit),
            sort=[{"ingested_us": "desc"}, {"broker_id": "desc"}], source_includes=_SUMMARY_FIELDS,
        ))
        return self._summaries([h["_source"] for h in resp["hits"]["hits"]], None)

    def coincidences(self, event_key: str | None = None, limit: int = 200) -> list[Coincidence]:
        """Coincidences involving ``event_key`` (either side), or all; last written first."""
        query: dict[str, Any] = {"match_all": {}} if event_key is None else {"bool": {"should": [
            {"term": {"a_event_key": event_key}}, {"term": {"b_event_key": event_key}}], "minimum_should_match": 1}}
        resp = self._call("coincidences", lambda: self._es.search(
            index=self.coincidences_index, query=query, size=int(limit), sort=[{"updated_us": "desc"}],
            source_includes=["avro"],
        ))
        return [decode_coincidence(base64.b64decode(h["_source"]["avro"])) for h in resp["hits"]["hits"]]

    def ping(self) -> None:
        """Raise :class:`ArchiveError` unless the server answers."""
        if not self._call("ping", self._es.ping):
            raise ArchiveError(f"archive {self.where} does not answer")

    def close(self) -> None:
        """Close the client's connections."""
        self._es.close()

    # Search ---------------------------------------------------------------------------------------------------
    @staticmethod
    def filters(query: Query) -> list[dict[str, Any]]:
        """The Elasticsearch ``bool.filter`` clauses of ``query`` (the cone as pixel ranges only)."""
        f: list[dict[str, Any]] = []
        lo, hi = query.time_range_us
        if lo is not None or hi is not None:
            f.append({"range": {"t_us": {k: v for k, v in (("gte", lo), ("lte", hi)) if v is not None}}})
        f.extend({"term": {"tags": t}} for t in query.tags)
        if query.messengers:
            f.append({"terms": {"messenger": list(query.messengers)}})
        if query.missions:
            f.append({"terms": {"mission_keys": [m.lower() for m in query.missions]}})
        for p in query.properties:
            inner: list[dict[str, Any]] = [{"term": {"props.name": p.name}}]
            bounds = {k: v for k, v in (("gte", p.low), ("lte", p.high)) if v is not None}
            if bounds:
                inner.append({"range": {"props.value": bounds}})
            f.append({"nested": {"path": "props", "query": {"bool": {"filter": inner}}}})
        if query.text is not None:
            f.append({"wildcard": {"search_text": {"value": f"*{_wildcard_escape(query.text.strip().lower())}*"}}})
        if query.latest_only:
            f.append({"term": {"latest": True}})
        if query.cone is not None:
            f.append({"bool": {"should": [{"range": {"hpx": {"gte": lo_, "lt": hi_}}}
                                          for lo_, hi_ in cone_ranges(*query.cone)], "minimum_should_match": 1}})
        return f

    def search(self, query: Query) -> Page:
        """One page of the alerts matching ``query``.

        Raises
        ------
        QueryError
            If a tag is unknown.
        ArchiveError
            On a server failure.
        """
        if query.tags:
            query.validate_tags(self.known_tags())
        es_query = {"bool": {"filter": self.filters(query)}}
        order = "desc" if query.sort == "time_desc" else "asc"
        cone = Cone(*query.cone) if query.cone else None
        size = query.limit + 1 if cone is None else max(2 * (query.limit + 1), _CANDIDATE_BATCH)
        after: list[Any] | None = list(a) if (a := query.after()) is not None else None
        matched: list[dict[str, Any]] = []
        while len(matched) <= query.limit:
            kwargs: dict[str, Any] = {"search_after": after} if after is not None else {}
            resp = self._call("search", lambda kw=kwargs: self._es.search(  # type: ignore[misc]
                index=self.alerts_index, query=es_query, size=size, sort=[{"t_us": order}, {"broker_id": order}],
                source_includes=_SUMMARY_FIELDS, track_total_hits=False, **kw,
            ))
            hits = [h["_source"] for h in resp["hits"]["hits"]]
            keep = self._inside(cone, hits) if cone is not None else hits
            matched.extend(keep[: query.limit + 1 - len(matched)])
            if len(hits) < size:
                break
            after = [hits[-1]["t_us"], hits[-1]["broker_id"]]
        more = len(matched) > query.limit
        matched = matched[: query.limit]
        cursor = encode_cursor(query.sort, matched[-1]["t_us"], matched[-1]["broker_id"]) if more else None
        # a first page holding every match is its own total
        total = len(matched) if query.cursor is None and not more else self._total(es_query, cone)
        return Page(items=tuple(self._summaries(matched, cone)), next_cursor=cursor, total=total)

    @staticmethod
    def _inside(cone: Cone, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not hits:
            return []
        xyz = np.array([[h["x"], h["y"], h["z"]] for h in hits], dtype=np.float64)
        inside = cone.contains(xyz)
        return [h for h, ok in zip(hits, inside, strict=True) if ok]

    def _total(self, es_query: dict[str, Any], cone: Cone | None) -> int | None:
        """Number of matches, or None above :data:`TOTAL_LIMIT` (for a cone: above that many candidates)."""
        n = int(self._call("count", lambda: self._es.count(index=self.alerts_index, query=es_query))["count"])
        if n > TOTAL_LIMIT:
            return None
        if cone is None or n == 0:
            return n
        resp = self._call("count", lambda: self._es.search(
            index=self.alerts_index, query=es_query, size=n, source_includes=["x", "y", "z"], track_total_hits=False,
        ))
        return len(self._inside(cone, [h["_source"] for h in resp["hits"]["hits"]]))

    def _summaries(self, sources: Sequence[dict[str, Any]], cone: Cone | None) -> list[AlertSummary]:
        n_coinc = self._active_coincidences(list(dict.fromkeys(s["event_key"] for s in sources)))
        out = []
        for s in sources:
            sep = None
            if cone is not None and s.get("ra") is not None:
                sep = float(cone.separation(s["ra"], s["dec"]))
            ingested = from_us(s["ingested_us"])
            if ingested is None:
                raise ArchiveError(f"archive {self.where}: alert {s['broker_id']} has no ingestion time")
            out.append(AlertSummary(
                broker_id=s["broker_id"], event_key=s["event_key"], event_id=s["event_id"],
                event_name=s.get("event_name"), mission=s["mission"], instrument=s.get("instrument"),
                messenger=s["messenger"], notice_type=s["notice_type"], kind=s["kind"], revision=s.get("revision"),
                revision_state=s.get("revision_state"), is_test=bool(s["is_test"]),
                event_time=_parse_iso(s.get("event_time")), issued=_parse_iso(s.get("issued")), ingested=ingested,
                ra=s.get("ra"), dec=s.get("dec"), error_radius=s.get("error_radius"), far=s.get("far"),
                tags=tuple(s.get("tags") or ()), n_matches=int(s.get("n_matches") or 0),
                n_coincidences=n_coinc.get(s["event_key"], 0), separation=sep,
            ))
        return out

    def _active_coincidences(self, event_keys: list[str]) -> dict[str, int]:
        if not event_keys:
            return {}
        resp = self._call("coincidence count", lambda: self._es.search(
            index=self.coincidences_index, size=10_000, source_includes=["a_event_key", "b_event_key"],
            query={"bool": {"filter": [{"term": {"status": "active"}}], "should": [
                {"terms": {"a_event_key": event_keys}}, {"terms": {"b_event_key": event_keys}}],
                "minimum_should_match": 1}},
        ))
        out: dict[str, int] = {}
        for h in resp["hits"]["hits"]:
            for k in (h["_source"]["a_event_key"], h["_source"]["b_event_key"]):
                out[k] = out.get(k, 0) + 1
        return out
