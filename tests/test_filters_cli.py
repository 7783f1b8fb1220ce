# SPDX-License-Identifier: Apache-2.0
"""``mmbroker filters show|enable|disable|test`` (``new``, ``list`` and ``test FILE`` run in the tutorial test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli.main import main
from tests.corpus import NOTICES


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_show_enable_disable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    state = ("--state-dir", str(tmp_path))
    status, out, _ = _run(capsys, "filters", "show", "gw-significant", *state)
    info = json.loads(out)
    assert status == 0
    assert info["built_in"] is True
    assert set(info["tags"]) == {"gw-significant", "kilonova-candidate"}
    assert info["topics"] == ["mmbroker.tag.gw-significant", "mmbroker.tag.kilonova-candidate"]
    assert _run(capsys, "filters", "disable", "gw-significant", "--reason", "maintenance", *state)[0] == 0
    status, out, _ = _run(capsys, "filters", "list", *state)
    assert "disabled: maintenance" in out
    assert json.loads((tmp_path / "filters-state.json").read_text())["gw-significant"]["enabled"] is False
    assert _run(capsys, "filters", "enable", "gw-significant", *state)[0] == 0
    assert json.loads((tmp_path / "filters-state.json").read_text())["gw-significant"]["enabled"] is True
    status, _, err = _run(capsys, "filters", "disable", "no-such-filter", *state)
    assert status == 1
    assert "no filter named 'no-such-filter'" in err


def test_test_a_builtin_on_real_notices(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = _run(
        capsys, "filters", "test", "gw-significant", "--on", str(NOTICES / "igwn"), "--json", "--state-dir",
        str(tmp_path),
    )
    assert status == 0
    result = json.loads(out)
    expected = json.loads((NOTICES.parent / "expected" / "filters" / "tags.json").read_text())["notices"]
    want = sorted(k for k, v in expected.items() if k.startswith("igwn/") and "gw-significant" in v["tags"])
    got = sorted(str(Path(t["notice"]).relative_to(NOTICES)) for t in result["tagged"] if "gw-significant" in t["tags"])
    assert got == want
    assert got
    assert result["summary"]["errors"] == 0
    assert result["summary"]["runtime_s"]["p50"] is not None
