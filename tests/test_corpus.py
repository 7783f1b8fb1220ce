# SPDX-License-Identifier: Apache-2.0
"""Every real notice in the corpus becomes the expected alert or the expected rejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.avro import decode_alert, encode_alert
from broker.errors import RejectedNotice
from broker.formats import parse
from broker.replay import guess_topic
from tests.corpus import NOTICES, alert_view, check_alert, load_expectations, notice_files

FILES = notice_files()
EXPECT = load_expectations()
IDS = [str(p.relative_to(NOTICES)) for p in FILES]


def test_every_file_has_an_expectation() -> None:
    """No file may be skipped silently: each one is listed in an expectation file."""
    unlisted = [rel for rel in IDS if rel not in EXPECT and not rel.endswith("PROVENANCE.md")]
    stale = [rel for rel in EXPECT if rel not in IDS]
    assert unlisted == [], f"notices with no expectation: {unlisted}"
    assert stale == [], f"expectations for missing files: {stale}"


@pytest.mark.parametrize("rel", IDS)
def test_notice(rel: str) -> None:
    raw = (NOTICES / rel).read_bytes()
    exp = EXPECT.get(rel, {"rejected": "unknown_format"} if rel.endswith("PROVENANCE.md") else None)
    if exp is None:
        pytest.fail(f"{rel} has no expectation")
    if "rejected" in exp:
        with pytest.raises(RejectedNotice) as info:
            parse(raw, guess_topic(Path(rel)))
        assert info.value.code == exp["rejected"], info.value.reason
        assert exp.get("reason_contains", "") in info.value.reason
        return
    alert = parse(raw, guess_topic(Path(rel)))
    problems = check_alert(alert, exp)
    assert problems == [], "\n".join(problems)
    # The Avro wire form round-trips to the same alert.
    again = decode_alert(encode_alert(alert))
    assert alert_view(again) == alert_view(alert)
    assert again == alert
