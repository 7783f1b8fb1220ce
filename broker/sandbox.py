# SPDX-License-Identifier: Apache-2.0
"""Running contributed filters in a supervised process.

Every contributed filter (user folder, entry points) runs in ONE child
process, the *filter process*, started with the ``spawn`` method of
:mod:`multiprocessing`: a fresh interpreter (forking a worker that holds
librdkafka threads is unsafe), with the parent's ``sys.path``, and a
:class:`~multiprocessing.Process` the parent can ``kill()`` and ``join()``.

In the filter process, before any contributed code is imported:

* it dies with its parent (``PR_SET_PDEATHSIG`` = SIGKILL) and ignores SIGINT
  and SIGTERM (the parent decides when it stops);
* the environment is reduced to a short allow-list (no credentials);
* the network is cut: a new, empty network namespace (``unshare(CLONE_NEWNET)``,
  needs root or CAP_SYS_ADMIN; skipped otherwise), *and* ``socket.socket``,
  ``create_connection``, ``getaddrinfo``... raise
  ``PermissionError("network is not available to filters")``;
* the address space is capped (``RLIMIT_AS``): a filter allocating past it
  gets a :class:`MemoryError`, counted as its error.

Then the filter process imports the filters and describes each class as plain
data; the parent validates that description
(:func:`broker.filter_registry.validate_metadata`), and asks the child to
instantiate the accepted ones and call ``setup(files)``.

Trust goes one way: the parent sends commands and alerts pickled (protocol 5,
sky-map arrays as out-of-band buffers); the child answers in JSON only, and
the parent checks every answer (declared tags and properties, lengths), so
contributed code can never make the parent unpickle anything.

Time budget
-----------
``time_budget_s`` applies to one call of ``run`` on one alert, and to
``run_batch`` on *n* alerts as ``n * time_budget_s``.  Before each call the
child writes (filter, alert, n, start time) to a shared-memory slot; the
parent waits for the answers with a deadline taken from that slot.  A filter
past its deadline (an infinite loop included) has the process killed
(SIGKILL); it is excluded with the reason ``exceeded time budget of X s on
alert <broker_id>``, the process restarted without it, and the filters that
had not finished re-run; finished filters' results are kept.  When the process
dies (memory exhausted, segfault, ``os._exit``), the slot names the filter
that was running: it is excluded with ``filter process died (signal 9: SIGKILL)
while running X on alert <broker_id>``, and the batch resumes the same way.
``setup`` and the import of each filter file have ``setup_timeout_s``.

Transfer cost
-------------
Measured on 500 real alerts of ``tests/data/notices`` (56 with sky maps of
~19,000 pixels): 46 MB pickled in-band, 110-145 ms per batch round trip;
with the arrays as out-of-band buffers (what is done here) ~28 ms; with sky
maps left out, 3.3 MB and ~12 ms.  ``strip_skymaps=True`` sends an alert's
sky map only when a filter that will run on it declares ``skymap``,
``localization`` or ``position`` in ``requires``.  In the filter process the
arrays are read-only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import multiprocessing
import os
import pickle
import resource
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal, NoReturn

from broker.errors import BrokerError
from broker.filter_registry import (
    FilterInfo,
    FilterRef,
    Registry,
    describe,
    exception_text,
    resolve,
    validate_metadata,
)
from broker.filtering import Filter, FilterError, FilterRegistrationError, FilterResult, has_field, normalize_output
from broker.model import Alert, PropertyValue

log = logging.getLogger(__name__)

StartMethod = Literal["spawn", "forkserver", "fork"]
Isolation = Literal["namespace", "python", "none"]

NO_NETWORK = "network is not available to filters"
SKYMAP_FIELDS = frozenset({"skymap", "localization", "position"})
"""Requirements that give a filter the alerts' sky maps when ``strip_skymaps`` is on."""

_IDLE, _IMPORT, _SETUP, _RUN, _REPORT = 0, 1, 2, 3, 4
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_ENV_KEEP = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "USER", "LOGNAME", "PWD"})
_ENV_KEEP_PREFIXES = ("LC_", "PYTHON", "OMP_", "OPENBLAS_", "MKL_", "NUMEXPR_", "VIRTUAL_ENV")


class SandboxError(BrokerError):
    """The filter process cannot be started, for a reason no filter explains."""


@dataclass(frozen=True)
class Skipped:
    """The alert lacks ``missing``, a field the filter requires: the filter was not run on it."""

    missing: str


AlertOutcome = FilterResult | Skipped | str
"""What happened to one alert in one filter: a result, a skip, or an error message."""


