# SPDX-License-Identifier: Apache-2.0
"""``mmbroker parse FILE``: print the normalized alert of one notice file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from broker.annotate import AnnotationStage
from broker.cli.common import add_settings_args, settings_from
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.render import alert_json
from broker.replay import guess_topic

HELP = "print the normalized alert of a notice file (JSON), or why it is rejected"


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``parse``."""
    p.add_argument("file", type=Path, help="notice file (GCN JSON, VOEvent XML, IGWN JSON or Avro)")
    p.add_argument("--topic", help="topic hint (default: guessed from the path)")
    p.add_argument("--annotate", action="store_true", help="also run the annotators (catalogs, sky map, CDS)")
    add_settings_args(p)


def main(args: argparse.Namespace) -> int:
    """Run ``parse``."""
    raw = args.file.read_bytes()
    try:
        alert = parse(raw, args.topic or guess_topic(args.file))
    except RejectedNotice as exc:
        print(json.dumps({"rejected": exc.code, "reason": exc.reason}, indent=2))
        return 1
    if args.annotate:
        from annotators.registry import build_annotators

        alert = AnnotationStage(build_annotators(settings_from(args))).process([alert])[0]
    print(json.dumps(alert_json(alert), indent=2))
    return 0
