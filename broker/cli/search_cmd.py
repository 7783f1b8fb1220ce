# SPDX-License-Identifier: Apache-2.0
"""``mmbroker search``: query the archive (SQLite or Elasticsearch) from the command line.

The options are those of :meth:`broker.archive.query.Query.from_params`; a
bad one prints a one-line error and exits with status 1.  The default output
is a table followed by the total and the ``--cursor`` of the next page;
``--format json|csv|votable`` writes an export instead (to ``--output`` or to
standard output, the next cursor then going to standard error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from broker.archive import AlertSummary, Page, Query, open_archive
from broker.archive.export import EXPORT_FORMATS, export
from broker.archive.query import SORT_ORDERS
from broker.cli.common import add_settings_args, settings_from
from broker.errors import ArchiveError

HELP = "search the archive: cone, time, tags, messenger, mission, property ranges, text"


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``search``."""
    p.add_argument("--ra", help="cone centre right ascension, deg [0, 360)")
    p.add_argument("--dec", help="cone centre declination, deg [-90, 90]")
    p.add_argument("--radius", help="cone radius, deg (0, 180]")
    p.add_argument("--since", help="earliest event time: ISO 8601 UTC (2019-04-25T08:18) or MJD")
    p.add_argument("--until", help="latest event time: ISO 8601 UTC or MJD")
    p.add_argument("--tag", action="append", help="required tag (repeat: all required)")
    p.add_argument("--messenger", action="append", help="messenger (repeat: any of)")
    p.add_argument("--mission", action="append", help="mission or instrument, case-insensitive (repeat: any of)")
    p.add_argument("--prop", action="append", metavar="NAME:LOW:HIGH",
                   help="numeric property range, either bound may be empty, e.g. far::1e-7 (repeat: all required)")
    p.add_argument("--text", help="case-insensitive substring of event id, name, broker id, mission, upstream ids")
    p.add_argument("--latest", action="store_true", help="only the latest version of each event")
    p.add_argument("--sort", choices=SORT_ORDERS, default="time_desc", help="order by time (default newest first)")
    p.add_argument("--limit", default="50", help="page size, 1-1000 (default 50)")
    p.add_argument("--cursor", help="the next-page cursor printed by the previous search")
    p.add_argument("--format", choices=("table", *EXPORT_FORMATS), default="table", help="output format")
    p.add_argument("--output", type=Path, help="write the result to this file instead of standard output")
    p.add_argument("--archive", type=Path, help="SQLite archive file (default: the archive_path setting)")
    add_settings_args(p)


def _table(items: tuple[AlertSummary, ...]) -> str:
    header = f"{'time (UTC)':19}  {'messenger':9} {'mission/instrument':22} {'event':24} {'kind':13} " \
             f"{'rev':>3} {'RA':>8} {'Dec':>8} {'err':>7}  tags"
    lines = [header, "-" * len(header)]
    for s in items:
        inst = f"{s.mission}/{s.instrument}" if s.instrument else s.mission
        event = s.event_name or s.event_id
        pos = f"{s.ra:8.3f} {s.dec:+8.3f}" if s.ra is not None and s.dec is not None else f"{'-':>8} {'-':>8}"
        err = f"{s.error_radius:7.3f}" if s.error_radius is not None else f"{'-':>7}"
        rev = "-" if s.revision is None else str(s.revision)
        sep = f" sep={s.separation:.3f}" if s.separation is not None else ""
        lines.append(
            f"{s.time.strftime('%Y-%m-%d %H:%M:%S')}  {s.messenger:9} {inst[:22]:22} {event[:24]:24} "
            f"{s.kind[:13]:13} {rev:>3} {pos} {err}  {','.join(s.tags)}{sep}"
        )
    return "\n".join(lines)


def _footer(page: Page) -> str:
    total = "more than 10000" if page.total is None else str(page.total)
    text = f"{len(page.items)} shown, {total} matching"
    if page.next_cursor:
        text += f"; next page: --cursor {page.next_cursor}"
    return text


def main(args: argparse.Namespace) -> int:
    """Run ``search``."""
    query = Query.from_params(
        ra=args.ra, dec=args.dec, radius=args.radius, since=args.since, until=args.until, tag=args.tag,
        messenger=args.messenger, mission=args.mission, prop=args.prop, text=args.text,
        latest="true" if args.latest else None, sort=args.sort, limit=args.limit, cursor=args.cursor,
    )
    overrides: dict[str, object] = {}
    if args.archive is not None:
        overrides = {"archive_path": args.archive, "archive_backend": "sqlite"}
    settings = settings_from(args, **overrides)
    if settings.archive_backend == "sqlite" and not settings.archive_path.is_file():
        raise ArchiveError(
            f"no archive at {settings.archive_path}: pass --archive FILE or --state-dir, or run a worker first"
        )
    archive = open_archive(settings)
    try:
        page = archive.search(query)
    finally:
        archive.close()
    if args.format == "table":
        text = f"{_table(page.items)}\n{_footer(page)}\n"
        if args.output is not None:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    data = export(page.items, args.format)
    if args.output is not None:
        args.output.write_bytes(data)
        print(_footer(page))
    else:
        sys.stdout.write(data.decode())
        if not data.endswith(b"\n"):
            sys.stdout.write("\n")
        print(_footer(page), file=sys.stderr)
    return 0
