# SPDX-License-Identifier: Apache-2.0
"""CDS annotators through astroquery: XMatch against VizieR tables, and SIMBAD.

Both send ONE request per batch (per table) to the CDS XMatch service
(``astroquery.xmatch``): the batch's de-duplicated positions are uploaded as
``cat1`` (an astropy Table with an RA, a Dec and an id column) and matched
against ``cat2`` within ``radius_arcsec``.  Result rows are mapped back to the
uploaded positions through the ``cat1`` columns XMatch echoes in every row:
the id column when it is there (checked against the echoed position when that
is there too), else the echoed RA/Dec.

Why SIMBAD goes through XMatch (``cat2="simbad"``, as Fink's cdsxmatch does):
astroquery 0.4.11's ``Simbad.query_region`` with several centres is a single
TAP request, but its ADQL is an ``OR`` of cone criteria over ``basic`` and the
rows do not say which centre they belong to (nor their distance to it), so
rows would have to be re-assigned client-side and overlapping cones would be
ambiguous.  XMatch returns, per row, the uploaded id/position and ``angDist``.
astroquery rewrites ``"simbad"`` to ``"vizier:simbad"`` (it is in the XMatch
table list), which CDS accepts (astroquery's remote test
``test_two_remote_tables`` does the same).

How astroquery is used (nothing of it is patched):

* each annotator owns :class:`astroquery.xmatch.XMatchClass` instances whose
  ``URL`` (default ``astroquery.xmatch.conf.url``) and ``TIMEOUT`` (the HTTP
  timeout, s) are set per instance;
* the request is ``XMatchClass.query_async(cat1=Table, cat2=table,
  max_distance=..., colRA1=, colDec1=, cache=False, RESPONSEFORMAT="csv")``:
  CSV instead of astroquery's default VOTable (extra keyword arguments are
  passed to the service), parsed with :mod:`csv` (astroquery's own tests read
  this response the same way); ``cache=False`` keeps astroquery's disk cache
  out of it, results are cached by :mod:`annotators.remote`;
* astroquery checks ``cat2`` against the service's table list
  (``GET <URL>/tables?action=getVizieRTableNames``) before each query.  The
  client subclass fetches that list once per annotator with the HTTP timeout
  and raises on an HTTP error, instead of astroquery's default of caching the
  response on disk for a week without looking at its status (a single error
  page would otherwise break the annotator for a week).

Caveats: importing ``astroquery.xmatch`` prints "Could not import regions"
once when the optional ``regions`` package is absent (harmless: cone areas
are not used).  ``cache=False`` makes astroquery flip its global
``cache_conf.cache_active`` temporarily around each request; two concurrent
requests may leave it off, which only matters to other astroquery users in
the same process.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from annotators.remote import (
    Cache,
    CircuitBreaker,
    MatchRecord,
    Position,
    RemoteAnnotator,
    RemoteServiceError,
    spec_fingerprint,
)
from broker.errors import ConfigError
from broker.model import CatalogMatch, PropertyValue

log = logging.getLogger(__name__)

MAX_RADIUS_ARCSEC = 180.0
"""Largest match radius the XMatch service accepts (arcsec)."""


@dataclass(frozen=True)
class TableSpec:
    """How to read the rows of one XMatch table.

    Parameters
    ----------
    table
        The ``cat2`` identifier (``"vizier:II/246/out"``, ``"simbad"``); also
        the ``catalog`` of the matches.
    id_column
        Column holding the source's name or id.
    ra_column, dec_column
        Columns holding the source's position (deg, ICRS/J2000).
    properties
        ``(column, property name)`` pairs copied into each match's
        ``properties`` (empty cells are left out).
    """

    table: str
    id_column: str
    ra_column: str
    dec_column: str
    properties: tuple[tuple[str, str], ...] = ()


TWO_MASS = TableSpec(
    "vizier:II/246/out",
    id_column="2MASS",
    ra_column="RAJ2000",
    dec_column="DEJ2000",
    properties=(("Jmag", "Jmag"), ("Hmag", "Hmag"), ("Kmag", "Kmag"), ("Qfl", "Qfl")),
)
"""2MASS point sources; columns as in the recorded XMatch response."""

SIMBAD = TableSpec(
    "simbad",
    id_column="main_id",
    ra_column="ra",
    dec_column="dec",
    properties=(
        ("main_type", "otype"),
        ("other_types", "other_types"),
        ("sp_type", "sp_type"),
        ("redshift", "redshift"),
    ),
)
"""SIMBAD as XMatch serves it (``main_id``, ``main_type``, ... as Fink reads them)."""

KNOWN_TABLES: dict[str, TableSpec] = {s.table: s for s in (TWO_MASS, SIMBAD)}
"""Tables that may be named by their identifier alone; others need a :class:`TableSpec`."""


@dataclass(frozen=True)
class UploadColumns:
    """Names of the columns of the uploaded ``cat1`` (echoed in every result row).

    The defaults do not collide with the columns of SIMBAD or of VizieR tables
    (Fink uses ``ra_in``/``dec_in`` for the same reason).
    """

    ra: str = "ra_in"
    dec: str = "dec_in"
    id: str = "id_in"


def _resolve(table: str | TableSpec) -> TableSpec:
    if isinstance(table, TableSpec):
        return table
    name = table if table == "simbad" or table.startswith("vizier:") else f"vizier:{table}"
    spec = KNOWN_TABLES.get(name)
    if spec is None:
        raise ConfigError(
            f"XMatch table {table!r} has no known column layout; pass a TableSpec(table, id_column, ra_column, "
            f"dec_column) for it (known: {', '.join(sorted(KNOWN_TABLES))})"
        )
    return spec


def _value(text: str) -> PropertyValue | None:
    s = text.strip()
    if not s:
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def _num(row: list[str], i: int) -> float:
    try:
        return float(row[i])
    except ValueError:
        raise RemoteServiceError(f"XMatch CSV: {row[i]!r} is not a number (row {','.join(row)[:120]!r})") from None


class _TableNames:
    """The XMatch table list, fetched once (successfully) and shared by an annotator's clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: list[str] | None = None

    def get(self, client: Any) -> list[str]:
        from astroquery.utils import url_helpers

        with self._lock:
            if self._names is None:
                response = client._request(
                    "GET",
                    url_helpers.urljoin_keep_path(client.URL, "tables"),
                    params={"action": "getVizieRTableNames", "RESPONSEFORMAT": "txt"},
                    timeout=client.TIMEOUT,
                    cache=False,
                )
                response.raise_for_status()
                names = response.text.splitlines()
                if not names:
                    raise RemoteServiceError(f"empty table list from {response.url}")
                self._names = names
            return self._names