@dataclass(frozen=True)
class BatchOutcome:
    """One filter's outcome on a batch.

    Parameters
    ----------
    name, version
        The filter.
    outcomes
        One per alert of the batch, in order: a :class:`FilterResult` (possibly
        empty), a :class:`Skipped`, or an error message (str).
    run_times
        Time spent per alert (s); ``None`` where the filter did not run
        (skips, and alerts not reached when it was excluded).  For
        ``run_batch`` the call's time divided by the number of alerts.
    disabled_reason
        Set when the filter was excluded during this batch (time budget
        exceeded, filter process died, ``setup`` failed on restart).
    """

    name: str
    version: str
    outcomes: tuple[AlertOutcome, ...]
    run_times: tuple[float | None, ...]
    disabled_reason: str | None = None

    @property
    def errors(self) -> list[tuple[int, str]]:
        """``(alert index, message)`` of every error."""
        return [(i, o) for i, o in enumerate(self.outcomes) if isinstance(o, str)]

    @property
    def skips(self) -> int:
        """Number of alerts skipped (a required field absent)."""
        return sum(isinstance(o, Skipped) for o in self.outcomes)


# --------------------------------------------------------------------------------------------- shared executor


def missing_requirement(info: FilterInfo, alert: Alert) -> str | None:
    """The first field ``info`` requires that ``alert`` lacks, or None."""
    return next((r for r in info.requires if not has_field(alert, r)), None)


def execute(
    flt: Filter,
    alerts: Sequence[Alert],
    *,
    single: bool,
    batch: bool,
    on_call: Callable[[int, int], None] | None = None,
    catch: tuple[type[BaseException], ...] = (Exception,),
) -> list[tuple[FilterResult | str, float]]:
    """Run ``flt`` on ``alerts`` (requirements already checked), isolating its errors per alert.

    ``run_batch`` is used when the class overrides it (``batch``); if it
    raises, or returns the wrong number of outputs, every alert is retried
    alone so one bad alert does not fail the others.  Outputs are checked by
    :func:`~broker.filtering.normalize_output`.

    Parameters
    ----------
    flt
        The filter instance.
    alerts
        Alerts to run on.
    single, batch
        Whether the class overrides ``run`` and ``run_batch``.
    on_call
        Called before each call with (index of the first alert, number of alerts).
    catch
        Exceptions that are the filter's errors (in the filter process: all).

    Returns
    -------
    list of (FilterResult or error message, run time in s)
        One per alert, in order.
    """
    n = len(alerts)
    if n == 0:
        return []
    if batch:
        if on_call is not None:
            on_call(0, n)
        t0 = time.perf_counter()
        try:
            outs = list(flt.run_batch(list(alerts)))
            if len(outs) != n:
                raise FilterError(f"filter {flt.name!r} run_batch returned {len(outs)} outputs for {n} alerts")
        except catch as exc:
            log.debug("filter %s: run_batch failed (%s); running alert by alert", flt.name, exception_text(exc))
        else:
            dt = (time.perf_counter() - t0) / n
            return [(_normalize(flt, out, catch), dt) for out in outs]
    results: list[tuple[FilterResult | str, float]] = []
    for i, alert in enumerate(alerts):
        if on_call is not None:
            on_call(i, 1)
        t0 = time.perf_counter()
        try:
            if single:
                out = flt.run(alert)
            else:
                outs = list(flt.run_batch([alert]))
                if len(outs) != 1:
                    raise FilterError(f"filter {flt.name!r} run_batch returned {len(outs)} outputs for 1 alert")
                out = outs[0]
        except FilterError as exc:
            res: FilterResult | str = str(exc)
        except catch as exc:
            res = exception_text(exc)
        else:
            res = _normalize(flt, out, catch)
        results.append((res, time.perf_counter() - t0))
    return results


def _normalize(flt: Filter, out: object, catch: tuple[type[BaseException], ...]) -> FilterResult | str:
    try:
        return normalize_output(flt, out)  # type: ignore[arg-type]  # checked there
    except FilterError as exc:
        return str(exc)
    except catch as exc:
        return exception_text(exc)


def check_result(info: FilterInfo, tags: object, properties: object) -> FilterResult:
    """Rebuild a result reported by the filter process, checking it against the declaration.

    Raises
    ------
    FilterError
        If the report is malformed or names an undeclared tag or property.
    """
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise FilterError(f"filter {info.name!r}: malformed tags reported by the filter process")
    if not isinstance(properties, dict):
        raise FilterError(f"filter {info.name!r}: malformed properties reported by the filter process")
    undeclared = [t for t in tags if t not in info.tags]
    if undeclared:
        raise FilterError(f"filter {info.name!r} emitted undeclared tag(s) {', '.join(map(repr, undeclared))}")
    props: dict[str, PropertyValue] = {}
    for k, v in properties.items():
        if k not in info.properties:
            raise FilterError(f"filter {info.name!r} emitted undeclared propert(ies) {k!r}")
        if not isinstance(v, bool | int | float | str):
            raise FilterError(f"filter {info.name!r} property {k!r} is a {type(v).__name__}, not bool/int/float/str")
        props[k] = v
    return FilterResult(tags=tuple(dict.fromkeys(tags)), properties=props)


