# SPDX-License-Identifier: Apache-2.0
"""``mmbroker search`` on a real SQLite archive of the real notices."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from astropy.io.votable import parse_single_table

from broker.archive import ArchivedAlert, Query
from broker.archive.sqlite import SQLiteArchive
from broker.cli.main import main
from tests.corpus import notice_files
from tests.test_archive_contract import archived, expected


@pytest.fixture(scope="module")
def corpus() -> list[ArchivedAlert]:
    return archived(notice_files())


@pytest.fixture(scope="module")
def archive_file(tmp_path_factory: pytest.TempPathFactory, corpus: list[ArchivedAlert]) -> Path:
    path = tmp_path_factory.mktemp("cli") / "archive.sqlite3"
    a = SQLiteArchive(path)
    a.write_batch(corpus)
    a.close()
    return path


def search(capsys: pytest.CaptureFixture[str], archive_file: Path, *args: str) -> tuple[int, str, str]:
    status = main(["search", "--archive", str(archive_file), *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_table_shows_the_hits_and_the_next_cursor(capsys: pytest.CaptureFixture[str], archive_file: Path,
                                                  corpus: list[ArchivedAlert]) -> None:
    status, out, _ = search(capsys, archive_file, "--ra", "345.8", "--dec", "9", "--radius", "2")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("time (UTC)")
    assert "IceCube" in lines[2]
    assert "345.8" in lines[2]
    assert lines[-1] == "1 shown, 1 matching"
    status, out, _ = search(capsys, archive_file, "--ra", "29", "--dec", "-63", "--radius", "15", "--format", "json")
    assert status == 0
    assert [r["broker_id"] for r in json.loads(out)] == expected(corpus, Query(cone=(29.0, -63.0, 15.0)))
    status, out, _ = search(capsys, archive_file, "--tag", "gw", "--limit", "2")
    want = expected(corpus, Query(tags=("gw",)))
    assert status == 0
    footer = out.splitlines()[-1]
    assert footer.startswith(f"2 shown, {len(want)} matching; next page: --cursor ")
    cursor = footer.rsplit(" ", 1)[-1]
    status, out, _ = search(capsys, archive_file, "--tag", "gw", "--limit", "2", "--cursor", cursor, "--format", "json")
    assert status == 0
    assert [r["broker_id"] for r in json.loads(out)] == want[2:4]


def test_every_option_reaches_the_query(capsys: pytest.CaptureFixture[str], archive_file: Path,
                                        corpus: list[ArchivedAlert]) -> None:
    args = ["--since", "2018-01-01", "--until", "60500", "--messenger", "gw", "--messenger", "gamma",
            "--mission", "LVK", "--mission", "fermi", "--prop", "far::1e-3", "--text", "s", "--latest",
            "--sort", "time_asc", "--limit", "1000", "--format", "csv"]
    status, out, err = search(capsys, archive_file, *args)
    q = Query.from_params(since="2018-01-01", until="60500", messenger=["gw", "gamma"], mission=["LVK", "fermi"],
                          prop=["far::1e-3"], text="s", latest="true", sort="time_asc", limit="1000")
    want = expected(corpus, q)
    assert status == 0
    assert len(want) > 3
    assert [r["broker_id"] for r in csv.DictReader(io.StringIO(out))] == want
    assert err.strip() == f"{len(want)} shown, {len(want)} matching"


def test_votable_to_a_file(capsys: pytest.CaptureFixture[str], archive_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "result.xml"
    status, out, _ = search(capsys, archive_file, "--tag", "neutrino", "--format", "votable", "--output",
                            str(target))
    assert status == 0
    table = parse_single_table(str(target)).to_table()
    assert len(table) > 3
    assert out.strip() == f"{len(table)} shown, {len(table)} matching"
    assert str(table["ra"].unit) == "deg"
    assert all("neutrino" in t.split(";") for t in table["tags"])


@pytest.mark.parametrize(("args", "message"), [
    (["--ra", "400", "--dec", "0", "--radius", "1"], "ra 400 deg is outside [0, 360)"),
    (["--ra", "10", "--dec", "0", "--radius", "0"], "radius 0 deg must be > 0"),
    (["--ra", "10", "--dec", "0", "--radius", "-1"], "radius -1 deg must be > 0"),
    (["--tag", "no-such-tag"], "unknown tag 'no-such-tag': known tags are"),
    (["--since", "2020-02-01", "--until", "2020-01-01"], "inverted time range: since 2020-02-01T00:00:00+00:00"),
    (["--prop", "far"], "prop 'far' must be name:low:high"),
    (["--ra", "10"], "a cone needs ra, dec and radius (deg): dec, radius missing"),
    (["--cursor", "xyz"], "cursor is not valid"),
])
def test_bad_parameters_are_one_line_errors(capsys: pytest.CaptureFixture[str], archive_file: Path,
                                            args: list[str], message: str) -> None:
    status, out, err = search(capsys, archive_file, *args)
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"mmbroker search: error: {message}")


def test_missing_archive_is_an_error_not_a_new_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = search(capsys, tmp_path / "nope.sqlite3")
    assert status == 1
    assert err.startswith(f"mmbroker search: error: no archive at {tmp_path / 'nope.sqlite3'}")
    assert not (tmp_path / "nope.sqlite3").exists()