@functools.cache
def _client_class() -> type:
    """astroquery's XMatchClass, with the table list taken from the instance's :class:`_TableNames`."""
    from astroquery.xmatch import XMatchClass

    class XMatchClient(XMatchClass):
        """``XMatchClass`` whose ``get_available_tables`` is fetched once, bounded and checked (see module doc)."""

        table_names: _TableNames

        def get_available_tables(self, *, cache: bool = True) -> list[str]:
            return self.table_names.get(self)

    return XMatchClient


def _make_client(url: str | None, timeout_s: float, names: _TableNames) -> Any:
    """An astroquery XMatch client for ``url`` (s: HTTP timeout) sharing the table list ``names``."""
    from astroquery.xmatch import conf

    client = _client_class()()
    client.URL = url or conf.url
    client.TIMEOUT = timeout_s
    client.table_names = names
    return client


class XMatchAnnotator(RemoteAnnotator):
    """Sources of VizieR tables near each alert's position, through CDS XMatch.

    One request per batch and table; one :class:`~broker.model.CatalogMatch`
    per source within ``radius_arcsec`` (nearest first, at most
    ``max_matches`` per table) with ``catalog`` = the table, ``source_id``
    from the table's id column, ``separation`` from ``angDist`` (arcsec ->
    deg) and the table's declared properties.

    Parameters
    ----------
    tables
        XMatch ``cat2`` tables: identifiers of :data:`KNOWN_TABLES` or
        :class:`TableSpec` instances.
    radius_arcsec
        Match radius (arcsec), at most 180.
    deadline_s
        Longest time a batch waits for XMatch (s).
    cache, breaker
        See :class:`~annotators.remote.RemoteAnnotator`.
    url
        XMatch ``sync`` endpoint; ``astroquery.xmatch.conf.url`` when ``None``.
    http_timeout_s
        HTTP timeout of each request (s): bounds how long an abandoned worker
        keeps waiting for a late answer.
    max_matches
        Matches kept per alert and table.
    upload
        Column names of the uploaded positions.
    cache_ttl_s, max_workers, position_decimals
        See :class:`~annotators.remote.RemoteAnnotator`; ``max_workers``
        defaults to twice the number of tables.
    """

    name = "cds_xmatch"
    version = "0.1.0"
    adds = "Sources of CDS XMatch tables (e.g. 2MASS) within a few arcsec of the alert position."
    service = "cds-xmatch"

    def __init__(
        self,
        tables: Sequence[str | TableSpec] = ("vizier:II/246/out",),
        radius_arcsec: float = 5.0,
        deadline_s: float = 2.0,
        cache: Cache | None = None,
        breaker: CircuitBreaker | None = None,
        url: str | None = None,
        *,
        http_timeout_s: float = 30.0,
        max_matches: int = 50,
        upload: UploadColumns | None = None,
        cache_ttl_s: float = 7 * 86400.0,
        max_workers: int | None = None,
        position_decimals: int = 5,
        max_error_deg: float | None = None,
    ) -> None:
        if not tables:
            raise ConfigError(f"{self.name}: no table to match against")
        if not 0 < radius_arcsec <= MAX_RADIUS_ARCSEC:
            raise ConfigError(f"{self.name}: radius_arcsec must be in (0, {MAX_RADIUS_ARCSEC:g}], got {radius_arcsec}")
        specs = tuple(_resolve(t) for t in tables)
        super().__init__(
            deadline_s=deadline_s,
            cache=cache,
            cache_ttl_s=cache_ttl_s,
            breaker=breaker,
            max_workers=max_workers or 2 * len(specs),
            position_decimals=position_decimals,
            max_matches=max_matches,
            max_error_deg=max_error_deg,
        )
        self.specs = {s.table: s for s in specs}
        self.radius_arcsec = radius_arcsec
        self.upload = upload or UploadColumns()
        self.http_timeout_s = http_timeout_s
        names = _TableNames()
        # one client (one requests session) per table: tables are fetched concurrently
        self._clients = {t: _make_client(url, http_timeout_s, names) for t in self.specs}
        self.url: str = next(iter(self._clients.values())).URL

    def tables(self) -> tuple[str, ...]:
        """The ``cat2`` identifiers asked."""
        return tuple(self.specs)

    def key_part(self, table: str) -> str:
        """Annotator version, radius and table layout: a change to any of them is a new cache entry."""
        spec = self.specs[table]
        return f"v{self.version}:{self.radius_arcsec:g}as:{spec_fingerprint(spec)}"

    def fetch(self, table: str, positions: Sequence[Position]) -> list[list[MatchRecord]]:
        """One XMatch request for ``positions`` (deg); records per position, nearest first."""
        import astropy.units as u
        from astropy.table import Table

        up = self.upload
        cat1 = Table(
            {
                up.ra: [p[0] for p in positions],
                up.dec: [p[1] for p in positions],
                up.id: list(range(1, len(positions) + 1)),
            }
        )
        response = self._clients[table].query_async(
            cat1=cat1,
            cat2=table,
            max_distance=self.radius_arcsec * u.arcsec,
            colRA1=up.ra,
            colDec1=up.dec,
            cache=False,
            RESPONSEFORMAT="csv",
        )
        return parse_xmatch_csv(response.text, self.specs[table], positions, self.upload)

    def to_match(self, table: str, record: MatchRecord) -> CatalogMatch:
        """A match of ``table`` from a record (separation arcsec -> deg)."""
        return CatalogMatch(
            catalog=table,
            source_id=str(record["source_id"]),
            ra=float(record["ra"]),
            dec=float(record["dec"]),
            separation=float(record["separation_arcsec"]) / 3600.0,
            properties=dict(record.get("properties", {})),
        )


