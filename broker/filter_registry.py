# SPDX-License-Identifier: Apache-2.0
"""Finding, validating and switching filters on and off.

Filters come from three places, in this order (the first to take a name keeps it):

* **built-ins**: every :class:`~broker.filtering.Filter` subclass defined in a
  module of the ``filters`` package (trusted: they run in the worker process);
* **the user folder**: every ``*.py`` file of the folder whose name does not
  start with ``_``, each loaded under a synthetic module name
  (``mmbroker_user_<stem>_<hash>``, no ``sys.path`` edits);
* **entry points** of the group ``mmbroker.filters``: each names a Filter
  subclass (``pkg.mod:Class``) or a module (``pkg.mod``: all its Filter subclasses).

User and entry-point filters are contributed code.  :func:`discover` never
imports them unless asked (``import_user=True``, for ``mmbroker filters list``
and ``show``); a running worker imports them only inside the sandbox process
(:mod:`broker.sandbox`), which reports each class's attributes back as plain
data (:func:`describe`), and the worker validates that report here
(:func:`validate_metadata`).  Classes whose name starts with ``_`` are helpers
and are not registered.

Validation happens at registration, never when our packages are imported; a
refused filter is reported (what is wrong, and where it comes from) and the
others still register.  Each filter can be disabled and enabled again; the
state lives in a JSON or YAML file (``{name: {"enabled": bool, "reason": str,
"since": ISO-8601 UTC}}``) that a running worker re-reads when it changes, so
``mmbroker filters disable X`` acts without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import pkgutil
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml

from broker.errors import BrokerError
from broker.filtering import NAME_RE, Filter, FilterRegistrationError, check_requirement

log = logging.getLogger(__name__)

FilterKind = Literal["builtin", "folder", "entry_point"]

ENTRY_POINT_GROUP = "mmbroker.filters"
"""Entry-point group through which installed packages contribute filters."""

RESERVED_TAGS: frozenset[str] = frozenset(
    {"neutrino", "gamma", "xray", "optical", "radio", "gw", "unknown", "test", "retraction", "coincidence"}
)
"""Tags the broker itself gives (see :func:`broker.pipeline.builtin_tags`); no filter may emit them."""

METHOD_SIGNATURES: Mapping[str, str] = {
    "run": "run(self, alert)",
    "run_batch": "run_batch(self, alerts)",
    "setup": "setup(self, files)",
}
"""The expected form of each method a filter may override."""

_META_ATTRS = ("name", "version", "description", "requires", "tags", "properties", "files")


class FilterStateError(BrokerError):
    """The filter state file cannot be read or written, or names an unknown filter."""


@dataclass(frozen=True)
class FilterRef:
    """Where a filter comes from.

    Parameters
    ----------
    kind
        ``builtin`` (a module of the ``filters`` package), ``folder`` (a file
        of the user folder) or ``entry_point``.
    qualname
        Qualified name of the class in its module; ``None`` means "every Filter
        subclass defined there" (a user file or an entry point naming a module,
        before it is imported).
    module
        Import path of the module (built-ins and entry points).
    path
        The ``.py`` file (user folder).
    origin
        Human-readable place for messages, e.g. ``/home/u/filters/mine.py:BrightNu``
        or ``entry point mypkg = mypkg.filters:Thing``.
    """

    kind: FilterKind
    qualname: str | None = None
    module: str | None = None
    path: Path | None = None
    origin: str = ""

    def with_class(self, qualname: str) -> FilterRef:
        """This reference narrowed to one class (``origin`` gains ``:qualname`` if it named a whole module)."""
        if self.qualname is not None:
            return self
        return replace(self, qualname=qualname, origin=f"{self.origin}:{qualname}")


@dataclass(frozen=True)
class FilterInfo:
    """The validated description of a registered filter.

    Parameters
    ----------
    name, version, description
        As declared by the filter.
    requires
        Required alert fields (each valid for :func:`~broker.filtering.check_requirement`).
    tags, properties
        Name -> description of what the filter may emit.
    files
        Declared data files, resolved to absolute paths that existed at registration.
    trusted
        True for built-ins (run in the worker process), False for contributed
        filters (run in the sandbox process).
    ref
        Where the class is (narrowed to the class: ``ref.qualname`` is set).
    overrides_run, overrides_run_batch
        Which of ``run`` and ``run_batch`` the class implements itself.
    """

    name: str
    version: str
    description: str
    requires: tuple[str, ...]
    tags: Mapping[str, str]
    properties: Mapping[str, str]
    files: Mapping[str, Path]
    trusted: bool
    ref: FilterRef
    overrides_run: bool = True
    overrides_run_batch: bool = False


@dataclass(frozen=True)
class FilterState:
    """Whether a filter runs, why not, and since when (UTC)."""

    enabled: bool = True
    reason: str = ""
    since: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """The state as stored in the state file."""
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "since": None if self.since is None else self.since.isoformat().replace("+00:00", "Z"),
        }


# --------------------------------------------------------------------------------------------- discovery


def _synthetic_module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    return f"mmbroker_user_{stem}_{digest}"


def _load_file(path: Path) -> ModuleType:
    """Import a user ``.py`` file under its synthetic name (once per process)."""
    name = _synthetic_module_name(path)
    cached = sys.modules.get(name)
    if cached is not None:
        return cached
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FilterRegistrationError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look classes' modules up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def exception_text(exc: BaseException) -> str:
    """``Type: message (at file:line in function)`` for the innermost frame of ``exc``'s traceback."""
    text = f"{type(exc).__name__}: {exc}"
    tb = exc.__traceback__
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        text += f" (at {code.co_filename}:{tb.tb_lineno} in {code.co_name})"
    return text[:1000]


