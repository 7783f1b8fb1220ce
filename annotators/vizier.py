# SPDX-License-Identifier: Apache-2.0
"""Download a VizieR table once, keep it as a local VOTable, and declare it as a catalog.

``mmbroker catalogs fetch VIZIER_ID`` uses this: the table is asked from
VizieR through astroquery with the J2000 positions VizieR computes
(``_RAJ2000``/``_DEJ2000``, deg), written under ``<state_dir>/catalogs/``
and registered like any local catalog, so the stream never calls VizieR.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from astropy.table import Table

from annotators.catalogs import CatalogSpec
from broker.errors import CatalogError

log = logging.getLogger(__name__)

RA_COLUMN, DEC_COLUMN = "_RAJ2000", "_DEJ2000"


def slug(vizier_id: str) -> str:
    """Catalog name for a VizieR id: ``"B/iram/pdbi"`` -> ``"vizier-b-iram-pdbi"``."""
    return "vizier-" + re.sub(r"[^a-z0-9]+", "-", vizier_id.lower()).strip("-")


def _id_column(table: Table) -> str | None:
    """The main identifier column by UCD (``meta.id;meta.main``), else the first ``meta.id`` one."""
    for wanted in ("meta.id;meta.main", "meta.id"):
        for col in table.columns.values():
            ucd = str(getattr(col, "meta", {}).get("ucd", "") or "")
            if ucd.startswith(wanted) and col.dtype.kind in "USOiu":
                return str(col.name)
    return None


def fetch_vizier_table(
    vizier_id: str, dest_dir: Path, *, name: str | None = None, server: str | None = None, timeout_s: float = 120.0
) -> CatalogSpec:
    """Download ``vizier_id`` (all rows) into ``dest_dir`` and return its catalog declaration.

    Parameters
    ----------
    vizier_id
        VizieR catalogue or table id, e.g. ``"J/ApJS/247/33/4lac_h"`` or ``"B/iram/pdbi"``.
    dest_dir
        Folder receiving ``<name>.vot``.
    name
        Catalog name (default: :func:`slug` of the id).
    server
        VizieR mirror ``host[:port]`` (default: astroquery's configured server).
    timeout_s
        HTTP timeout (s).

    Raises
    ------
    CatalogError
        If VizieR returns no table, or a table without J2000 positions.
    """
    from astroquery.vizier import Vizier, conf  # imported here: astroquery is slow to import

    client = Vizier(row_limit=-1, columns=["**", RA_COLUMN, DEC_COLUMN], vizier_server=server or conf.server)
    client.TIMEOUT = timeout_s
    try:
        tables = client.get_catalogs(vizier_id)
    except Exception as exc:
        raise CatalogError(f"VizieR query for {vizier_id} failed: {type(exc).__name__}: {exc}") from exc
    if len(tables) == 0:
        raise CatalogError(f"VizieR returned no table for {vizier_id}")
    usable = [t for t in tables.values() if RA_COLUMN in t.colnames and DEC_COLUMN in t.colnames]
    if not usable:
        first = next(iter(tables.values()))
        raise CatalogError(
            f"VizieR table {vizier_id} has no J2000 position columns {RA_COLUMN}/{DEC_COLUMN} "
            f"(columns: {', '.join(first.colnames)})"
        )
    table = usable[0]
    if len(tables) > 1:
        log.info("VizieR returned %d tables for %s; keeping the first with positions", len(tables), vizier_id)
    catalog_name = name or slug(vizier_id)
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{catalog_name}.vot"
    id_col = _id_column(table)
    if id_col is None:  # no identifier column: the VizieR row number is the id
        table["recno"] = [str(i + 1) for i in range(len(table))]
        id_col = "recno"
    table.write(path, format="votable", overwrite=True)
    return CatalogSpec(
        name=catalog_name,
        description=str(table.meta.get("description") or table.meta.get("ID") or vizier_id),
        paths=(str(path.resolve()),),
        format="votable",
        id=id_col,
        ra=RA_COLUMN,
        dec=DEC_COLUMN,
        provenance=f"VizieR {vizier_id}, downloaded through astroquery",
        url=f"https://vizier.cds.unistra.fr/viz-bin/VizieR?-source={vizier_id}",
    )
