# SPDX-License-Identifier: Apache-2.0
"""Feeding notice files into Kafka topics (``mmbroker replay`` and the demo)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from broker.config import Settings
from broker.kafka.clients import ensure_topics, make_producer

_SKIP_NAMES = {"PROVENANCE.md", "README.md", "LICENSE"}


def sample_dir() -> Path:
    """Folder of the bundled real notices the demo replays."""
    return Path(str(resources.files("broker").joinpath("data", "samples")))


def notice_paths(paths: Iterable[Path]) -> list[Path]:
    """Files under ``paths`` (folders walked recursively, sorted; provenance notes left out)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name not in _SKIP_NAMES))
        else:
            out.append(p)
    return out


def guess_topic(path: Path) -> str:
    """The upstream topic a notice file would arrive on, from its folder names.

    ``.../gcn-json/<mission>/...`` -> ``gcn.notices.<mission>``;
    ``.../voevent/<mission>/...`` -> ``gcn.classic.voevent.<MISSION>``;
    ``.../igwn/...`` -> ``igwn.gwalert``; anything else -> ``gcn.notices.unknown``.
    The worker decides the format from the content; the topic is only a hint.
    """
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1] if i + 2 < len(parts) else "unknown"
        if part == "gcn-json":
            return f"gcn.notices.{nxt.lstrip('_')}"
        if part == "voevent" and (i == 0 or parts[i - 1] != "igwn"):
            return f"gcn.classic.voevent.{nxt.upper()}"
        if part == "igwn":
            return "igwn.gwalert"
    return "gcn.notices.unknown"


def replay(
    settings: Settings, files: list[Path], topic: str | None = None, partitions: int | None = None
) -> dict[str, int]:
    """Produce each file's bytes as one message; return the count per topic."""
    routed = [(topic or guess_topic(f), f) for f in files]
    ensure_topics(settings, sorted({t for t, _ in routed}), partitions or settings.input_partitions)
    producer = make_producer(settings)
    counts: dict[str, int] = {}
    for t, f in routed:
        data = f.read_bytes()
        while True:
            try:
                producer.produce(t, value=data, key=f.name.encode())
                break
            except BufferError:
                producer.poll(0.05)
        counts[t] = counts.get(t, 0) + 1
    producer.flush(30)
    return counts