def load_module(ref: FilterRef) -> ModuleType:
    """Import the module ``ref`` points to.

    Raises
    ------
    FilterRegistrationError
        If the import fails (any exception, ``SystemExit`` included); the
        message names the origin and the error.
    """
    try:
        if ref.path is not None:
            return _load_file(ref.path)
        if ref.module is None:
            raise FilterRegistrationError(f"{ref.origin}: names neither a module nor a file")
        return importlib.import_module(ref.module)
    except FilterRegistrationError:
        raise
    except (Exception, SystemExit) as exc:
        raise FilterRegistrationError(f"{ref.origin}: import failed: {exception_text(exc)}") from exc


def filter_classes(module: ModuleType) -> list[type[Filter]]:
    """The Filter subclasses defined in ``module`` (not imported into it), in definition order.

    Classes whose name starts with ``_`` are helpers and are left out.
    """
    out: list[type[Filter]] = []
    for obj in vars(module).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, Filter)
            and obj is not Filter
            and obj.__module__ == module.__name__
            and not obj.__name__.startswith("_")
        ):
            out.append(obj)
    return out


def resolve(ref: FilterRef) -> list[tuple[FilterRef, object]]:
    """Import ``ref`` and return each class it names, with the reference narrowed to it.

    The objects are not checked here (an entry point may name anything);
    :func:`validate` does that.

    Raises
    ------
    FilterRegistrationError
        If the import fails, the named attribute is missing, or a module
        expected to hold filters defines none.
    """
    module = load_module(ref)
    if ref.qualname is None:
        classes = filter_classes(module)
        if not classes:
            raise FilterRegistrationError(
                f"{ref.origin}: defines no Filter subclass (helper modules of the filter folder must start with '_')"
            )
        return [(ref.with_class(c.__qualname__), c) for c in classes]
    obj: object = module
    for part in ref.qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise FilterRegistrationError(f"{ref.origin}: module has no attribute {ref.qualname!r}") from exc
    return [(ref, obj)]


def _builtin_refs(package: str, errors: list[FilterRegistrationError]) -> list[FilterRef]:
    try:
        pkg = importlib.import_module(package)
    except Exception as exc:
        errors.append(FilterRegistrationError(f"built-in filter package {package!r}: {exception_text(exc)}"))
        return []
    refs: list[FilterRef] = []
    for mod_info in sorted(pkgutil.iter_modules(getattr(pkg, "__path__", [])), key=lambda m: m.name):
        if mod_info.name.startswith("_"):
            continue
        modname = f"{package}.{mod_info.name}"
        ref = FilterRef(kind="builtin", module=modname, origin=f"built-in {modname}")
        try:
            module = load_module(ref)
        except FilterRegistrationError as exc:
            errors.append(exc)
            continue
        refs.extend(ref.with_class(c.__qualname__) for c in filter_classes(module))
    return refs


