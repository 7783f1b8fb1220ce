# SPDX-License-Identifier: Apache-2.0
"""``mmbroker replay PATH --topic T``: feed notice files into Kafka."""

from __future__ import annotations

import argparse
from pathlib import Path

from broker.cli.common import add_settings_args, settings_from, with_running_cluster
from broker.replay import notice_paths, replay

HELP = "produce notice files (or every file under folders) to a topic"


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``replay``."""
    p.add_argument("paths", nargs="+", type=Path, help="files or folders")
    p.add_argument("--topic", help="target topic (default: guessed per file from its folder)")
    add_settings_args(p)


def main(args: argparse.Namespace) -> int:
    """Run ``replay``."""
    settings = with_running_cluster(settings_from(args))
    counts = replay(settings, notice_paths(args.paths), args.topic)
    for topic, n in sorted(counts.items()):
        print(f"{n:6d}  {topic}")
    return 0
