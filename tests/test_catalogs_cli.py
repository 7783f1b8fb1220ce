# SPDX-License-Identifier: Apache-2.0
"""``mmbroker catalogs list|show|add|fetch`` on real catalog files and replayed VizieR responses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from annotators.catalogs import BUNDLED_DIR
from annotators.registry import catalog_specs, load_catalogs
from broker.cli.main import main
from broker.config import load_settings
from tests.cds_replay import CdsReplayServer, make_tls_cert

GALAXIES = BUNDLED_DIR / "galaxies" / "50MGC_catalog_short.fits"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_list_shows_every_bundled_catalog_with_its_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = _run(capsys, "catalogs", "list", "--state-dir", str(tmp_path))
    assert status == 0
    sizes = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:] if line[:1].strip()}
    assert sizes == {"4fgl-dr4": 7195, "4lac-dr3": 3407 + 407, "3hsp": 2013, "roma-bzcat5": 3561, "icecat-1": 348,
                     "50mgc": 15424, "swift-grb": sizes["swift-grb"]}
    assert 1700 < sizes["swift-grb"] < 1900


def test_add_registers_a_real_table_and_the_worker_loads_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = _run(
        capsys, "catalogs", "add", str(GALAXIES), "--state-dir", str(tmp_path), "--name", "my-galaxies",
        "--id", "objname", "--ra", "ra", "--dec", "dec", "--distance", "bestdist", "--property", "t_type=t_type",
        "--serves", "xray,gw",
    )
    assert status == 0, out
    assert "15424 sources" in out
    settings = load_settings(state_dir=tmp_path)
    assert "my-galaxies" in [s.name for s in catalog_specs(settings)]
    mine = next(c for c in load_catalogs(settings) if c.name == "my-galaxies")
    assert len(mine) == 15424
    assert mine.distance is not None
    status, out, _ = _run(capsys, "catalogs", "show", "my-galaxies", "--json", "--state-dir", str(tmp_path))
    info = json.loads(out)
    assert info["sources"] == 15424
    assert info["has_distance"] is True
    assert info["declaration"]["serves"] == ["xray", "gw"]
    assert "t_type" in info["first_sources"][0]
    # the same name twice is refused
    status, _, err = _run(
        capsys, "catalogs", "add", str(GALAXIES), "--state-dir", str(tmp_path), "--name", "my-galaxies",
        "--id", "objname", "--ra", "ra", "--dec", "dec",
    )
    assert status == 1
    assert "already registered" in err


def test_add_refuses_a_missing_column(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = _run(
        capsys, "catalogs", "add", str(GALAXIES), "--state-dir", str(tmp_path), "--name", "bad",
        "--id", "objname", "--ra", "RAJ2000", "--dec", "dec",
    )
    assert status == 1
    assert "50MGC_catalog_short.fits" in err
    assert "RAJ2000" in err
    assert not (tmp_path / "catalogs.yaml").exists(), "a refused catalog must not be registered"


@pytest.fixture
def vizier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CdsReplayServer]:
    """An https replay of recorded VizieR responses; requests trusts its certificate."""
    cert, key = make_tls_cert(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with CdsReplayServer(tls=(cert, key)) as server:
        yield server


def test_fetch_downloads_once_and_registers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vizier: CdsReplayServer
) -> None:
    state = tmp_path / "state"
    status, out, err = _run(capsys, "catalogs", "fetch", "B/iram/pdbi", "--server", vizier.vizier_server,
                            "--state-dir", str(state))
    assert status == 0, err
    assert vizier.count("/viz-bin/votable") == 1
    assert "registered as 'vizier-b-iram-pdbi'" in out
    cat = next(c for c in load_catalogs(load_settings(state_dir=state)) if c.name == "vizier-b-iram-pdbi")
    # the recorded response has 14 rows around AFGL 2591 (RA 307.35, Dec +40.19)
    assert len(cat) == 14
    assert abs(cat.ra[0] - 307.35362) < 1e-6
    assert abs(cat.dec[0] - 40.18883) < 1e-6
    assert (state / "catalogs" / "vizier-b-iram-pdbi.vot").exists()
    # the stream never calls VizieR again: loading reads the local copy
    load_catalogs(load_settings(state_dir=state))
    assert vizier.count("/viz-bin/votable") == 1


def test_fetch_refuses_a_table_without_j2000_positions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vizier: CdsReplayServer
) -> None:
    status, _, err = _run(capsys, "catalogs", "fetch", "J/ApJ/706/83", "--server", vizier.vizier_server,
                          "--state-dir", str(tmp_path))
    assert status == 1
    assert "J/ApJ/706/83" in err
    assert "_RAJ2000" in err
    assert "_Glon" in err
    assert not (tmp_path / "catalogs.yaml").exists()
