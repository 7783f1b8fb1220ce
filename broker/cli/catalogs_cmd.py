# SPDX-License-Identifier: Apache-2.0
"""``mmbroker catalogs list|show|add|fetch``: the local catalogs alerts are matched against."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from broker.cli.common import add_settings_args, settings_from
from broker.config import Settings
from broker.errors import BrokerError, CatalogError
from broker.model import MESSENGERS

HELP = "list, show, add or fetch (from VizieR) the catalogs alerts are matched against"


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``catalogs``."""
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="every declared catalog, loaded and counted (errors shown, not fatal)")
    add_settings_args(ls)
    show = sub.add_parser("show", help="one catalog's declaration, size and first sources")
    add_settings_args(show)
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add = sub.add_parser("add", help="validate a local table and register it (in <state_dir>/catalogs.yaml)")
    add_settings_args(add)
    add.add_argument("file", type=Path, help="FITS, VOTable, CSV or TSV file")
    add.add_argument("--name", required=True, help="catalog name (lowercase slug)")
    add.add_argument("--id", required=True, dest="id_column", help="column of source names")
    add.add_argument("--ra", required=True, help="RA column")
    add.add_argument("--dec", required=True, help="Dec column")
    add.add_argument("--coord-unit", default="deg", choices=["deg", "sexagesimal"], help="unit of RA/Dec (default deg)")
    add.add_argument("--format", default="auto", help="auto (from the extension), fits, votable, csv, tsv, ascii")
    add.add_argument("--hdu", help="FITS HDU name or number")
    add.add_argument("--error-radius", metavar="COLUMN", help="column of per-source error radii")
    add.add_argument("--error-unit", default="deg", choices=["deg", "arcmin", "arcsec"])
    add.add_argument("--error-containment", type=float, default=0.9, help="containment of the radii (default 0.9)")
    add.add_argument("--distance", metavar="COLUMN", help="column of distances (Mpc)")
    add.add_argument("--property", action="append", default=[], metavar="NAME=COLUMN",
                     help="report COLUMN as NAME in matches (repeatable)")
    add.add_argument("--serves", help=f"comma-separated messengers to match (default: {','.join(MESSENGERS)})")
    add.add_argument("--description", default="")
    fetch = sub.add_parser("fetch", help="download a VizieR table once (astroquery) and register it")
    add_settings_args(fetch)
    fetch.add_argument("vizier_id", help="VizieR catalogue or table id, e.g. J/ApJS/247/33")
    fetch.add_argument("--name", help="catalog name (default vizier-<id>)")
    fetch.add_argument("--server", help="VizieR mirror host[:port] (default: astroquery's)")
    fetch.add_argument("--timeout", type=float, default=120.0, help="HTTP timeout, s")


def _list(settings: Settings) -> int:
    from annotators.catalogs import load_catalog
    from annotators.registry import catalog_sources

    rows = []
    for where, specs in catalog_sources(settings):
        for spec in specs:
            state = "disabled" if spec.name in settings.disabled_catalogs else "enabled"
            try:
                size = f"{len(load_catalog(spec))}"
            except BrokerError as exc:
                size, state = "-", f"ERROR: {exc}"
            rows.append((spec.name, size, ",".join(spec.serves) if len(spec.serves) < len(MESSENGERS) else "all",
                         where, state, spec.description))
    if not rows:
        print("no catalogs declared")
        return 0
    print(f"{'name':<22} {'sources':>8}  {'declared in':<14} state")
    for name, size, serves, where, state, desc in rows:
        print(f"{name:<22} {size:>8}  {Path(where).name:<14} {state}")
        print(f"{'':<33}{desc}")
        print(f"{'':<33}serves: {serves}")
    return 0 if all(not r[4].startswith("ERROR") for r in rows) else 1


def _show(settings: Settings, name: str, as_json: bool) -> int:
    from annotators.catalogs import load_catalog
    from annotators.registry import catalog_sources

    for where, specs in catalog_sources(settings):
        for spec in specs:
            if spec.name != name:
                continue
            cat = load_catalog(spec)
            first = [
                {"source_id": str(cat.source_id[i]), "ra": float(cat.ra[i]), "dec": float(cat.dec[i]),
                 **cat.properties_of(i)}
                for i in range(min(3, len(cat)))
            ]
            info: dict[str, Any] = {
                "declared_in": where, "sources": len(cat), "rows_dropped_without_position": cat.n_dropped,
                "has_distance": cat.distance is not None, "has_source_errors": cat.err_semi_major is not None,
                "declaration": spec.to_yaml_dict(), "first_sources": first,
            }
            if as_json:
                print(json.dumps(info, indent=2, default=str))
            else:
                print(yaml.safe_dump(info, sort_keys=False, allow_unicode=True), end="")
            return 0
    raise CatalogError(f"no catalog named {name!r} (see 'mmbroker catalogs list')")


def _add(settings: Settings, args: argparse.Namespace) -> int:
    from annotators.catalogs import CatalogSpec
    from annotators.registry import register_user_catalog

    props = {}
    for item in args.property:
        key, sep, col = item.partition("=")
        if not sep or not key or not col:
            raise CatalogError(f"--property {item!r}: expected NAME=COLUMN")
        props[key] = col
    decl: dict[str, Any] = {
        "name": args.name, "description": args.description, "paths": [str(args.file.resolve())],
        "format": args.format, "id": args.id_column, "ra": args.ra, "dec": args.dec, "coord_unit": args.coord_unit,
        "properties": props,
    }
    if args.hdu is not None:
        decl["hdu"] = int(args.hdu) if args.hdu.isdigit() else args.hdu
    if args.error_radius:
        decl["error"] = {"kind": "radius", "column": args.error_radius, "unit": args.error_unit,
                         "containment": args.error_containment}
    if args.distance:
        decl["distance"] = args.distance
    if args.serves:
        decl["serves"] = [s.strip() for s in args.serves.split(",") if s.strip()]
    try:
        spec = CatalogSpec.model_validate(decl)
    except ValueError as exc:
        raise CatalogError(f"catalog {args.name!r} from {args.file}: {exc}") from exc
    cat = register_user_catalog(settings, spec)
    print(f"registered catalog {spec.name!r}: {len(cat)} sources from {args.file} (in {settings.user_catalogs_file})")
    return 0


def _fetch(settings: Settings, args: argparse.Namespace) -> int:
    from annotators.registry import register_user_catalog, user_catalog_dir
    from annotators.vizier import fetch_vizier_table

    spec = fetch_vizier_table(
        args.vizier_id, user_catalog_dir(settings), name=args.name, server=args.server, timeout_s=args.timeout
    )
    cat = register_user_catalog(settings, spec)
    print(f"fetched VizieR {args.vizier_id}: {len(cat)} sources, registered as {spec.name!r} ({spec.paths[0]})")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run ``catalogs``."""
    settings = settings_from(args)
    if args.action == "list":
        return _list(settings)
    if args.action == "show":
        return _show(settings, args.name, args.json)
    if args.action == "add":
        return _add(settings, args)
    return _fetch(settings, args)
