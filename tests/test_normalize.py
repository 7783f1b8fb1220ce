# SPDX-License-Identifier: Apache-2.0
"""Normalizing batches in-process and in parse processes gives the same result."""

from __future__ import annotations

import os
import signal

from broker.model import SourceMessage
from broker.normalize import POOL_MIN_BATCH, Normalizer
from tests.corpus import notice_files


def corpus_batch() -> list[SourceMessage]:
    files = notice_files()
    assert len(files) >= POOL_MIN_BATCH
    return [SourceMessage("gcn.notices.test", 0, i, f.read_bytes()) for i, f in enumerate(files)]


def outcome(normalizer: Normalizer, batch: list[SourceMessage]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    good, bad = normalizer(batch)
    return [(s.offset, a.broker_id) for s, a in good], [(d.source.offset, d.code) for d in bad]


def test_parse_processes_give_the_in_process_result() -> None:
    batch = corpus_batch()
    local = outcome(Normalizer(8 * 2**20), batch)
    pooled = Normalizer(8 * 2**20, processes=2)
    try:
        assert outcome(pooled, batch) == local
    finally:
        pooled.close()
    assert len(local[0]) > 100
    assert len(local[1]) > 30


def test_a_killed_parse_process_loses_no_message() -> None:
    batch = corpus_batch()
    local = outcome(Normalizer(8 * 2**20), batch)
    pooled = Normalizer(8 * 2**20, processes=2)
    try:
        assert outcome(pooled, batch) == local  # the pool is up
        pool = pooled._pool
        assert pool is not None
        victim = next(iter(pool._processes))  # a parse process
        os.kill(victim, signal.SIGKILL)
        assert outcome(pooled, batch) == local  # recovered in-process, nothing lost
        assert pooled._pool is not pool, "the broken pool was replaced"
        assert outcome(pooled, batch) == local  # and the new pool works
    finally:
        pooled.close()