def parse_xmatch_csv(
    text: str,
    spec: TableSpec,
    positions: Sequence[Position],
    upload: UploadColumns,
    tolerance_deg: float = 1e-6,
) -> list[list[MatchRecord]]:
    """Map the rows of an XMatch CSV response to the uploaded positions.

    Parameters
    ----------
    text
        The response body: a header (``angDist``, the echoed ``cat1`` columns,
        then the table's columns) and one row per match.
    spec
        Layout of the table's columns.
    positions
        The uploaded positions (deg), uploaded with ids 1..N in this order.
    upload
        Names of the uploaded columns.
    tolerance_deg
        Largest difference between an echoed and an uploaded coordinate (deg).

    Returns
    -------
    list of list of dict
        Per uploaded position, its match records nearest first (see
        :data:`annotators.remote.MatchRecord`).

    Raises
    ------
    RemoteServiceError
        Empty body, missing columns, or rows none of which belongs to an
        uploaded position.

    Notes
    -----
    A name may occur twice in the header when the table has a column named
    like an uploaded one; the echoed ``cat1`` column comes first, the table's
    last, so echoed columns are looked up from the left and the table's from
    the right.
    """
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise RemoteServiceError("empty XMatch response (no CSV header)")
    header = [h.strip() for h in rows[0]]

    def first(name: str) -> int | None:
        return header.index(name) if name in header else None

    def last(name: str) -> int:  # only called for names in the header
        return len(header) - 1 - header[::-1].index(name)

    needed = ["angDist", spec.id_column, spec.ra_column, spec.dec_column]
    lacking = [c for c in needed if c not in header]
    if lacking:
        raise RemoteServiceError(f"XMatch response for {spec.table} lacks column(s) {', '.join(lacking)}")
    i_dist, i_id, i_ra, i_dec = (last(c) for c in needed)
    e_id, e_ra, e_dec = first(upload.id), first(upload.ra), first(upload.dec)
    echoes_position = e_ra is not None and e_dec is not None
    if e_id is None and not echoes_position:
        raise RemoteServiceError(
            f"XMatch response echoes neither {upload.id!r} nor {upload.ra!r}/{upload.dec!r}: rows cannot be mapped"
        )
    props = [(last(col), name) for col, name in spec.properties if col in header]

    by_pos = {(round(p[0], 6), round(p[1], 6)): i for i, p in enumerate(positions)}
    out: list[list[MatchRecord]] = [[] for _ in positions]
    unmapped = 0
    for row in rows[1:]:
        if len(row) != len(header):
            raise RemoteServiceError(f"XMatch CSV row has {len(row)} fields, header has {len(header)}")
        target: int | None = None
        echo = (_num(row, e_ra), _num(row, e_dec)) if e_ra is not None and e_dec is not None else None
        if e_id is not None:
            try:
                k = int(row[e_id]) - 1
            except ValueError:
                k = -1
            if 0 <= k < len(positions):
                p = positions[k]
                if echo is None or (abs(echo[0] - p[0]) <= tolerance_deg and abs(echo[1] - p[1]) <= tolerance_deg):
                    target = k
        elif echo is not None:
            target = by_pos.get((round(echo[0], 6), round(echo[1], 6)))
        if target is None:
            unmapped += 1
            continue
        properties: dict[str, PropertyValue] = {}
        for idx, name in props:
            v = _value(row[idx])
            if v is not None:
                properties[name] = v
        out[target].append(
            {
                "source_id": row[i_id].strip(),
                "ra": _num(row, i_ra),
                "dec": _num(row, i_dec),
                "separation_arcsec": _num(row, i_dist),
                "properties": properties,
            }
        )
    n_rows = len(rows) - 1
    if unmapped:
        if unmapped == n_rows:
            raise RemoteServiceError(f"none of the {n_rows} XMatch rows belongs to an uploaded position")
        log.warning("%d of %d XMatch rows of %s belong to no uploaded position; ignored", unmapped, n_rows, spec.table)
    for recs in out:
        recs.sort(key=lambda r: r["separation_arcsec"])
    return out


