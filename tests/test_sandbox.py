# SPDX-License-Identifier: Apache-2.0
"""The filter process: good filters' results survive every kind of misbehaving filter.

The misbehaving filters are real files in a temporary user folder; the alerts
are the real notices of ``tests/data/notices``.
"""

from __future__ import annotations

import copy
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.filter_registry import FilterRef, load_registry
from broker.filtering import FilterResult
from broker.model import Alert
from broker.sandbox import BatchOutcome, Sandbox, Skipped
from tests.corpus import parsed_alerts
from tests.filter_sources import BRIGHT_NU, MESSENGER_ECHO, write

BUDGET_S = 0.5

HEADER = "import os, socket, time\nfrom broker.filtering import Filter, FilterResult\n\n"

GOOD = BRIGHT_NU + MESSENGER_ECHO

PROBE = """
import resource


class Probe(Filter):
    name = "probe"
    version = "1"
    description = "reports what the filter process looks like"
    tags = {"probed": "ran"}
    properties = {"pid": "process id", "as_limit_mb": "RLIMIT_AS (MB)", "secret_visible": "env leak", "has_map": "x"}

    def run(self, alert):
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        return FilterResult(("probed",), {
            "pid": os.getpid(),
            "as_limit_mb": soft // 2**20,
            "secret_visible": "MMBROKER_TEST_SECRET" in os.environ,
            "has_map": alert.skymap is not None,
        })
"""

BAD = """
class Raiser(Filter):
    name = "raiser"
    version = "0.1"
    description = "raises on every alert"
    tags = {"never": "never emitted"}

    def run(self, alert):
        raise ValueError(f"cannot handle {alert.mission}")


class Looper(Filter):
    name = "looper"
    version = "0.2"
    description = "loops forever"
    tags = {"never2": "never emitted"}

    def run(self, alert):
        while True:
            pass


class Hog(Filter):
    name = "hog"
    version = "0.3"
    description = "allocates without bound"
    tags = {"never3": "never emitted"}

    def run(self, alert):
        blocks = []
        while True:
            blocks.append(bytes(64 * 2**20))


class Liar(Filter):
    name = "liar"
    version = "0.4"
    description = "emits a tag it did not declare"
    tags = {"declared": "declared"}

    def run(self, alert):
        return ("declared", "surprise")


class Caller(Filter):
    name = "caller"
    version = "0.5"
    description = "phones home"
    tags = {"never4": "never emitted"}

    def run(self, alert):
        socket.create_connection(("127.0.0.1", PORT), timeout=1).close()


class RawCaller(Filter):
    name = "raw-caller"
    version = "0.6"
    description = "phones home below the socket module"
    tags = {"never5": "never emitted"}

    def run(self, alert):
        import _socket
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", PORT))
        finally:
            s.close()


class Quitter(Filter):
    name = "quitter"
    version = "0.7"
    description = "exits the process on GW alerts"
    tags = {"never6": "never emitted"}

    def run(self, alert):
        if alert.messenger == "gw":
            os._exit(3)


class Crasher(Filter):
    name = "crasher"
    version = "0.8"
    description = "segfaults on gamma-ray alerts"
    tags = {"never7": "never emitted"}

    def run(self, alert):
        if alert.messenger == "gamma":
            import ctypes
            ctypes.string_at(0)
"""


@pytest.fixture(scope="module")
def alerts() -> list[Alert]:
    got = parsed_alerts()
    assert len(got) > 100
    return got


def user_refs(folder: Path) -> list[FilterRef]:
    reg = load_registry(None, builtin_package=None, user_dir=folder, entry_point_group=None, import_user=False)
    assert not reg.errors
    return reg.pending


def expected_bright(alert: Alert) -> FilterResult | Skipped:
    s = alert.properties.get("signalness")
    if s is None:
        return Skipped("properties.signalness")
    if float(s) >= 0.5:
        return FilterResult(("bright-nu",), {"signalness": s})
    return FilterResult()


def expected_messenger(alert: Alert) -> FilterResult:
    return FilterResult(("from-gw" if alert.messenger == "gw" else "from-elsewhere",))


def assert_good(out: dict[str, BatchOutcome], batch: list[Alert]) -> None:
    assert out["bright-nu"].outcomes == tuple(expected_bright(a) for a in batch)
    assert out["messenger-echo"].outcomes == tuple(expected_messenger(a) for a in batch)
    assert out["messenger-echo"].version == "2.1"
    for name in ("bright-nu", "messenger-echo"):
        assert out[name].errors == []
        assert out[name].disabled_reason is None
        ran = [t for o, t in zip(out[name].outcomes, out[name].run_times, strict=True) if not isinstance(o, Skipped)]
        assert all(t is not None and 0 <= t < BUDGET_S for t in ran)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    yield srv
    srv.close()


