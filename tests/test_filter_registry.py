# SPDX-License-Identifier: Apache-2.0
"""Filter discovery (user folder, entry points), validation messages, and the enabled/disabled state file."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from broker.filter_registry import (
    FilterRef,
    FilterStateError,
    Registry,
    describe,
    discover,
    load_registry,
    validate,
    validate_metadata,
)
from broker.filtering import FilterRegistrationError, run_filter
from broker.formats import parse
from tests.filter_sources import BRIGHT_NU, write

HEADER = "from broker.filtering import Filter, FilterResult\n\n"

GOOD = BRIGHT_NU

ICECUBE_GOLD = Path(__file__).parent / "data/notices/voevent/icecube_amon/finkmm_icecube_voevent_number_825.xml"


def user_registry(folder: Path, state: Path | None = None) -> Registry:
    return load_registry(state, builtin_package=None, user_dir=folder, entry_point_group=None, import_user=True)


# ------------------------------------------------------------------------------------------ discovery


def test_discover_user_folder_without_importing(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    write(
        folder,
        "mine.py",
        HEADER
        + GOOD
        + textwrap.dedent("""
        class _Helper(Filter):
            pass

        class Second(BrightNu):
            name = "second"
            tags = {"second": "also bright"}

            def run(self, alert):
                return None
    """),
    )
    write(folder, "_private.py", "raise RuntimeError('never imported')\n")
    write(folder, "notes.txt", "not python\n")
    path_before = list(sys.path)
    modules_before = set(sys.modules)

    refs = discover(builtin_package=None, user_dir=folder, entry_point_group=None)
    assert refs == [
        FilterRef(kind="folder", path=(folder / "mine.py").resolve(), origin=str((folder / "mine.py").resolve()))
    ]
    new_modules = set(sys.modules) - modules_before
    assert not any(name.startswith("mmbroker_user_mine_") for name in new_modules), "discover imported user code"

    expanded = discover(builtin_package=None, user_dir=folder, entry_point_group=None, import_user=True)
    assert [r.qualname for r in expanded] == ["BrightNu", "Second"]
    assert expanded[0].origin == f"{(folder / 'mine.py').resolve()}:BrightNu"
    assert sys.path == path_before
    synthetic = [n for n in set(sys.modules) - modules_before if n.startswith("mmbroker_user_mine_")]
    assert len(synthetic) == 1

    registry = user_registry(folder)
    assert registry.errors == []
    assert list(registry.infos) == ["bright-nu", "second"]
    info = registry.get("bright-nu")
    assert info.trusted is False
    assert info.requires == ("properties.signalness",)
    assert info.overrides_run
    assert not info.overrides_run_batch
    flt = registry.load_class("bright-nu")()
    assert run_filter(flt, parse(ICECUBE_GOLD.read_bytes())) is not None


def test_discover_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = f"mmb_ep_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    write(site / pkg, "__init__.py", "")
    write(site / pkg, "one.py", HEADER + GOOD)
    write(
        site / pkg,
        "many.py",
        HEADER
        + """
class A(Filter):
    name = "ep-a"
    version = "1"
    description = "first"
    tags = {"ep-a": "a"}

    def run(self, alert):
        return None


class B(A):
    name = "ep-b"
    tags = {"ep-b": "b"}
