# SPDX-License-Identifier: Apache-2.0
"""Filter source files the filter-platform tests write into folders and packages."""

from __future__ import annotations

import textwrap
from pathlib import Path

BRIGHT_NU = """
class BrightNu(Filter):
    name = "bright-nu"
    version = "1.0"
    description = "IceCube tracks with signalness >= 0.5"
    requires = ("properties.signalness",)
    tags = {"bright-nu": "a bright neutrino"}
    properties = {"signalness": "probability that the track is astrophysical"}

    def run(self, alert):
        s = alert.properties["signalness"]
        return FilterResult(("bright-nu",), {"signalness": s}) if s >= 0.5 else None
"""

MESSENGER_ECHO = """
class Messenger(Filter):
    name = "messenger-echo"
    version = "2.1"
    description = "tags each alert with its messenger (vectorised)"
    tags = {"from-gw": "a GW alert", "from-elsewhere": "not a GW alert"}

    def run_batch(self, alerts):
        return ["from-gw" if a.messenger == "gw" else "from-elsewhere" for a in alerts]
"""


def write(folder: Path, name: str, source: str) -> Path:
    """Write ``source`` (dedented) as ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path
