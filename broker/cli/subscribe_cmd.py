# SPDX-License-Identifier: Apache-2.0
"""``mmbroker subscribe --tag gw``: print the alerts arriving on a tag topic."""

from __future__ import annotations

import argparse
import json
import time
import uuid

from broker.avro import decode_alert
from broker.cli.common import add_settings_args, settings_from, with_running_cluster
from broker.errors import KafkaError
from broker.kafka.clients import ensure_topics, make_consumer
from broker.kafka.worker import message_headers
from broker.render import alert_json, alert_line

HELP = "print alerts arriving on <prefix>.tag.<tag> (or all alerts, or the DLQ)"


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``subscribe``."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tag", help="tag whose topic to read (e.g. gw, neutrino, retraction)")
    which.add_argument("--dlq", action="store_true", help="read the dead-letter topic")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained message")
    p.add_argument("--max", type=int, default=None, help="stop after this many messages")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many idle seconds")
    p.add_argument("--json", action="store_true", help="print each alert as JSON")
    add_settings_args(p)


def main(args: argparse.Namespace) -> int:
    """Run ``subscribe``."""
    settings = with_running_cluster(settings_from(args))
    topic = settings.dlq_topic if args.dlq else (settings.tag_topic(args.tag) if args.tag else settings.alerts_topic)
    ensure_topics(settings, [topic])
    consumer = make_consumer(
        settings,
        **{"group.id": f"mmbroker-subscribe-{uuid.uuid4().hex[:8]}",
           "auto.offset.reset": "earliest" if args.from_beginning else "latest"},
    )
    consumer.subscribe([topic])
    n, last = 0, time.monotonic()
    try:
        while args.max is None or n < args.max:
            m = consumer.poll(0.5)
            if m is None:
                if args.timeout is not None and time.monotonic() - last > args.timeout:
                    break
                continue
            if m.error():
                raise KafkaError(f"subscribe failed: {m.error()}")
            last = time.monotonic()
            n += 1
            if args.dlq:
                hdr = {k: v.decode("utf-8", "replace") for k, v in message_headers(m)}
                print(f"{hdr.get('source-topic')}[{hdr.get('source-partition')}]@{hdr.get('source-offset')} "
                      f"{hdr.get('reason-code')}: {hdr.get('reason')}")
                continue
            alert = decode_alert(m.value() or b"")
            print(json.dumps(alert_json(alert)) if args.json else alert_line(alert), flush=True)
    finally:
        consumer.close()
    return 0