# --------------------------------------------------------------------------------------------- the filter process


class _Slot:
    """What the filter process is doing, in shared memory: ``[seq, phase, a, b, n, t0]``.

    ``seq`` is odd while the child writes (a sequence lock); ``t0`` is
    :func:`time.monotonic` (one clock for all processes on Linux).
    """

    def __init__(self, array: Any) -> None:
        self._a = array

    def set(self, phase: int, a: int = -1, b: int = -1, n: int = 0) -> None:
        arr = self._a
        arr[0] += 1
        arr[1], arr[2], arr[3], arr[4], arr[5] = phase, a, b, n, time.monotonic()
        arr[0] += 1

    def read(self) -> tuple[int, int, int, int, float]:
        arr = self._a
        for _ in range(1000):
            s1 = arr[0]
            vals = arr[1:6]
            if s1 == arr[0] and int(s1) % 2 == 0:
                break
        phase, a, b, n, t0 = vals
        return int(phase), int(a), int(b), int(n), float(t0)


def _die_with_parent(parent_pid: int | None) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect


def _scrub_environment() -> None:
    for key in list(os.environ):
        if key not in _ENV_KEEP and not key.startswith(_ENV_KEEP_PREFIXES):
            del os.environ[key]


def _denied(*args: object, **kwargs: object) -> NoReturn:
    raise PermissionError(NO_NETWORK)


def _block_network() -> Isolation:
    import socket

    isolation: Isolation = "python"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) == 0:
            isolation = "namespace"
    except (OSError, AttributeError):
        pass

    class NoNetworkSocket(socket.socket):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise PermissionError(NO_NETWORK)

    socket.socket = NoNetworkSocket  # type: ignore[misc]
    for fn in ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "fromfd"):
        setattr(socket, fn, _denied)
    return isolation


def _wire(res: FilterResult | str) -> list[Any]:
    if isinstance(res, str):
        return ["error", res]
    props: dict[str, Any] = {}
    for k, v in res.properties.items():
        if isinstance(v, bool):
            props[k] = bool(v)
        elif isinstance(v, int):
            props[k] = int(v)
        elif isinstance(v, float):
            props[k] = float(v)
        else:
            props[k] = str(v)
    return ["ok", [str(t) for t in res.tags], props]


def _child_main(
    conn: Connection,
    slot_array: Any,
    refs: list[FilterRef],
    skip_refs: frozenset[int],
    memory_limit_mb: int,
    network: bool,
    parent_pid: int | None,
) -> None:
    """Entry point of the filter process (see the module docstring)."""
    _die_with_parent(parent_pid)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _scrub_environment()
    isolation: Isolation = "none" if network else _block_network()
    if memory_limit_mb > 0:
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    slot = _Slot(slot_array)

    def send(msg: dict[str, Any]) -> None:
        conn.send_bytes(json.dumps(msg).encode())

    classes: dict[str, object] = {}
    described: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, ref in enumerate(refs):
        if i in skip_refs:
            continue
        slot.set(_IMPORT, i)
        try:
            pairs = resolve(ref)
        except FilterRegistrationError as exc:
            errors.append({"ref": i, "error": str(exc)})
            continue
        except BaseException as exc:
            errors.append({"ref": i, "error": f"{ref.origin}: import failed: {exception_text(exc)}"})
            continue
        for narrowed, obj in pairs:
            key = f"{i}:{narrowed.qualname}"
            classes[key] = obj
            try:
                meta = describe(obj)
            except BaseException as exc:
                meta = {"is_filter": False, "type": f"class that cannot be described ({exception_text(exc)})"}
            described.append({"ref": i, "qualname": narrowed.qualname, "key": key, "meta": meta})
    slot.set(_IDLE)
    send({"t": "described", "filters": described, "errors": errors, "isolation": isolation})

    instances: dict[int, tuple[Filter, bool, bool]] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "close":
            return
        if msg[0] == "setup":
            for fid, key, files, single, batch in msg[1]:
                slot.set(_SETUP, fid)
                error = None
                try:
                    cls = classes[key]
                    inst = cls()  # type: ignore[operator]  # validated as a Filter subclass by the parent
                    inst.setup({k: Path(v) for k, v in files.items()})
                    instances[fid] = (inst, single, batch)
                except BaseException as exc:
                    error = exception_text(exc)
                slot.set(_IDLE)
                send({"t": "setup", "fid": fid, "error": error})
            send({"t": "ready"})
        elif msg[0] == "run":
            _, plan, nbuf = msg
            try:
                header = conn.recv_bytes()
                buffers = [conn.recv_bytes() for _ in range(nbuf)]
                alerts: dict[int, Alert] = pickle.loads(header, buffers=buffers)  # noqa: S301 - from the parent
            except BaseException as exc:
                send({"t": "fatal", "error": exception_text(exc)})
                return
            for fid, idx in plan:
                inst, single, batch = instances[fid]

                def on_call(j: int, n: int, fid: int = fid, idx: list[int] = idx) -> None:
                    slot.set(_RUN, fid, idx[j], n)

                res = execute(
                    inst, [alerts[i] for i in idx], single=single, batch=batch, on_call=on_call, catch=(BaseException,)
                )
                slot.set(_REPORT, fid)
                send({"t": "result", "fid": fid, "outcomes": [_wire(r) for r, _ in res], "times": [t for _, t in res]})
                slot.set(_IDLE)
            del alerts
            send({"t": "done"})