def _folder_refs(folder: Path, errors: list[FilterRegistrationError]) -> list[FilterRef]:
    if not folder.is_dir():
        errors.append(FilterRegistrationError(f"filter folder {folder} does not exist or is not a directory"))
        return []
    return [
        FilterRef(kind="folder", path=p.resolve(), origin=str(p.resolve()))
        for p in sorted(folder.glob("*.py"))
        if not p.name.startswith("_") and p.is_file()
    ]


def _entry_point_refs(group: str) -> list[FilterRef]:
    refs = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        origin = f"entry point {ep.name} = {ep.value}"
        refs.append(FilterRef(kind="entry_point", module=ep.module, qualname=ep.attr, origin=origin))
    return refs


def discover(
    builtin_package: str | None = "filters",
    user_dir: Path | None = None,
    entry_point_group: str | None = ENTRY_POINT_GROUP,
    *,
    import_user: bool = False,
    errors: list[FilterRegistrationError] | None = None,
) -> list[FilterRef]:
    """Every filter reference, built-ins first, then the user folder, then entry points.

    Parameters
    ----------
    builtin_package
        Package whose modules hold the built-in filters (imported: trusted);
        ``None`` for none.
    user_dir
        Folder of user filter files; ``None`` for none.
    entry_point_group
        Entry-point group to read; ``None`` for none.
    import_user
        Import user files and module entry points here to list their classes
        (for the CLI).  When False (the worker), they stay as references with
        ``qualname=None`` that the sandbox process expands.
    errors
        Receives the problems found (a file that fails to import, a missing
        folder); when omitted, the first problem is raised.

    Returns
    -------
    list of FilterRef
        One per class, or per user file / module entry point not imported.
    """
    found: list[FilterRegistrationError] = []
    refs: list[FilterRef] = []
    if builtin_package:
        refs.extend(_builtin_refs(builtin_package, found))
    user_refs: list[FilterRef] = []
    if user_dir is not None:
        user_refs.extend(_folder_refs(Path(user_dir), found))
    if entry_point_group:
        user_refs.extend(_entry_point_refs(entry_point_group))
    for ref in user_refs:
        if not import_user or ref.qualname is not None:
            refs.append(ref)
            continue
        try:
            refs.extend(r for r, _ in resolve(ref))
        except FilterRegistrationError as exc:
            found.append(exc)
    if errors is None:
        if found:
            raise found[0]
    else:
        errors.extend(found)
    return refs


# --------------------------------------------------------------------------------------------- metadata