@pytest.mark.slow
def test_offenders_never_cost_good_results(
    tmp_path: Path, alerts: list[Alert], listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = listener.getsockname()[1]
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD + PROBE)
    write(folder, "bad.py", HEADER + f"PORT = {port}\n" + BAD)
    monkeypatch.setenv("MMBROKER_TEST_SECRET", "hunter2")
    rss_before = rss_mb()
    batches = [alerts[i::3] for i in range(3)]

    with Sandbox(user_refs(folder), time_budget_s=BUDGET_S, memory_limit_mb=600) as sandbox:
        assert sandbox.errors == []
        assert set(sandbox.live) == {
            "bright-nu",
            "messenger-echo",
            "probe",
            "raiser",
            "looper",
            "hog",
            "liar",
            "caller",
            "raw-caller",
            "quitter",
            "crasher",
        }
        results = [sandbox.run_batch(batch) for batch in batches]
        isolation = sandbox.isolation
        excluded = dict(sandbox.excluded)
        live = sandbox.live
        child_pids = {
            o.properties["pid"] for out in results for o in out["probe"].outcomes if isinstance(o, FilterResult)
        }

    first, batch0 = results[0], batches[0]
    for out, batch in zip(results, batches, strict=True):
        assert_good(out, batch)  # every alert of every batch, whatever happened around them
        for outcome in out.values():
            assert len(outcome.outcomes) == len(batch) == len(outcome.run_times)

    # the filter process is limited, without network, without the parent's secrets
    probe = [o for o in first["probe"].outcomes if isinstance(o, FilterResult)]
    assert len(probe) == len(batch0)
    assert {o.properties["as_limit_mb"] for o in probe} == {600}
    assert {o.properties["secret_visible"] for o in probe} == {False}
    assert os.getpid() not in child_pids

    # the looping filter: killed at the first alert it saw, excluded, every outcome an error
    looper_reason = f"exceeded time budget of 0.5 s on alert {batch0[0].broker_id}"
    assert first["looper"].disabled_reason == looper_reason
    assert first["looper"].outcomes[0] == looper_reason
    assert all(isinstance(o, str) for o in first["looper"].outcomes)
    assert excluded["looper"] == looper_reason

    # os._exit on the first GW alert; the segfault on the first gamma-ray alert
    first_gw = next(a for a in batch0 if a.messenger == "gw")
    quit_reason = f"filter process died (exit status 3) while running quitter on alert {first_gw.broker_id}"
    assert excluded["quitter"] == quit_reason == first["quitter"].disabled_reason
    first_gamma = next(a for a in batch0 if a.messenger == "gamma")
    crash_reason = f"filter process died (signal 11: SIGSEGV) while running crasher on alert {first_gamma.broker_id}"
    assert excluded["crasher"] == crash_reason
    assert first["crasher"].outcomes[batch0.index(first_gamma)] == crash_reason
    assert set(live) == {"bright-nu", "messenger-echo", "probe", "raiser", "hog", "liar", "caller", "raw-caller"}
    for later in results[1:]:
        assert "looper" not in later
        assert "quitter" not in later
        assert "crasher" not in later

    # errors that do not kill the process are per alert, and the filter keeps running
    for out, batch in zip(results, batches, strict=True):
        for alert, got in zip(batch, out["raiser"].outcomes, strict=True):
            assert isinstance(got, str)
            assert got.startswith(f"ValueError: cannot handle {alert.mission} (at ")
            assert f"{(folder / 'bad.py').resolve()}:" in got
            assert got.endswith(" in run)")
        assert all(isinstance(o, str) and "MemoryError" in o for o in out["hog"].outcomes)
        assert all(o == "filter 'liar' emitted undeclared tag(s) 'surprise'" for o in out["liar"].outcomes)
        assert all(isinstance(o, str) and "network is not available to filters" in o for o in out["caller"].outcomes)
        assert all(isinstance(o, str) and o.startswith("OSError") for o in out["raw-caller"].outcomes)
        for name in ("raiser", "hog", "liar", "caller", "raw-caller"):
            assert out[name].disabled_reason is None
    if isolation == "namespace":  # the raw socket met an empty network namespace
        assert all("Network is unreachable" in o for o in first["raw-caller"].outcomes)  # type: ignore[operator]
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody got through

    # the 600 MB the hog reached were the filter process's, not ours
    assert rss_mb() - rss_before < 100