class SimbadAnnotator(XMatchAnnotator):
    """The SIMBAD objects nearest to each alert's position and their types.

    One CDS XMatch request per batch against ``cat2="simbad"`` (see the
    module docstring for why not ``Simbad.query_region``).  Matches carry
    ``main_id`` as ``source_id``, the SIMBAD position, the separation and
    ``otype`` (SIMBAD ``main_type``), ``other_types``, ``sp_type``,
    ``redshift`` when known; nearest first.  The annotation's properties:
    ``simbad_n_matches`` and, when there is a match, ``simbad_nearest_id``,
    ``simbad_nearest_type`` and ``simbad_nearest_sep_arcsec`` (arcsec).

    Parameters
    ----------
    radius_arcsec
        Search radius (arcsec), at most 180.
    deadline_s, cache, breaker, url, http_timeout_s, max_matches, upload, cache_ttl_s, max_workers, position_decimals
        As for :class:`XMatchAnnotator`.
    """

    name = "simbad"
    version = "0.1.0"
    adds = "Nearest SIMBAD objects (main id, object type, separation) around the alert position."

    def __init__(
        self,
        radius_arcsec: float = 5.0,
        deadline_s: float = 2.0,
        cache: Cache | None = None,
        breaker: CircuitBreaker | None = None,
        url: str | None = None,
        *,
        http_timeout_s: float = 30.0,
        max_matches: int = 5,
        upload: UploadColumns | None = None,
        cache_ttl_s: float = 86400.0,
        max_workers: int | None = None,
        position_decimals: int = 5,
        max_error_deg: float | None = None,
    ) -> None:
        super().__init__(
            (SIMBAD,),
            radius_arcsec,
            deadline_s,
            cache,
            breaker,
            url,
            http_timeout_s=http_timeout_s,
            max_matches=max_matches,
            upload=upload,
            cache_ttl_s=cache_ttl_s,
            max_workers=max_workers,
            position_decimals=position_decimals,
            max_error_deg=max_error_deg,
        )

    def summarize(self, matches: Sequence[CatalogMatch], total: int) -> dict[str, PropertyValue]:
        """``simbad_n_matches`` and the nearest object's id, type and separation (arcsec)."""
        out: dict[str, PropertyValue] = {"simbad_n_matches": total}
        if matches:
            nearest = matches[0]
            out["simbad_nearest_id"] = nearest.source_id
            out["simbad_nearest_sep_arcsec"] = nearest.separation * 3600.0
            otype = nearest.properties.get("otype")
            if otype is not None:
                out["simbad_nearest_type"] = str(otype)
        return out
