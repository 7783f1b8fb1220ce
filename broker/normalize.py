# SPDX-License-Identifier: Apache-2.0
"""Normalizing a micro-batch: every message becomes an alert or a dead letter.

Parsing is the CPU-heavy step (an lxml VOEvent parse and its ~35 parameters,
a 1 MB sky map).  :class:`Normalizer` runs it in-process by default, or in a
pool of parse processes (``parse_processes`` setting) for batches large enough
to repay the inter-process copy; a broken pool is replaced and the batch
parsed in-process, so a dying parse process never loses a batch.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from broker.errors import RejectedNotice
from broker.formats import parse
from broker.model import Alert, SourceMessage

log = logging.getLogger(__name__)

#: Batches smaller than this are parsed in-process even with a pool (latency).
POOL_MIN_BATCH = 64


@dataclass(frozen=True)
class DeadLetter:
    """A message that did not become an alert, and why."""

    source: SourceMessage
    code: str
    reason: str
    headers: tuple[tuple[str, bytes], ...] = ()
    """Extra DLQ headers (e.g. ``filter-name`` and ``filter-version`` of a failed filter)."""


Outcome = Alert | tuple[str, str]
"""An alert, or ``(reason_code, reason)``."""


@dataclass
class PendingBatch:
    """A batch being normalized: parsed already (``outcomes``) or in the pool (``futures``)."""

    batch: Sequence[SourceMessage]
    outcomes: list[Outcome] | None = None
    futures: list[Future[list[Outcome]]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    """When normalization started (``time.perf_counter``, s), for the batch-time metric."""

    @property
    def in_pool(self) -> bool:
        """Whether the parse is still running in the pool."""
        return self.outcomes is None


def parse_one(payload: bytes, topic: str, max_size: int) -> Outcome:
    """Parse one payload; a rejection or a parser bug becomes ``(code, reason)``.

    A parser failure other than :class:`RejectedNotice` is a parser bug met on
    some input: it is reported as ``parser_error`` (and logged with its
    traceback) rather than allowed to stop the stream.
    """
    try:
        return parse(payload, topic, max_size=max_size)
    except RejectedNotice as exc:
        return exc.code, exc.reason
    except Exception as exc:  # a parser bug must not stop the stream
        log.exception("parser failed on a message of %s", topic)
        return "parser_error", f"internal parser error: {type(exc).__name__}: {exc}"


def parse_chunk(chunk: list[tuple[bytes, str]], max_size: int) -> list[Outcome]:
    """:func:`parse_one` over a chunk (the unit of work sent to a parse process)."""
    return [parse_one(payload, topic, max_size) for payload, topic in chunk]


def _child_init() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent finishes
    # its batch and then stops the pool.  SIGTERM keeps its default, so that the
    # pool can terminate its processes (a process lost mid-batch is recovered).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Normalizer:
    """Turns source messages into alerts and dead letters.

    Parameters
    ----------
    max_size
        Payloads larger than this (bytes) are dead-lettered as oversized.
    processes
        Parse processes; 0 parses in the calling process.
    """

    def __init__(self, max_size: int, processes: int = 0) -> None:
        self.max_size = max_size
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = self._new_pool() if processes > 0 else None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs librdkafka threads.
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.processes, mp_context=ctx, initializer=_child_init)

    def submit(self, batch: Sequence[SourceMessage]) -> PendingBatch:
        """Start normalizing ``batch``: in the pool for large batches, else right now."""
        work = [(m.value, m.topic) for m in batch]
        if self._pool is None or len(work) < POOL_MIN_BATCH:
            return PendingBatch(batch, outcomes=parse_chunk(work, self.max_size))
        size = -(-len(work) // (2 * self.processes))
        try:
            futures = [
                self._pool.submit(parse_chunk, work[i : i + size], self.max_size) for i in range(0, len(work), size)
            ]
        except BrokenProcessPool:
            return PendingBatch(batch, outcomes=self._recover(work))
        return PendingBatch(batch, futures=futures)

    def _recover(self, work: list[tuple[bytes, str]]) -> list[Outcome]:
        log.error("a parse process died; restarting the pool and parsing this batch in-process")
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        return parse_chunk(work, self.max_size)

    def result(
        self, pending: PendingBatch
    ) -> tuple[list[tuple[SourceMessage, Alert]], list[DeadLetter]]:
        """Wait for ``pending``; split it into (message, alert) pairs and dead letters, in input order."""
        outcomes = pending.outcomes
        if outcomes is None:
            try:
                outcomes = [o for f in pending.futures for o in f.result()]
            except BrokenProcessPool:
                outcomes = self._recover([(m.value, m.topic) for m in pending.batch])
        good: list[tuple[SourceMessage, Alert]] = []
        bad: list[DeadLetter] = []
        for src, outcome in zip(pending.batch, outcomes, strict=True):
            if isinstance(outcome, Alert):
                good.append((src, outcome))
            else:
                bad.append(DeadLetter(src, outcome[0], outcome[1]))
        return good, bad

    def __call__(
        self, batch: Sequence[SourceMessage]
    ) -> tuple[list[tuple[SourceMessage, Alert]], list[DeadLetter]]:
        """Normalize ``batch`` and wait for the result."""
        return self.result(self.submit(batch))

    def close(self) -> None:
        """Stop the parse processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