@pytest.mark.slow
def test_looping_filter_delays_a_batch_by_budget_plus_restart(tmp_path: Path, alerts: list[Alert]) -> None:
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD)
    write(
        folder,
        "a_loop.py",
        HEADER
        + """
class Looper(Filter):
    name = "looper"
    version = "1"
    description = "loops forever on GW alerts"
    tags = {"never": "never emitted"}

    def run(self, alert):
        while alert.messenger == "gw":
            pass
""",
    )
    with Sandbox(user_refs(folder), time_budget_s=BUDGET_S, memory_limit_mb=1024) as sandbox:
        t0 = time.monotonic()
        sandbox.run_batch(alerts, ["bright-nu", "messenger-echo"])
        normal = time.monotonic() - t0

        t0 = time.monotonic()
        out = sandbox.run_batch(alerts)
        looped = time.monotonic() - t0
        restart = sandbox.start_seconds

        assert out["looper"].disabled_reason is not None
        assert out["looper"].disabled_reason.startswith("exceeded time budget of 0.5 s on alert mmb-")
        assert_good(out, alerts)
        # the looper runs first: killed at the budget, process restarted once, the others run: nothing waits longer
        assert looped < BUDGET_S + restart + 2 * normal + 0.3, (looped, restart, normal)
        assert sandbox.starts == 2
        assert sandbox.run_batch(alerts).keys() == {"bright-nu", "messenger-echo"}


def test_run_batch_failure_falls_back_to_single_alerts(tmp_path: Path, alerts: list[Alert]) -> None:
    folder = tmp_path / "filters"
    write(
        folder,
        "vector.py",
        HEADER
        + """
class Vector(Filter):
    name = "vector"
    version = "1"
    description = "vectorised, but chokes on GW alerts"
    tags = {"not-gw": "not a GW alert"}

    def run_batch(self, alerts):
        if any(a.messenger == "gw" for a in alerts):
            raise RuntimeError("GW alert in the batch")
        return ["not-gw"] * len(alerts)


class Both(Filter):
    name = "both"
    version = "1"
    description = "run_batch returns the wrong length; run fails on neutrinos"
    tags = {"ok": "fine"}

    def run_batch(self, alerts):
        return []

    def run(self, alert):
        if alert.messenger == "neutrino":
            raise KeyError("no neutrinos")
        return "ok"
""",
    )
    with Sandbox(user_refs(folder), time_budget_s=BUDGET_S, memory_limit_mb=1024) as sandbox:
        out = sandbox.run_batch(alerts)
    assert any(a.messenger == "gw" for a in alerts)
    assert any(a.messenger == "neutrino" for a in alerts)
    for alert, got in zip(alerts, out["vector"].outcomes, strict=True):
        if alert.messenger == "gw":
            assert isinstance(got, str)
            assert got.startswith("RuntimeError: GW alert in the batch")
        else:
            assert got == FilterResult(("not-gw",))
    for alert, got in zip(alerts, out["both"].outcomes, strict=True):
        if alert.messenger == "neutrino":
            assert isinstance(got, str)
            assert got.startswith("KeyError: 'no neutrinos'")
        else:
            assert got == FilterResult(("ok",))
    assert out["vector"].disabled_reason is None
    assert out["both"].disabled_reason is None


def test_refusals_at_start(tmp_path: Path, alerts: list[Alert]) -> None:
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD)
    write(folder, "zz_dup.py", HEADER + GOOD.split("class Messenger")[0])
    dies = write(folder, "dies_on_import.py", HEADER + "os._exit(7)\n")
    write(
        folder,
        "setups.py",
        HEADER
        + """
class BadSetup(Filter):
    name = "bad-setup"
    version = "1"
    description = "setup raises"
    tags = {"x": "x"}

    def setup(self, files):
        raise FileNotFoundError("model.bin")

    def run(self, alert):
        return None


class SlowSetup(Filter):
    name = "slow-setup"
    version = "1"
    description = "setup never returns"
    tags = {"y": "y"}

    def setup(self, files):
        while True:
            time.sleep(0.01)

    def run(self, alert):
        return None


class NotValid(Filter):
    name = "not-valid"
    version = "1"
    description = "claims a reserved tag"
    tags = {"gw": "mine"}

    def run(self, alert):
        return None
""",
    )
    registry = load_registry(None, builtin_package=None, user_dir=folder, entry_point_group=None, import_user=False)
    with Sandbox(registry.pending, BUDGET_S, 1024, registry=registry, setup_timeout_s=1.0) as sandbox:
        assert sandbox.live == ["bright-nu", "messenger-echo"]
        assert list(registry.infos) == ["bright-nu", "messenger-echo"]
        texts = sorted(str(e) for e in sandbox.errors)
        assert registry.errors == sandbox.errors
        assert len(texts) == 5, texts
        good, dup = (folder / "good.py").resolve(), (folder / "zz_dup.py").resolve()
        assert (
            f"duplicate filter name 'bright-nu': defined by {good}:BrightNu and by {dup}:BrightNu; "
            f"the second is refused" in texts
        )
        assert f"{dies.resolve()}: refused: the filter process died (exit status 7) while importing it" in texts
        assert any("'bad-setup'" in t and "setup failed: FileNotFoundError: model.bin" in t for t in texts)
        assert any("'slow-setup'" in t and "refused: setup exceeded 1 s" in t for t in texts)
        assert any("'not-valid'" in t and "reserved" in t for t in texts)
        assert_good(sandbox.run_batch(alerts), alerts)


