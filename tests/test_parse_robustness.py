# SPDX-License-Identifier: Apache-2.0
"""Damaged real notices are rejected with a reason, never crash a parser.

Every real notice is truncated at several points and has bytes flipped at
seeded random places; each damaged payload must either still parse to a
valid alert or raise :class:`RejectedNotice` - no other exception.
"""

from __future__ import annotations

import json
import math
import random
import zlib

import pytest

from broker.errors import RejectedNotice
from broker.formats import parse
from broker.model import Alert
from tests.corpus import NOTICES, notice_files

SMALL = [p for p in notice_files() if p.stat().st_size < 50_000 and p.name != "PROVENANCE.md"]


def damaged(raw: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [raw[: int(len(raw) * f)] for f in (0.1, 0.5, 0.9, 0.99)]
    for _ in range(8):
        b = bytearray(raw)
        for _ in range(3):
            b[rng.randrange(len(b))] = rng.randrange(256)
        out.append(bytes(b))
    return out


def assert_valid(alert: Alert) -> None:
    pos = alert.position
    if pos is not None:
        assert 0.0 <= pos[0] < 360.0
        assert -90.0 <= pos[1] <= 90.0
    if alert.far is not None:
        assert math.isfinite(alert.far)
        assert alert.far >= 0.0


@pytest.mark.parametrize("path", SMALL, ids=[str(p.relative_to(NOTICES)) for p in SMALL])
def test_damaged_notice_is_rejected_or_valid(path) -> None:  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    for i, bad in enumerate(damaged(raw, seed=zlib.crc32(path.name.encode()))):
        try:
            alert = parse(bad, "gcn.notices.test")
        except RejectedNotice as exc:
            reason = exc.reason
        else:
            assert_valid(alert)
            continue
        assert reason, f"variant {i}: empty reason"


@pytest.mark.parametrize("value", [None, "", "abc", [], {}, True, -1e400, 1e400])
def test_wrong_types_in_a_real_gcn_notice(value: object) -> None:
    path = NOTICES / "gcn-json/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json"
    doc = json.loads(path.read_text())
    for key in ("ra", "dec", "ra_dec_error", "trigger_time", "id", "far", "containment_probability", "record_number"):
        mutated = dict(doc, **{key: value})
        try:
            alert = parse(json.dumps(mutated).encode(), "gcn.notices.icecube")
        except RejectedNotice:
            continue
        assert_valid(alert)
