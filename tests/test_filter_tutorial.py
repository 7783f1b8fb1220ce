# SPDX-License-Identifier: Apache-2.0
"""The README's "Write your first filter" tutorial, command by command, as a newcomer types it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tutorial_commands() -> list[str]:
    """The commands of the tutorial's code block, in order."""
    text = README.read_text()
    section = text.split("### Write your first filter", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the tutorial has a bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def _mmbroker(cmd: str) -> list[str]:
    argv = shlex.split(cmd)
    assert argv[0] == "mmbroker", cmd
    return [sys.executable, "-m", "broker.cli.main", *argv[1:]]


@pytest.mark.slow
def test_the_tutorial_works_as_written(tmp_path: Path) -> None:
    commands = tutorial_commands()
    assert [c.split()[1] for c in commands] == ["filters", "filters", "filters", "up", "subscribe"]
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    t0 = time.monotonic()

    def run(cmd: str) -> str:
        proc = subprocess.run(_mmbroker(cmd), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
        return proc.stdout

    out = run(commands[0])
    assert (tmp_path / ".mmbroker/filters/my_neutrinos.py").exists(), out
    out = run(commands[1])
    # the real IceCube notices with signalness >= 0.5 among the bundled ones
    assert "tags: my-neutrinos x5" in out, out
    assert "IceCubeCascade-220801a" in out, out
    out = run(commands[2])
    assert re.search(r"^my-neutrinos\s+0\.1\.0\s+folder\s+enabled", out, re.M), out
    up = subprocess.Popen(
        [*_mmbroker(commands[3]), "--port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / ".mmbroker" / "bootstrap").exists():
            assert up.poll() is None, up.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "mmbroker up did not start"
            time.sleep(0.2)
        out = run(commands[4])
    finally:
        up.terminate()
        up.wait(60)
    events = [line for line in out.splitlines() if "tags=" in line]
    assert len(events) == 5, out  # the same five real notices the test command showed
    assert all("my-neutrinos" in line and " neutrino " in line for line in events), out
    assert time.monotonic() - t0 < 600, "the tutorial must fit in ten minutes"