def test_strip_skymaps(tmp_path: Path, alerts: list[Alert]) -> None:
    folder = tmp_path / "filters"
    write(
        folder,
        "probe.py",
        HEADER
        + PROBE
        + """

class MapProbe(Probe):
    name = "map-probe"
    requires = ("skymap",)
""",
    )
    with_maps = [a for a in alerts if a.skymap is not None]
    assert with_maps
    with Sandbox(user_refs(folder), BUDGET_S, 1024, strip_skymaps=True) as sandbox:
        alone = sandbox.run_batch(alerts, ["probe"])
        both = sandbox.run_batch(alerts)
    # nobody declared a need for sky maps: none sent
    assert {o.properties["has_map"] for o in alone["probe"].outcomes if isinstance(o, FilterResult)} == {False}
    # map-probe declares it: the alerts it runs on carry their maps (for every filter running on them)
    mapped = [o for o in both["map-probe"].outcomes if isinstance(o, FilterResult)]
    assert len(mapped) == len(with_maps)
    assert {o.properties["has_map"] for o in mapped} == {True}
    for alert, got in zip(alerts, both["probe"].outcomes, strict=True):
        assert isinstance(got, FilterResult)
        assert got.properties["has_map"] is (alert.skymap is not None)


@pytest.mark.slow
def test_transfer_cost_500_alerts(
    tmp_path: Path, alerts: list[Alert], record_property: Callable[[str, object], None]
) -> None:
    """Round trip of a 500-alert batch of real alerts, sky maps included (reported, loosely bounded)."""
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD)
    batch = [copy.deepcopy(a) for a in (alerts * 4)[:500]]  # distinct objects: no pickle memo sharing
    n_maps = sum(a.skymap is not None for a in batch)
    figures = {}
    for strip in (False, True):
        with Sandbox(user_refs(folder), BUDGET_S, 2048, strip_skymaps=strip) as sandbox:
            sandbox.run_batch(batch[:10])
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                out = sandbox.run_batch(batch)
                runs.append(time.perf_counter() - t0)
            assert_good(out, batch)
        figures[strip] = min(runs)
    record_property("batch_500_seconds", figures[False])
    record_property("batch_500_stripped_seconds", figures[True])
    sys.stderr.write(
        f"\n500 alerts ({n_maps} sky maps): {figures[False] * 1e3:.0f} ms per batch, "
        f"{figures[True] * 1e3:.0f} ms with sky maps stripped\n"
    )
    assert figures[False] < 2.0


def test_child_dies_with_parent(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD)
    script = write(
        tmp_path,
        "parent.py",
        f"""
        import sys, time
        from pathlib import Path
        from broker.filter_registry import load_registry
        from broker.sandbox import Sandbox

        if __name__ == "__main__":
            reg = load_registry(None, builtin_package=None, user_dir=Path({str(folder)!r}), entry_point_group=None,
                                import_user=False)
            sandbox = Sandbox(reg.pending, 0.5, 1024)
            print(sandbox._proc.pid, flush=True)
            time.sleep(60)
    """,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert Path(f"/proc/{child_pid}").exists()
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child_pid}").exists() and time.monotonic() < deadline:
        with open(f"/proc/{child_pid}/stat") as fh:
            if fh.read().split(") ")[1].startswith("Z"):  # zombie: dead, waiting for init to reap it
                break
        time.sleep(0.05)
    else:
        assert not Path(f"/proc/{child_pid}").exists(), "the filter process outlived its parent"


def test_close_stops_the_process(tmp_path: Path, alerts: list[Alert]) -> None:
    folder = tmp_path / "filters"
    write(folder, "good.py", HEADER + GOOD)
    with Sandbox(user_refs(folder), BUDGET_S, 1024) as sandbox:
        proc = sandbox._proc
        assert proc is not None
        assert proc.is_alive()
        assert_good(sandbox.run_batch(alerts), alerts)
    assert sandbox._proc is None
    assert Sandbox([], BUDGET_S, 1024).run_batch(alerts) == {}, "no contributed filters: no process"
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    assert soft == resource.RLIM_INFINITY, "the limit must apply to the filter process only"