# --------------------------------------------------------------------------------------------- the parent side


class _ChildFailure(Exception):
    """The filter process overran a deadline, died, or broke the protocol."""

    def __init__(self, kind: Literal["timeout", "died", "protocol", "fatal"], detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.snapshot: tuple[int, int, int, int, float] = (_IDLE, -1, -1, 0, 0.0)


def _exit_text(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"signal {-exitcode}: {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


class Sandbox:
    """One supervised process running every contributed filter.

    Parameters
    ----------
    refs
        The contributed filters (e.g. :attr:`Registry.pending
        <broker.filter_registry.Registry.pending>`); imported only in the
        filter process.
    time_budget_s
        Budget of one ``run`` call on one alert (s); ``run_batch`` on *n*
        alerts gets *n* times it.
    memory_limit_mb
        Address-space limit of the filter process (MB, ``RLIMIT_AS``; the
        interpreter with numpy takes ~150 MB of it); 0 for none.
    network
        Leave the network reachable (off by default).
    start_method
        ``spawn`` (default), ``forkserver`` or ``fork`` (not with Kafka
        client threads in the parent).
    registry
        Validated filters are registered there (duplicate names checked
        against it, refusals appended to its errors).
    setup_timeout_s
        Budget of importing one filter file, of one ``setup`` call, and of
        any step of the filter process's own (s).
    strip_skymaps
        Send sky maps only to filters that declare them (see the module docstring).

    Attributes
    ----------
    infos
        The contributed filters accepted, by name.
    errors
        Refused filters (import, validation or ``setup`` failures).
    excluded
        Filters taken out of the filter process, name -> reason.
    isolation
        ``namespace`` (network namespace and Python guards), ``python``
        (guards only) or ``none``.
    start_seconds
        Duration of the last (re)start of the filter process, including
        imports and ``setup`` (s).
    """

    def __init__(
        self,
        refs: Sequence[FilterRef],
        time_budget_s: float,
        memory_limit_mb: int,
        network: bool = False,
        start_method: StartMethod = "spawn",
        *,
        registry: Registry | None = None,
        setup_timeout_s: float = 60.0,
        strip_skymaps: bool = False,
        max_message_mb: int = 256,
    ) -> None:
        if time_budget_s <= 0 or setup_timeout_s <= 0:
            raise ValueError("time_budget_s and setup_timeout_s must be positive")
        self.refs = list(refs)
        self.time_budget_s = float(time_budget_s)
        self.memory_limit_mb = int(memory_limit_mb)
        self.network = network
        self.start_method = start_method
        self.setup_timeout_s = float(setup_timeout_s)
        self.strip_skymaps = strip_skymaps
        self._max_bytes = max_message_mb * 1024 * 1024
        self._poll_s = min(0.05, self.time_budget_s / 4)
        self._registry = registry
        # typeshed's BaseContext lacks Process; the concrete contexts have it
        self._ctx: Any = multiprocessing.get_context(start_method)
        self._slot_array = self._ctx.RawArray("d", 6)
        self._slot = _Slot(self._slot_array)
        self.infos: dict[str, FilterInfo] = {}
        self.errors: list[FilterRegistrationError] = []
        self.excluded: dict[str, str] = {}
        self.isolation: Isolation | None = None
        self.start_seconds = 0.0
        self.starts = 0
        self._keys: dict[str, str] = {}  # filter name -> "ref index:qualname" in the filter process
        self._skip_refs: dict[int, str] = {}  # refs never to import again -> why
        self._fids: dict[int, str] = {}  # filter id in the current process -> name
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._last_activity = 0.0
        self._batch: Sequence[Alert] = ()
        self._needs_restart = False
        self._closed = False
        if self.refs:
            self._start(initial=True)

    # ---- public

    @property
    def live(self) -> list[str]:
        """Names of the accepted filters not excluded, in registration order."""
        return [n for n in self.infos if n not in self.excluded]

    def include(self, name: str) -> None:
        """Take ``name`` back after it was excluded (e.g. re-enabled by ``mmbroker filters enable``).

        The filter process is restarted with it before the next batch.
        """
        if name in self.excluded:
            del self.excluded[name]
            key = self._keys.get(name)
            if key is not None:
                self._skip_refs.pop(int(key.split(":", 1)[0]), None)  # try importing its file again
            self._needs_restart = True

    def run_batch(self, alerts: Sequence[Alert], names: Collection[str] | None = None) -> dict[str, BatchOutcome]:
        """Run the live filters (those in ``names``, if given) on ``alerts``.

        Never raises for what a filter does: every live filter asked for gets
        an outcome for every alert (errors for an excluded offender).

        Returns
        -------
        dict
            Filter name -> :class:`BatchOutcome`.
        """
        if self._closed:
            raise SandboxError("the sandbox is closed")
        wanted = [n for n in self.live if names is None or n in names]
        outcomes: dict[str, list[AlertOutcome | None]] = {n: [None] * len(alerts) for n in wanted}
        times: dict[str, list[float | None]] = {n: [None] * len(alerts) for n in wanted}
        disabled: dict[str, str] = {}
        pending: dict[str, list[int]] = {}
        for name in wanted:
            info = self.infos[name]
            for i, alert in enumerate(alerts):
                missing = missing_requirement(info, alert)
                if missing is None:
                    pending.setdefault(name, []).append(i)
                else:
                    outcomes[name][i] = Skipped(missing)
        self._batch = alerts
        unexplained = 0
        try:
            while pending:
                try:
                    if self._needs_restart or self._proc is None or not self._proc.is_alive():
                        self._restart()
                    for name in [n for n in pending if n in self.excluded]:
                        reason = self.excluded[name]
                        self._fail(outcomes[name], pending.pop(name), f"not run: filter disabled: {reason}")
                        disabled[name] = reason
                    if not pending:
                        break
                    self._exchange(alerts, pending, outcomes, times)
                except SandboxError as exc:
                    log.error("%s", exc)
                    for name, idx in pending.items():
                        self._fail(outcomes[name], idx, f"not run: {exc}")
                    pending.clear()
                    self._needs_restart = True
                except _ChildFailure as failure:
                    self._kill()
                    if failure.kind == "fatal":
                        log.error("filter process could not take the batch: %s", failure.detail)
                        for name, idx in pending.items():
                            self._fail(outcomes[name], idx, f"not run: filter process failed: {failure.detail}")
                        pending.clear()
                        continue
                    blamed = self._blame(failure)
                    if blamed is not None and blamed[0] not in pending:
                        blamed = None  # its results had arrived: not the cause
                    if blamed is None:
                        unexplained += 1
                        log.error("filter process failed while no filter was running (%s)", failure)
                        if unexplained >= 2:
                            for name, idx in pending.items():
                                self._fail(outcomes[name], idx, f"not run: filter process failed twice ({failure})")
                            pending.clear()
                        continue
                    name, reason, at = blamed
                    self._exclude(name, reason)
                    disabled[name] = reason
                    idx = pending.pop(name, [])
                    self._fail(outcomes[name], idx, f"not run: filter disabled: {reason}")
                    if at in idx:
                        outcomes[name][at] = reason
        finally:
            self._batch = ()
        result: dict[str, BatchOutcome] = {}
        for name in wanted:
            outs = outcomes[name]
            final = tuple(o if o is not None else "not run: no outcome" for o in outs)
            result[name] = BatchOutcome(name, self.infos[name].version, final, tuple(times[name]), disabled.get(name))
        return result

    def close(self) -> None:
        """Stop the filter process (asked nicely, then killed after 2 s)."""
        if self._closed:
            return
        self._closed = True
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("close",))
            self._proc.join(2.0)
        self._kill()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- process management

    def _spawn(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        self._slot.set(_IDLE)
        args = (
            child_conn,
            self._slot_array,
            self.refs,
            frozenset(self._skip_refs),
            self.memory_limit_mb,
            self.network,
            os.getpid() if self.start_method != "forkserver" else None,
        )
        proc = self._ctx.Process(target=_child_main, args=args, name="mmbroker-filters", daemon=True)
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        self._last_activity = time.monotonic()
        self.starts += 1

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5.0)
            with contextlib.suppress(ValueError):
                proc.close()
        if conn is not None:
            conn.close()

    def _restart(self) -> None:
        self._kill()
        self._needs_restart = False
        self._start(initial=False)

    def _start(self, initial: bool) -> None:
        """Start the filter process, describe, validate, set up; retry without each offender."""
        t_start = time.monotonic()
        unexplained = 0
        refused: dict[str, str] = {}  # key -> why (killed the process during setup)
        while True:
            self._kill()
            self._spawn()
            try:
                described = self._expect("described")
                accepted, errors = self._accept(described, initial, refused)
                setup_errors = self._setup(accepted)
            except _ChildFailure as failure:
                self._kill()
                if not self._blame_start(failure, initial, refused):
                    unexplained += 1
                    if unexplained >= 2:
                        raise SandboxError(f"the filter process cannot start: {failure}") from None
                continue
            break
        iso = described.get("isolation")
        self.isolation = iso if iso in ("namespace", "python", "none") else None
        if initial:
            errors.extend(FilterRegistrationError(why) for why in refused.values())
            for name, info in accepted.items():
                if name in setup_errors:
                    errors.append(
                        FilterRegistrationError(
                            f"filter {name!r} from {info.ref.origin} refused: setup failed: {setup_errors[name]}"
                        )
                    )
                    continue
                self.infos[name] = info
                if self._registry is not None:
                    self._registry.register(info)
            for exc in errors:
                log.error("%s", exc)
                self.errors.append(exc)
                if self._registry is not None:
                    self._registry.errors.append(exc)
        else:
            for name, why in setup_errors.items():
                self._exclude(name, f"setup failed after a restart of the filter process: {why}")
        self._needs_restart = False  # the process now runs exactly the filters not excluded
        self.start_seconds = time.monotonic() - t_start
        log.info(
            "filter process %s started in %.2f s with %d filter(s), network isolation: %s",
            self._proc.pid if self._proc else "?",
            self.start_seconds,
            len(self._fids),
            self.isolation,
        )
        if not self._fids:
            self._kill()  # nothing to run: no idle process (restarted if a filter is included again)

    def _accept(
        self, described: Mapping[str, Any], initial: bool, refused: Mapping[str, str]
    ) -> tuple[dict[str, FilterInfo], list[FilterRegistrationError]]:
        errors: list[FilterRegistrationError] = []
        accepted: dict[str, FilterInfo] = {}
        try:
            reported_errors = list(described["errors"])
            reported = list(described["filters"])
            if initial:
                for i, why in self._skip_refs.items():
                    errors.append(FilterRegistrationError(f"{self.refs[i].origin}: refused: {why}"))
                for e in reported_errors:
                    errors.append(FilterRegistrationError(str(e["error"])[:2000]))
            by_key: dict[str, FilterInfo] = {}
            for f in reported:
                ref_index, qualname, key = int(f["ref"]), str(f["qualname"]), str(f["key"])
                if key in refused:
                    continue
                ref = self.refs[ref_index].with_class(qualname)
                try:
                    info = validate_metadata(f["meta"], ref, trusted=False)
                except FilterRegistrationError as exc:
                    if initial:
                        errors.append(exc)
                    continue
                by_key[key] = info
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _ChildFailure("protocol", f"malformed description: {exc!r}") from None
        if initial:
            for key, info in by_key.items():
                try:
                    if self._registry is not None:
                        self._registry.check_name(info)
                    if info.name in accepted:
                        raise FilterRegistrationError(
                            f"duplicate filter name {info.name!r}: defined by {accepted[info.name].ref.origin} "
                            f"and by {info.ref.origin}; the second is refused"
                        )
                except FilterRegistrationError as exc:
                    errors.append(exc)
                    continue
                accepted[info.name] = info
                self._keys[info.name] = key
        else:
            for name in self.live:
                key = self._keys[name]
                if by_key.get(key) != self.infos[name]:
                    self._exclude(name, "its file or metadata changed since registration; restart the worker")
                    continue
                accepted[name] = self.infos[name]
        return accepted, errors

    def _setup(self, accepted: Mapping[str, FilterInfo]) -> dict[str, str]:
        self._fids = dict(enumerate(accepted))
        plan = [
            (
                fid,
                self._keys[name],
                {k: str(p) for k, p in accepted[name].files.items()},
                accepted[name].overrides_run,
                accepted[name].overrides_run_batch,
            )
            for fid, name in self._fids.items()
        ]
        self._send(("setup", plan))
        errors: dict[str, str] = {}
        while True:
            msg = self._next(time.monotonic() + self.setup_timeout_s * (len(plan) + 1))
            if msg.get("t") == "ready":
                break
            if msg.get("t") != "setup" or msg.get("fid") not in self._fids:
                raise _ChildFailure("protocol", f"unexpected message during setup: {str(msg)[:200]}")
            if msg.get("error") is not None:
                errors[self._fids[msg["fid"]]] = str(msg["error"])[:2000]
        for name in errors:
            self._fids = {fid: n for fid, n in self._fids.items() if n != name}
        return errors

    def _blame_start(self, failure: _ChildFailure, initial: bool, refused: dict[str, str]) -> bool:
        """Deal with a failure while starting; False if no filter explains it."""
        phase, a, _, _, _ = failure.snapshot
        status = self._failure_text(failure)
        if phase == _IMPORT and 0 <= a < len(self.refs):
            origin = self.refs[a].origin
            why = (
                f"import exceeded {self.setup_timeout_s:g} s"
                if failure.kind == "timeout"
                else f"the filter process {status} while importing it"
            )
            self._skip_refs[a] = why
            if not initial:
                for name, key in self._keys.items():
                    if key.split(":", 1)[0] == str(a) and name in self.infos:
                        self._exclude(name, f"{origin}: {why}")
            return True
        if phase in (_SETUP, _REPORT) and a in self._fids:
            name = self._fids[a]
            why = (
                f"setup exceeded {self.setup_timeout_s:g} s"
                if failure.kind == "timeout"
                else f"the filter process {status} during setup"
            )
            if initial:
                origin = self.refs[int(self._keys[name].split(":", 1)[0])].origin
                refused[self._keys[name]] = (
                    f"filter {name!r} from {origin}:{self._keys[name].split(':', 1)[1]} refused: {why}"
                )
            else:
                self._exclude(name, why)
            return True
        return False

    def _failure_text(self, failure: _ChildFailure) -> str:
        if failure.kind == "died":
            return f"died ({failure.detail})"
        if failure.kind == "protocol":
            return f"broke the sandbox protocol ({failure.detail})"
        return failure.detail

    def _blame(self, failure: _ChildFailure) -> tuple[str, str, int] | None:
        """(filter name, reason, alert index) of the filter that caused ``failure`` during a batch."""
        phase, fid, at, n, _ = failure.snapshot
        name = self._fids.get(fid)
        if name is None or phase not in (_RUN, _REPORT):
            return None
        alert_id = self._batch[at].broker_id if 0 <= at < len(self._batch) else "?"
        if phase == _REPORT:
            return name, f"filter process {self._failure_text(failure)} while reporting the results of {name}", -1
        if failure.kind == "timeout":
            if n > 1:
                reason = (
                    f"exceeded time budget of {self.time_budget_s:g} s per alert in run_batch on {n} alerts "
                    f"(first alert {alert_id})"
                )
            else:
                reason = f"exceeded time budget of {self.time_budget_s:g} s on alert {alert_id}"
        else:
            reason = f"filter process {self._failure_text(failure)} while running {name} on alert {alert_id}"
        return name, reason, at

    def _exclude(self, name: str, reason: str) -> None:
        if name not in self.excluded:
            log.warning("filter %s excluded from the filter process: %s", name, reason)
            self.excluded[name] = reason
            self._needs_restart = True

    # ---- messages

    def _send(self, obj: object, payload: Sequence[bytes | memoryview] = ()) -> None:
        """Send a command (and raw buffers); a child that stops reading is killed after ``setup_timeout_s``."""
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            raise _ChildFailure("died", "no filter process")
        watchdog = threading.Timer(self.setup_timeout_s, proc.kill)
        watchdog.start()
        try:
            conn.send(obj)
            for buf in payload:
                conn.send_bytes(buf)
        except OSError as exc:
            failure = self._death(f"{exc}")
            raise failure from None
        finally:
            watchdog.cancel()
        self._last_activity = time.monotonic()

    def _death(self, detail: str) -> _ChildFailure:
        proc = self._proc
        if proc is not None:
            proc.join(5.0)
            detail = _exit_text(proc.exitcode)
        failure = _ChildFailure("died", detail)
        failure.snapshot = self._slot.read()
        return failure

    def _next(self, cap: float) -> dict[str, Any]:
        """The next message of the filter process; raise :class:`_ChildFailure` on overrun or death."""
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            raise _ChildFailure("died", "no filter process")
        while True:
            now = time.monotonic()
            snap = self._slot.read()
            phase, _, _, n, t0 = snap
            t0 = min(t0, now) if math.isfinite(t0) else now
            if phase == _RUN:
                deadline = t0 + self.time_budget_s * max(n, 1)
            elif phase in (_IMPORT, _SETUP, _REPORT):
                deadline = t0 + self.setup_timeout_s
            else:
                deadline = self._last_activity + self.setup_timeout_s
            deadline = min(deadline, cap)
            if now >= deadline:
                failure = _ChildFailure("timeout", "")
                failure.snapshot = snap
                raise failure
            # wake up regularly: the child moves to a new call without telling us (the slot does)
            ready = wait([conn, proc.sentinel], timeout=min(deadline - now, self._poll_s))
            if conn in ready:
                try:
                    data = conn.recv_bytes(self._max_bytes)
                except EOFError:
                    raise self._death("end of pipe") from None
                except OSError as exc:
                    failure = _ChildFailure("protocol", f"unreadable message: {exc}")
                    failure.snapshot = self._slot.read()
                    raise failure from None
                self._last_activity = time.monotonic()
                try:
                    msg = json.loads(data)
                except ValueError:
                    msg = None
                if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
                    failure = _ChildFailure("protocol", "a message that is not a JSON object")
                    failure.snapshot = self._slot.read()
                    raise failure
                return msg
            if proc.sentinel in ready and not conn.poll(0):
                raise self._death("exited")

    def _expect(self, kind: str) -> dict[str, Any]:
        msg = self._next(time.monotonic() + self.setup_timeout_s * (len(self.refs) + 1))
        if msg.get("t") == "fatal":
            raise _ChildFailure("fatal", str(msg.get("error"))[:2000])
        if msg.get("t") != kind:
            raise _ChildFailure("protocol", f"expected {kind!r}, got {str(msg)[:200]}")
        return msg

    def _exchange(
        self,
        alerts: Sequence[Alert],
        pending: dict[str, list[int]],
        outcomes: dict[str, list[AlertOutcome | None]],
        times: dict[str, list[float | None]],
    ) -> None:
        """Send the batch for the pending filters and collect their results (removed from ``pending``)."""
        fid_of = {name: fid for fid, name in self._fids.items()}
        plan = [(fid_of[name], idx) for name, idx in pending.items()]
        needed: dict[int, bool] = {}
        for name, idx in pending.items():
            wants_map = bool(SKYMAP_FIELDS & set(self.infos[name].requires))
            for i in idx:
                needed[i] = needed.get(i, False) or wants_map
        payload: dict[int, Alert] = {}
        for i, wants_map in sorted(needed.items()):
            alert = alerts[i]
            if self.strip_skymaps and not wants_map and alert.skymap is not None:
                alert = replace(alert, skymap=None)
            payload[i] = alert
        buffers: list[pickle.PickleBuffer] = []
        header = pickle.dumps(payload, protocol=5, buffer_callback=buffers.append)
        self._send(("run", plan, len(buffers)), [header, *(b.raw() for b in buffers)])
        del header, buffers, payload
        cap = (
            time.monotonic()
            + self.time_budget_s * sum(len(i) for i in pending.values())
            + self.setup_timeout_s * (len(pending) + 1)
        )
        while True:
            msg = self._next(cap)
            kind = msg["t"]
            if kind == "done":
                if pending:
                    raise _ChildFailure("protocol", f"'done' before the results of {', '.join(pending)}")
                return
            if kind == "fatal":
                raise _ChildFailure("fatal", str(msg.get("error"))[:2000])
            if kind != "result" or self._fids.get(msg.get("fid", -1)) not in pending:
                raise _ChildFailure("protocol", f"unexpected message: {str(msg)[:200]}")
            name = self._fids[msg["fid"]]
            self._record(name, pending[name], msg, outcomes[name], times[name])
            del pending[name]

    def _record(
        self,
        name: str,
        idx: list[int],
        msg: Mapping[str, Any],
        outcomes: list[AlertOutcome | None],
        times: list[float | None],
    ) -> None:
        reported, run_times = msg.get("outcomes"), msg.get("times")
        if not (isinstance(reported, list) and isinstance(run_times, list) and len(reported) == len(idx)):
            raise _ChildFailure("protocol", f"results of {name} do not match its alerts")
        if len(run_times) != len(idx):
            raise _ChildFailure("protocol", f"results of {name} do not match its alerts")
        info = self.infos[name]
        for i, out, t in zip(idx, reported, run_times, strict=True):
            times[i] = float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None
            if isinstance(out, list) and len(out) == 3 and out[0] == "ok":
                try:
                    outcomes[i] = check_result(info, out[1], out[2])
                except FilterError as exc:
                    outcomes[i] = str(exc)
            elif isinstance(out, list) and len(out) == 2 and out[0] == "error":
                outcomes[i] = str(out[1])[:2000]
            else:
                outcomes[i] = "malformed outcome reported by the filter process"

    @staticmethod
    def _fail(outcomes: list[AlertOutcome | None], idx: Sequence[int], reason: str) -> None:
        for i in idx:
            if outcomes[i] is None:
                outcomes[i] = reason
