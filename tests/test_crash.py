# SPDX-License-Identifier: Apache-2.0
"""Crash and shutdown of a worker process on the real broker: no alert is lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from broker.archive.sqlite import SQLiteArchive
from broker.avro import decode_alert
from broker.config import Settings
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.kafka.clients import client_config
from broker.replay import notice_paths, replay
from tests.corpus import NOTICES
from tests.kafka_helpers import read_topic
from tests.redis_fixture import RedisProcess, redis_server  # noqa: F401 - fixture

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BATCH = 20
REPEATS = 8


def worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "MMBROKER_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MMBROKER_PREFIX": settings.prefix,
        "MMBROKER_GROUP_ID": settings.group_id,
        "MMBROKER_INPUT_TOPICS": json.dumps(list(settings.input_topics)),
        "MMBROKER_ARCHIVE_PATH": str(settings.archive_path),
        "MMBROKER_KAFKA": json.dumps(settings.kafka),
        "MMBROKER_BATCH_SIZE": str(BATCH),
        "MMBROKER_STATE_BACKEND": settings.state_backend,
    })
    if settings.redis_url is not None:
        env["MMBROKER_REDIS_URL"] = settings.redis_url.get_secret_value()
    return subprocess.Popen([sys.executable, "-m", "broker.cli.main", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def committed(settings: Settings) -> int:
    """Input messages committed by the worker group (sum of committed offsets).

    Counted from committed offsets, not watermarks: Tansu's high watermark
    under-reports after batched produces.
    """
    c = Consumer(client_config(settings, "consumer"))
    topic = settings.input_topics[0]
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    done = sum(max(tp.offset, 0) for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10))
    c.close()
    return done


def small_notices() -> list:
    return [f for f in notice_paths([NOTICES]) if f.stat().st_size < 200_000]


def wait_for(cond: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def expected(settings: Settings, files: list) -> Counter[str]:
    out: Counter[str] = Counter()
    for f in files:
        with contextlib.suppress(RejectedNotice):
            out[parse(f.read_bytes(), settings.input_topics[0]).broker_id] += 1
    return out


def interrupted_run(settings: Settings, sig: signal.Signals) -> tuple[Counter[str], Counter[str], int]:
    """Replay, send ``sig`` to a worker mid-stream, let a second worker finish.

    Returns the alert ids read back from the alerts topic, the ids the input
    must give, and the first worker's exit status.
    """
    files = small_notices() * REPEATS
    replay(settings, files, settings.input_topics[0])
    want = expected(settings, files)
    first = worker_process(settings)
    try:
        wait_for(lambda: committed(settings) >= 300)
        first.send_signal(sig)
        status = first.wait(30)
    finally:
        first.kill()
    assert committed(settings) < len(files), "the worker finished before the signal; the test proved nothing"
    second = worker_process(settings)
    try:
        wait_for(lambda: committed(settings) == len(files))
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, second.stderr.read().decode() if second.stderr else ""
    finally:
        second.kill()
    got = Counter(decode_alert(r.value).broker_id for r in read_topic(settings, settings.alerts_topic))
    return got, want, status


def test_kill_9_mid_stream_loses_nothing(
    settings_factory: Callable[..., Settings], redis_server: RedisProcess  # noqa: F811 - fixture
) -> None:
    """Workers sharing Redis state: the input repeats each notice REPEATS times, and a notice already processed
    is skipped, so every alert is published once, plus at most the batch the killed worker published uncommitted."""
    settings = settings_factory(state_backend="redis", redis_url=redis_server.url)
    got, want, status = interrupted_run(settings, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert set(got) == set(want), "an alert is missing from the output topic"
    extra = sum(got.values()) - len(want)
    assert 0 <= extra <= BATCH, f"{extra} duplicates: more than the one uncommitted batch"
    ids = SQLiteArchive(settings.archive_path).broker_ids()
    assert sorted(ids) == sorted(want), "the archive must hold every alert exactly once"


def test_sigterm_finishes_the_batch_and_commits(
    settings_factory: Callable[..., Settings], redis_server: RedisProcess  # noqa: F811 - fixture
) -> None:
    settings = settings_factory(state_backend="redis", redis_url=redis_server.url)
    got, want, status = interrupted_run(settings, signal.SIGTERM)
    assert status == 0
    assert got == Counter(set(want)), "a graceful stop must neither lose nor repeat an alert"


def test_in_process_state_skips_repeats_within_one_worker(settings_factory: Callable[..., Settings]) -> None:
    """With the embedded default (in-process state) a restarted worker has forgotten what it processed: nothing is
    lost, repeats are skipped within each worker's life, so each alert appears at most once per worker."""
    settings = settings_factory()
    got, want, _ = interrupted_run(settings, signal.SIGTERM)
    assert set(got) == set(want)
    assert max(got.values()) <= 2