def _plain(value: object, depth: int = 0) -> Any:
    """``value`` as JSON-safe data that keeps what validation needs to see (types and contents)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if depth >= 3:
        return {"object": type(value).__name__, "repr": "..."}
    if isinstance(value, os.PathLike):
        return {"path": os.fspath(value)}
    if isinstance(value, Mapping):
        return {"mapping": [[_plain(k, depth + 1), _plain(v, depth + 1)] for k, v in list(value.items())[:1000]]}
    if isinstance(value, list | tuple):
        return {"sequence": [_plain(v, depth + 1) for v in value[:1000]], "type": type(value).__name__}
    try:
        text = repr(value)[:200]
    except Exception:
        text = "?"
    return {"object": type(value).__name__, "repr": text}


def _method_info(cls: type, method: str) -> dict[str, Any]:
    owner = next((k for k in cls.__mro__ if method in vars(k)), Filter)
    raw = inspect.getattr_static(cls, method, None)
    info: dict[str, Any] = {"overridden": owner is not Filter, "owner": owner.__qualname__}
    if isinstance(raw, staticmethod):
        info["kind"], func = "staticmethod", raw.__func__
    elif isinstance(raw, classmethod):
        info["kind"], func = "classmethod", raw.__func__
    elif inspect.isfunction(raw):
        info["kind"], func = "function", raw
    else:
        info["kind"], func = "other", None
        info["type"] = type(raw).__name__
    if func is not None:
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            info["error"] = f"signature unavailable: {exc}"
        else:
            info["params"] = [[p.name, p.kind.name, p.default is not p.empty] for p in sig.parameters.values()]
    return info


def describe(obj: object) -> dict[str, Any]:
    """What :func:`validate_metadata` needs to know about ``obj``, as plain JSON-safe data.

    Runs where the class is (in the sandbox process for contributed filters);
    the judgement is made by whoever reads the report.
    """
    is_filter = isinstance(obj, type) and issubclass(obj, Filter) and obj is not Filter
    meta: dict[str, Any] = {"is_filter": is_filter, "type": type(obj).__name__}
    if not isinstance(obj, type) or not is_filter:
        return meta
    for attr in _META_ATTRS:
        meta[attr] = _plain(getattr(obj, attr, None))
    try:
        meta["module_file"] = inspect.getfile(obj)
    except (TypeError, OSError):
        meta["module_file"] = None
    meta["methods"] = {m: _method_info(obj, m) for m in METHOD_SIGNATURES}
    return meta


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        if "mapping" in value:
            return "dict"
        if "sequence" in value:
            return str(value.get("type", "sequence"))
        if "path" in value:
            return "Path"
        return str(value.get("object", "object"))
    return type(value).__name__


def _mapping_items(value: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(value, dict) and isinstance(value.get("mapping"), list):
        items = value["mapping"]
        if all(isinstance(kv, list) and len(kv) == 2 for kv in items):
            return [(k, v) for k, v in items]
    return None


def _check_names_mapping(what: str, one: str, value: Any, problems: list[str]) -> dict[str, str]:
    items = _mapping_items(value)
    if items is None:
        problems.append(f"{what} must be a dict of name -> description, got {_type_name(value)}")
        return {}
    out: dict[str, str] = {}
    for k, v in items:
        if not isinstance(k, str) or not NAME_RE.match(k):
            problems.append(f"{one} name {k!r} is invalid: use lowercase letters, digits, '-' and '_'")
            continue
        if not isinstance(v, str) or not v.strip():
            problems.append(f"{one} {k!r} needs a non-empty description string, got {v!r}")
            continue
        out[k] = v
    return out


def _signature_text(method: str, params: list[Any]) -> str:
    parts = []
    for name, kind, has_default in params:
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "")
        parts.append(f"{prefix}{name}{'=...' if has_default else ''}")
    return f"{method}({', '.join(parts)})"


def _check_method(method: str, info: Any, problems: list[str]) -> None:
    expected = METHOD_SIGNATURES[method]
    if not isinstance(info, dict):
        problems.append(f"{method}: no description reported")
        return
    kind = info.get("kind")
    if kind == "other":
        problems.append(f"{method} is not a method (it is a {info.get('type', 'value')}); expected {expected}")
        return
    if "error" in info:
        problems.append(f"{method}: {info['error']}")
        return
    params = info.get("params")
    if not isinstance(params, list) or not all(isinstance(p, list) and len(p) == 3 for p in params):
        problems.append(f"{method}: malformed signature report")
        return
    shown = _signature_text(method, params)
    rest = params[1:] if kind in ("function", "classmethod") else params
    if kind == "function" and not params:
        problems.append(f"{shown} takes no self; expected {expected}")
        return
    positional = [p for p in rest if p[1] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")]
    required = [p for p in positional if not p[2]]
    var_positional = any(p[1] == "VAR_POSITIONAL" for p in rest)
    required_kwonly = [p for p in rest if p[1] == "KEYWORD_ONLY" and not p[2]]
    accepts_one = len(required) == 1 or (not required and (bool(positional) or var_positional))
    if not accepts_one or required_kwonly:
        problems.append(f"{shown} has a bad signature: expected {expected}, one positional parameter besides self")


def validate_metadata(meta: Mapping[str, Any], ref: FilterRef, *, trusted: bool | None = None) -> FilterInfo:
    """Check a class description made by :func:`describe` and return the registered form.

    Parameters
    ----------
    meta
        The report (from this process or from the sandbox process: treated as
        untrusted data).
    ref
        Where the class comes from (named in every message).
    trusted
        Whether it runs in the worker process; default: ``ref.kind == "builtin"``.

    Raises
    ------
    FilterRegistrationError
        Listing every problem found, and the origin.
    """
    where = ref.origin or repr(ref)
    if not isinstance(meta, Mapping) or not meta.get("is_filter"):
        kind = meta.get("type", "object") if isinstance(meta, Mapping) else "object"
        raise FilterRegistrationError(f"{where}: is not a subclass of broker.filtering.Filter (it is a {kind})")
    problems: list[str] = []
    values: dict[str, str] = {}
    for attr in ("name", "version", "description"):
        value = meta.get(attr)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"missing or empty {attr} (a non-empty string class attribute)")
        else:
            values[attr] = value
    name = values.get("name", "")
    if name and not NAME_RE.match(name):
        problems.append(f"name {name!r} is invalid: use lowercase letters, digits, '-' and '_' ({NAME_RE.pattern})")

    requires: list[str] = []
    req = meta.get("requires")
    if not (isinstance(req, dict) and req.get("type") in ("tuple", "list")):
        problems.append(f"requires must be a tuple of field names, got {_type_name(req)}")
    else:
        for path in req.get("sequence", []):
            if not isinstance(path, str):
                problems.append(f"required field {path!r} is not a string")
                continue
            why = check_requirement(path)
            if why is not None:
                problems.append(why)
            else:
                requires.append(path)

    tags = _check_names_mapping("tags", "tag", meta.get("tags"), problems)
    reserved = sorted(set(tags) & RESERVED_TAGS)
    if reserved:
        problems.append(
            f"tag(s) {', '.join(map(repr, reserved))} are reserved for the broker's own tags "
            f"({', '.join(sorted(RESERVED_TAGS))}); choose another name"
        )
    properties = _check_names_mapping("properties", "property", meta.get("properties"), problems)

    files: dict[str, Path] = {}
    items = _mapping_items(meta.get("files"))
    module_file = meta.get("module_file")
    if items is None:
        problems.append(f"files must be a dict of name -> path, got {_type_name(meta.get('files'))}")
    else:
        for key, value in items:
            raw = value.get("path") if isinstance(value, dict) else value
            if not isinstance(key, str) or not key or not isinstance(raw, str) or not raw:
                problems.append(f"file {key!r}: needs a name and a path string, got {value!r}")
                continue
            path = Path(raw)
            if not path.is_absolute():
                if not isinstance(module_file, str):
                    problems.append(f"file {key!r}: relative path {raw!r}, but the module has no file to resolve it")
                    continue
                path = Path(module_file).parent / path
            path = path.absolute()
            if not path.exists():
                problems.append(f"declared file {key!r} does not exist: {path}")
                continue
            files[key] = path

    methods = meta.get("methods")
    if not isinstance(methods, Mapping):
        methods = {}
    overridden = {m: isinstance(methods.get(m), dict) and bool(methods[m].get("overridden")) for m in METHOD_SIGNATURES}
    if not overridden["run"] and not overridden["run_batch"]:
        problems.append("implements neither run(self, alert) nor run_batch(self, alerts)")
    for method in METHOD_SIGNATURES:
        if overridden[method]:
            _check_method(method, methods.get(method), problems)

    qualname = ref.qualname or "?"
    if problems:
        label = f"filter {name!r} ({qualname})" if name else f"filter class {qualname}"
        raise FilterRegistrationError(f"{label} from {where} refused: " + "; ".join(problems))
    return FilterInfo(
        name=name,
        version=values["version"],
        description=values["description"],
        requires=tuple(requires),
        tags=tags,
        properties=properties,
        files=files,
        trusted=ref.kind == "builtin" if trusted is None else trusted,
        ref=ref,
        overrides_run=overridden["run"],
        overrides_run_batch=overridden["run_batch"],
    )


def validate(cls: object, ref: FilterRef) -> FilterInfo:
    """Validate a filter class imported in this process (built-ins; user filters for the CLI).

    Raises
    ------
    FilterRegistrationError
        Saying what is wrong and where (``ref.origin``).
    """
    return validate_metadata(describe(cls), ref)


def overrides(cls: type, method: str) -> bool:
    """Whether ``cls`` (a Filter subclass) defines ``method`` itself rather than inheriting Filter's."""
    owner = next((k for k in cls.__mro__ if method in vars(k)), Filter)
    return owner is not Filter


