# SPDX-License-Identifier: Apache-2.0
"""``mmbroker run``: a worker on a configured Kafka cluster."""

from __future__ import annotations

import argparse
import logging
import signal

from broker.archive import open_archive
from broker.cli.common import add_settings_args, settings_from, with_running_cluster
from broker.config import Settings
from broker.kafka.worker import Worker

HELP = "run one worker of the consumer group on the configured cluster"
log = logging.getLogger(__name__)


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``run``."""
    add_settings_args(p)
    p.add_argument("--group-id", help="consumer group (default mmbroker-worker)")
    p.add_argument("--batch-size", type=int, help="micro-batch size, messages")
    p.add_argument("--batch-timeout-ms", type=int, help="micro-batch time bound, ms")


def make_worker(settings: Settings) -> Worker:
    """A worker that stops on SIGTERM or SIGINT after finishing its current batch."""
    worker = Worker(settings, open_archive(settings))

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, registry=worker.metrics.registry)
    return worker


def main(args: argparse.Namespace) -> int:
    """Run ``run``."""
    settings = with_running_cluster(
        settings_from(
            args, group_id=args.group_id, batch_size=args.batch_size, batch_timeout_ms=args.batch_timeout_ms
        )
    )
    log.info("worker settings: %s", settings.redacted())
    make_worker(settings).run()
    return 0
