# SPDX-License-Identifier: Apache-2.0
"""``mmbroker up``: the embedded default, end to end on one machine.

Starts the embedded Kafka-compatible broker (unless a cluster is configured),
the dashboard (``--no-ui`` to skip it), replays the bundled real notices into
the upstream topics, and runs a worker that prints every alert and dead letter
as it is published.  Another terminal can then ``mmbroker subscribe --tag gw``.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
from pathlib import Path

from broker.archive import open_archive
from broker.cli.common import add_settings_args, bootstrap_file, settings_from
from broker.cli.run_cmd import make_worker
from broker.cli.ui_cmd import choose_port, dashboard_url, start_dashboard, stop_dashboard
from broker.kafka.embedded import EmbeddedKafka, free_port
from broker.kafka.worker import BatchResult
from broker.render import alert_line
from broker.replay import notice_paths, replay, sample_dir

HELP = "start the embedded broker and the dashboard, replay the bundled real notices, run a worker"


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``up``."""
    add_settings_args(p)
    p.add_argument("--port", type=int, default=9092, help="embedded broker port (a free one if taken)")
    p.add_argument("--replay", type=Path, action="append", help="notice files/folders to replay (default: bundled)")
    p.add_argument("--no-replay", action="store_true", help="do not replay anything")
    p.add_argument("--once", action="store_true", help="exit when the replayed notices are processed")
    p.add_argument("--no-ui", action="store_true", help="do not start the dashboard")
    p.add_argument("--ui-port", type=int,
                   help="dashboard port (default: the ui_port setting, 8501; a free one if taken)")
    p.add_argument("--ui-address", default="127.0.0.1",
                   help="dashboard listen address (default 127.0.0.1; 0.0.0.0 serves other machines)")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(args: argparse.Namespace) -> int:
    """Run ``up``."""
    settings = settings_from(args, ui_port=args.ui_port)
    embedded: EmbeddedKafka | None = None
    dashboard: subprocess.Popen[bytes] | None = None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if not settings.bootstrap_servers:
        port = args.port if _port_free(args.port) else free_port()
        embedded = EmbeddedKafka(port=port, log_path=settings.state_dir / "tansu.log").start()
        settings = settings.model_copy(update={"bootstrap_servers": embedded.bootstrap_servers})
        bootstrap_file(settings).write_text(embedded.bootstrap_servers)
        print(f"embedded Kafka-compatible broker (Tansu) on {embedded.bootstrap_servers}")
    try:
        if not args.no_ui:
            ui_port = choose_port(settings.ui_port, args.ui_address)
            dashboard = start_dashboard(settings, ui_port, args.ui_address, settings.state_dir / "ui.log")
            print(f"dashboard on {dashboard_url(args.ui_address, ui_port)} (log {settings.state_dir / 'ui.log'})",
                  flush=True)
        total = 0
        if not args.no_replay:
            files = notice_paths(args.replay or [sample_dir()])
            counts = replay(settings, files)
            total = sum(counts.values())
            print(f"replayed {total} real notices into {len(counts)} upstream topics")
        print(f"alerts on {settings.alerts_topic}, substreams on {settings.tag_topic('<tag>')}, "
              f"rejects on {settings.dlq_topic}; archive {settings.archive_path}")
        print("in another terminal: mmbroker subscribe --tag gw --from-beginning")
        worker = make_worker(settings)
        seen = 0

        def report(result: BatchResult) -> None:
            nonlocal seen
            for alert in result.alerts:
                print(alert_line(alert), flush=True)
            for d in result.dead_letters:
                print(f"DLQ {d.source.coordinates} {d.code}: {d.reason}", flush=True)
            seen += result.consumed
            if args.once and seen >= total:
                worker.request_stop()

        if args.once and total == 0:
            worker.request_stop()
        worker.run(report)
        print(f"archive holds {open_archive(settings).count()} alerts")
    finally:
        if dashboard is not None:
            stop_dashboard(dashboard)
        if embedded is not None:
            embedded.stop()
            with contextlib.suppress(FileNotFoundError):
                bootstrap_file(settings).unlink()
    return 0