""",
    )
    write(site / pkg, "notfilter.py", "def thing(alert):\n    return None\n")
    dist = site / f"{pkg}-0.1.dist-info"
    write(dist, "METADATA", f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 0.1\n")
    write(
        dist,
        "entry_points.txt",
        f"""
        [mmbroker.filters]
        bright = {pkg}.one:BrightNu
        several = {pkg}.many
        wrong = {pkg}.notfilter:thing
    """,
    )
    monkeypatch.syspath_prepend(str(site))

    refs = discover(builtin_package=None)
    assert [(r.kind, r.module, r.qualname) for r in refs] == [
        ("entry_point", f"{pkg}.one", "BrightNu"),
        ("entry_point", f"{pkg}.many", None),
        ("entry_point", f"{pkg}.notfilter", "thing"),
    ]
    assert refs[0].origin == f"entry point bright = {pkg}.one:BrightNu"

    registry = load_registry(builtin_package=None)
    assert list(registry.infos) == ["bright-nu", "ep-a", "ep-b"]
    assert registry.get("ep-b").ref.origin == f"entry point several = {pkg}.many:B"
    assert [str(e) for e in registry.errors] == [
        f"entry point wrong = {pkg}.notfilter:thing: is not a subclass of broker.filtering.Filter (it is a function)"
    ]


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    registry = user_registry(tmp_path / "nope")
    assert len(registry.errors) == 1
    assert "does not exist" in str(registry.errors[0])
    assert str(tmp_path / "nope") in str(registry.errors[0])


# ------------------------------------------------------------------------------------------ validation

BASE = {
    "name": '"x"',
    "version": '"1.0"',
    "description": '"a filter"',
    "requires": "()",
    "tags": '{"x-tag": "what x means"}',
    "properties": "{}",
    "files": "{}",
}
RUN = "    def run(self, alert):\n        return None\n"


def filter_source(run: str = RUN, **attrs: str | None) -> str:
    values = {**BASE, **attrs}
    body = "".join(f"    {k} = {v}\n" for k, v in values.items() if v is not None)
    return HEADER + "class Candidate(Filter):\n" + body + "\n" + run


CASES = {
    "missing-name": (filter_source(name=None), "missing or empty name"),
    "empty-version": (filter_source(version='""'), "missing or empty version"),
    "no-description": (filter_source(description=None), "missing or empty description"),
    "bad-name": (filter_source(name='"Bright Nu"'), "name 'Bright Nu' is invalid"),
    "bad-tag-name": (filter_source(tags='{"Bad Tag": "x"}'), "tag name 'Bad Tag' is invalid"),
    "empty-tag-description": (filter_source(tags='{"ok-tag": ""}'), "tag 'ok-tag' needs a non-empty description"),
    "tags-not-dict": (filter_source(tags='("a", "b")'), "tags must be a dict of name -> description, got tuple"),
    "bad-property": (filter_source(properties='{"SNR": "signal to noise"}'), "property name 'SNR' is invalid"),
    "reserved-tag": (filter_source(tags='{"gw": "gravitational waves"}'), "tag(s) 'gw' are reserved"),
    "unknown-requirement": (filter_source(requires='("sky",)'), "unknown required field 'sky'"),
    "requires-str": (filter_source(requires='"skymap"'), "requires must be a tuple of field names, got str"),
    "no-run": (filter_source(run="    pass\n"), "implements neither run(self, alert) nor run_batch(self, alerts)"),
    "run-no-arg": (
        filter_source(run="    def run(self):\n        return None\n"),
        "run(self) has a bad signature: expected run(self, alert)",
    ),
    "run-two-args": (
        filter_source(run="    def run(self, alert, other):\n        return None\n"),
        "run(self, alert, other) has a bad signature",
    ),
    "run-batch-kwonly": (
        filter_source(run="    def run_batch(self, *, alerts):\n        return []\n"),
        "run_batch(self, alerts) has a bad signature: expected run_batch(self, alerts)",
    ),
    "setup-no-files": (
        filter_source(run=RUN + "    def setup(self):\n        pass\n"),
        "setup(self) has a bad signature: expected setup(self, files)",
    ),
    "run-not-method": (filter_source(run="    run = 3\n"), "run is not a method (it is a int)"),
    "missing-file": (filter_source(files='{"model": "model.bin"}'), "declared file 'model' does not exist: "),
    "import-error": (
        HEADER + "raise RuntimeError('cannot load the model')\n",
        "import failed: RuntimeError: cannot load",
    ),
    "no-filter": ("X = 1\n", "defines no Filter subclass"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validation_messages(tmp_path: Path, case: str) -> None:
    source, expected = CASES[case]
    folder = tmp_path / "filters"
    bad = write(folder, f"{case.replace('-', '_')}.py", source)
    write(folder, "good.py", HEADER + GOOD)

    registry = user_registry(folder)

    assert list(registry.infos) == ["bright-nu"], "the good filter must still register"
    assert len(registry.errors) == 1, [str(e) for e in registry.errors]
    message = str(registry.errors[0])
    assert expected in message
    assert str(bad.resolve()) in message, f"message does not say where: {message}"
    if case == "missing-file":
        assert str((folder / "model.bin").resolve()) in message


def test_all_problems_of_a_class_in_one_message(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    write(folder, "multi.py", filter_source(version='""', tags='{"gw": "x"}', requires='("nope",)'))
    (error,) = user_registry(folder).errors
    text = str(error)
    assert "filter 'x' (Candidate)" in text
    for part in ("missing or empty version", "reserved", "unknown required field 'nope'"):
        assert part in text


def test_declared_file_resolved_next_to_module(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    write(folder, "withfile.py", filter_source(files='{"model": "data/model.txt"}'))
    write(folder / "data", "model.txt", "42\n")
    registry = user_registry(folder)
    assert registry.errors == []
    assert registry.get("x").files == {"model": (folder / "data" / "model.txt").resolve()}


def test_duplicate_names_name_both_origins(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    first = write(folder, "a_first.py", HEADER + GOOD)
    second = write(folder, "b_second.py", HEADER + GOOD)
    registry = user_registry(folder)
    assert list(registry.infos) == ["bright-nu"]
    assert registry.get("bright-nu").ref.path == first.resolve()
    (error,) = registry.errors
    assert str(error) == (
        f"duplicate filter name 'bright-nu': defined by {first.resolve()}:BrightNu "
        f"and by {second.resolve()}:BrightNu; the second is refused"
    )


def test_not_a_filter_subclass() -> None:
    ref = FilterRef(kind="entry_point", module="json", qualname="dumps", origin="entry point j = json:dumps")
    with pytest.raises(FilterRegistrationError, match=r"^entry point j = json:dumps: is not a subclass"):
        validate(json.dumps, ref)


def test_forged_metadata_is_refused_not_crashing(tmp_path: Path) -> None:
    """What the sandbox process reports is data to check, whatever its shape."""
    ref = FilterRef(kind="folder", path=tmp_path / "x.py", qualname="X", origin=f"{tmp_path}/x.py:X")
    forged: dict[str, object] = {
        "is_filter": True,
        "name": "x",
        "version": ["1"],
        "description": None,
        "requires": {"sequence": [1, "far"], "type": "tuple"},
        "tags": {"mapping": [["t", 3], [4, "x"]]},
        "properties": "oops",
        "files": {"mapping": [["f", {"path": "/definitely/not/here"}]]},
        "methods": {"run": {"overridden": True, "kind": "function", "params": "garbage"}},
    }
    with pytest.raises(FilterRegistrationError) as err:
        validate_metadata(forged, ref)
    text = str(err.value)
    for part in (
        "missing or empty version",
        "missing or empty description",
        "required field 1 is not a string",
        "tag 't' needs a non-empty description",
        "tag name 4 is invalid",
        "properties must be a dict",
        "declared file 'f' does not exist",
        "run: malformed signature report",
    ):
        assert part in text, part
    assert describe(object())["is_filter"] is False


# ------------------------------------------------------------------------------------------ state file


def test_enable_disable_persist_and_refresh(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD)
    state = tmp_path / "state" / "filters-state.json"
    worker = user_registry(folder, state)
    cli = user_registry(folder, state)
    assert worker.is_enabled("bright-nu")
    assert worker.refresh() is False

    cli.disable("bright-nu", "too many false positives")
    data = json.loads(state.read_text())
    assert data["bright-nu"]["enabled"] is False
    assert data["bright-nu"]["reason"] == "too many false positives"
    assert data["bright-nu"]["since"].endswith("Z")
    assert not list(state.parent.glob(".filters-state.json.*")), "temporary file left behind"

    assert worker.is_enabled("bright-nu"), "no refresh yet"
    assert worker.refresh() is True
    assert not worker.is_enabled("bright-nu")
    assert worker.state("bright-nu").reason == "too many false positives"
    assert worker.enabled() == []
    assert worker.refresh() is False

    cli.enable("bright-nu")
    assert worker.refresh() is True
    assert worker.is_enabled("bright-nu")
    assert user_registry(folder, state).is_enabled("bright-nu")

    with pytest.raises(FilterStateError, match="no filter named 'nope'"):
        cli.disable("nope", "typo")


def test_state_file_yaml_and_malformed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD)
    state = tmp_path / "filters-state.yaml"
    reg = user_registry(folder, state)
    reg.disable("bright-nu", "maintenance")
    assert yaml.safe_load(state.read_text())["bright-nu"]["enabled"] is False

    state.write_text("bright-nu: [this is: not valid")
    with caplog.at_level(logging.WARNING, logger="broker.filter_registry"):
        assert reg.refresh() is False
    assert not reg.is_enabled("bright-nu"), "a malformed file must not change the state"
    assert "malformed" in caplog.text
    assert str(state) in caplog.text
    with pytest.raises(FilterStateError, match="malformed"):
        user_registry(folder, state)
