# SPDX-License-Identifier: Apache-2.0
"""``mmbroker``: one console script, one module per subcommand.

Errors print one line and exit with status 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from broker import __version__
from broker.cli import (
    catalogs_cmd,
    filters_cmd,
    parse_cmd,
    replay_cmd,
    run_cmd,
    search_cmd,
    subscribe_cmd,
    ui_cmd,
    up_cmd,
)
from broker.errors import BrokerError

COMMANDS = {
    "up": up_cmd,
    "run": run_cmd,
    "replay": replay_cmd,
    "subscribe": subscribe_cmd,
    "parse": parse_cmd,
    "catalogs": catalogs_cmd,
    "filters": filters_cmd,
    "ui": ui_cmd,
    "search": search_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="mmbroker", description="Multi-messenger astronomical alert broker.")
    parser.add_argument("--version", action="version", version=f"mmbroker {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_parser_args(p)
        p.set_defaults(func=mod.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmbroker`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import astropy  # noqa: F401 - astropy installs its own logger class for "astropy": import it before configuring

    logging.getLogger("astropy").setLevel(logging.WARNING)
    try:
        status: int = args.func(args)
    except BrokerError as exc:
        if args.debug:
            raise
        print(f"mmbroker {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