# --------------------------------------------------------------------------------------------- state file


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_since(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def read_state_file(path: Path) -> dict[str, FilterState]:
    """The states stored in ``path`` (JSON, or YAML for ``.yaml``/``.yml``); empty if it does not exist.

    Raises
    ------
    FilterStateError
        If the file is unreadable or malformed; the message names the file.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FilterStateError(f"filter state file {path}: {exc}") from exc
    try:
        data = (yaml.safe_load(text) if _is_yaml(path) else json.loads(text)) if text.strip() else {}
    except (ValueError, yaml.YAMLError) as exc:
        raise FilterStateError(f"filter state file {path} is malformed: {exc}") from exc
    if not isinstance(data, dict):
        raise FilterStateError(f"filter state file {path}: expected a mapping of filter name -> state")
    out: dict[str, FilterState] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("enabled", True), bool):
            raise FilterStateError(f"filter state file {path}: entry {name!r} must be {{enabled: bool, reason, since}}")
        reason = str(entry.get("reason") or "")
        out[str(name)] = FilterState(entry.get("enabled", True), reason, _parse_since(entry.get("since")))
    return out


def write_state_file(path: Path, states: Mapping[str, FilterState]) -> None:
    """Write ``states`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {name: st.as_dict() for name, st in sorted(states.items())}
    text = yaml.safe_dump(data, sort_keys=True) if _is_yaml(path) else json.dumps(data, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (read-modify-write of the state file by CLI and worker)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- registry


@dataclass
class Registry:
    """The registered filters, the refused ones, and their enabled/disabled state.

    Attributes
    ----------
    state_path
        The state file (``None``: state kept in memory only).
    infos
        Registered filters by name, in registration order.
    errors
        Every refused filter, with the reason (registration goes on past them).
    pending
        Contributed-filter references not imported in this process; the
        sandbox process imports them and registers what it finds
        (see :class:`broker.sandbox.Sandbox`).
    """

    state_path: Path | None = None
    infos: dict[str, FilterInfo] = field(default_factory=dict)
    errors: list[FilterRegistrationError] = field(default_factory=list)
    pending: list[FilterRef] = field(default_factory=list)
    _states: dict[str, FilterState] = field(default_factory=dict, repr=False)
    _classes: dict[str, type[Filter]] = field(default_factory=dict, repr=False)
    _mtime: tuple[int, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.state_path is not None:
            self.state_path = Path(self.state_path)
            self._states = read_state_file(self.state_path)
            self._mtime = self._stat()

    # ---- registration

    def check_name(self, info: FilterInfo) -> None:
        """Raise :class:`FilterRegistrationError` if ``info.name`` is already taken (naming both origins)."""
        other = self.infos.get(info.name)
        if other is not None:
            raise FilterRegistrationError(
                f"duplicate filter name {info.name!r}: defined by {other.ref.origin} and by {info.ref.origin}; "
                f"the second is refused"
            )

    def register(self, info: FilterInfo, cls: type[Filter] | None = None) -> None:
        """Add a validated filter (``cls``: its class, when imported in this process).

        Raises
        ------
        FilterRegistrationError
            If the name is already registered.
        """
        self.check_name(info)
        self.infos[info.name] = info
        if cls is not None:
            self._classes[info.name] = cls

    def refuse(self, error: FilterRegistrationError) -> None:
        """Record a refused filter (logged at ERROR)."""
        log.error("%s", error)
        self.errors.append(error)

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def __iter__(self) -> Iterator[FilterInfo]:
        return iter(list(self.infos.values()))

    def __len__(self) -> int:
        return len(self.infos)

    def get(self, name: str) -> FilterInfo:
        """The registered filter ``name``.

        Raises
        ------
        FilterStateError
            If no such filter is registered.
        """
        try:
            return self.infos[name]
        except KeyError:
            known = ", ".join(self.infos) or "none"
            raise FilterStateError(f"no filter named {name!r} is registered (known: {known})") from None

    def load_class(self, name: str) -> type[Filter]:
        """The class of filter ``name``, importing it in this process if needed (built-ins, CLI use)."""
        cls = self._classes.get(name)
        if cls is None:
            info = self.get(name)
            (_, obj), *_ = resolve(info.ref)
            if not isinstance(obj, type) or not issubclass(obj, Filter):
                raise FilterRegistrationError(f"{info.ref.origin}: no longer a Filter subclass")
            cls = self._classes[name] = obj
        return cls

    def trusted(self) -> list[FilterInfo]:
        """Registered built-ins (run in the worker process)."""
        return [i for i in self.infos.values() if i.trusted]

    def contributed(self) -> list[FilterInfo]:
        """Registered contributed filters (run in the sandbox process)."""
        return [i for i in self.infos.values() if not i.trusted]

    # ---- state

    def state(self, name: str) -> FilterState:
        """Enabled state of ``name`` (enabled when the state file does not mention it)."""
        return self._states.get(name, FilterState())

    def is_enabled(self, name: str) -> bool:
        """Whether ``name`` is registered and not disabled."""
        return name in self.infos and self.state(name).enabled

    def enabled(self) -> list[str]:
        """Names of the registered filters that are enabled, in registration order."""
        return [n for n in self.infos if self.state(n).enabled]

    def enable(self, name: str, reason: str = "enabled") -> None:
        """Enable ``name`` and persist it."""
        self.get(name)
        self._set(name, FilterState(True, reason, _utcnow()))

    def disable(self, name: str, reason: str) -> None:
        """Disable ``name`` with ``reason`` and persist it (logged at WARNING)."""
        self.get(name)
        log.warning("filter %s disabled: %s", name, reason)
        self._set(name, FilterState(False, reason, _utcnow()))

    def _set(self, name: str, st: FilterState) -> None:
        if self.state_path is None:
            self._states[name] = st
            return
        with _locked(self.state_path):
            states = read_state_file(self.state_path)  # keep concurrent changes to other filters
            states[name] = st
            write_state_file(self.state_path, states)
            self._states = states
            self._mtime = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.state_path is None:
            return None
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh(self) -> bool:
        """Re-read the state file if it changed since last read; whether it did.

        A malformed file (e.g. edited by hand) is reported at WARNING and the
        previous state kept, so a running worker never stops on it.
        """
        if self.state_path is None:
            return False
        stamp = self._stat()
        if stamp == self._mtime:
            return False
        try:
            states = read_state_file(self.state_path)
        except FilterStateError as exc:
            log.warning("%s; keeping the previous filter states", exc)
            return False
        self._mtime = stamp
        changed = states != self._states
        self._states = states
        return changed


def load_registry(
    state_path: Path | None = None,
    *,
    builtin_package: str | None = "filters",
    user_dir: Path | None = None,
    entry_point_group: str | None = ENTRY_POINT_GROUP,
    import_user: bool = True,
) -> Registry:
    """Discover, validate and register every filter; read the enabled state.

    Parameters
    ----------
    state_path
        JSON or YAML state file (e.g. ``<state_dir>/filters-state.json``);
        ``None`` keeps the state in memory.
    builtin_package, user_dir, entry_point_group
        Where to look (see :func:`discover`).
    import_user
        True (CLI): import and validate contributed filters in this process.
        False (worker): leave them in :attr:`Registry.pending` for the sandbox.

    Returns
    -------
    Registry
        With :attr:`Registry.errors` listing every refused filter (the others
        are registered).

    Raises
    ------
    FilterStateError
        If the state file is malformed.
    """
    registry = Registry(state_path)
    errors: list[FilterRegistrationError] = []
    refs = discover(builtin_package, user_dir, entry_point_group, import_user=import_user, errors=errors)
    for exc in errors:
        registry.refuse(exc)
    for ref in refs:
        if ref.kind != "builtin" and not import_user:
            registry.pending.append(ref)
            continue
        try:
            pairs = resolve(ref)
        except FilterRegistrationError as exc:
            registry.refuse(exc)
            continue
        for narrowed, obj in pairs:
            try:
                info = validate(obj, narrowed)
                registry.register(info, obj if isinstance(obj, type) and issubclass(obj, Filter) else None)
            except FilterRegistrationError as exc:
                registry.refuse(exc)
    return registry
