# SPDX-License-Identifier: Apache-2.0
"""The documented examples of the public API run as written (the filter API example uses bundled real notices)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["broker.filtering", "broker.model", "broker.state", "broker.sky"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
