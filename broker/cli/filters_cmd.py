# SPDX-License-Identifier: Apache-2.0
"""``mmbroker filters list|show|enable|disable|test|new``: the filters that tag alerts."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from broker.cli.common import add_settings_args, settings_from
from broker.config import Settings
from broker.errors import BrokerError, RejectedNotice
from broker.filter_registry import FilterRef, Registry, filter_classes, load_module, load_registry, validate
from broker.filtering import Filter, FilterRegistrationError, FilterResult, has_field, normalize_output
from broker.formats import parse
from broker.replay import guess_topic, notice_paths, sample_dir

HELP = "list, show, enable, disable, test or create the filters that tag alerts"

TEMPLATE = '''# A mmbroker filter: tags alerts; every tag is published to <prefix>.tag.<tag>.
# Test it with:  mmbroker filters test {path}
from broker.filtering import Filter, FilterResult


class {cls}(Filter):
    name = "{name}"
    version = "0.1.0"
    description = "Real neutrino alerts with signalness of at least 0.5."
    requires = ("properties.signalness",)
    tags = {{"{name}": "real neutrino alert with signalness >= 0.5"}}
    properties = {{"signalness": "probability that the neutrino is astrophysical (0-1)"}}

    def run(self, alert):
        if alert.is_test or alert.messenger != "neutrino":
            return None
        signalness = alert.properties["signalness"]
        if signalness >= 0.5:
            return FilterResult(tags=("{name}",), properties={{"signalness": signalness}})
        return None
'''


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``filters``."""
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="every filter: state, tags, statistics of the running worker")
    add_settings_args(ls)
    show = sub.add_parser("show", help="one filter's declaration, state and statistics")
    add_settings_args(show)
    show.add_argument("name")
    for action, text in (("enable", "enable a filter (a running worker picks it up)"),
                         ("disable", "disable a filter (a running worker stops running it)")):
        sp = sub.add_parser(action, help=text)
        add_settings_args(sp)
        sp.add_argument("name")
        if action == "disable":
            sp.add_argument("--reason", default="disabled from the command line")
    test = sub.add_parser("test", help="run a filter over real notices, without Kafka: tags and timing")
    add_settings_args(test)
    test.add_argument("filter", help="a registered filter name, or a .py file")
    test.add_argument("--on", action="append", type=Path, metavar="NOTICES",
                      help="notice files or folders (default: the bundled real notices)")
    test.add_argument("--no-annotate", action="store_true", help="do not run the annotators first")
    test.add_argument("--json", action="store_true", help="machine-readable output")
    new = sub.add_parser("new", help="write a filter skeleton into the user filter folder")
    add_settings_args(new)
    new.add_argument("name", help="filter (and tag) name, lowercase")


def _registry(settings: Settings) -> Registry:
    user_dir = settings.user_filter_dir if settings.user_filter_dir.is_dir() else None
    return load_registry(settings.filter_state_file, user_dir=user_dir, import_user=True)


def _stats(settings: Settings) -> dict[str, Any]:
    path = settings.filter_stats_file
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text()).get("filters", {})
    return data


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3g} ms"


def _list(settings: Settings) -> int:
    reg = _registry(settings)
    stats = _stats(settings)
    print(f"{'name':<28} {'version':<9} {'kind':<12} {'state':<9} tags")
    for info in reg:
        state = "enabled" if reg.is_enabled(info.name) else "disabled"
        print(f"{info.name:<28} {info.version:<9} {info.ref.kind:<12} {state:<9} {', '.join(info.tags)}")
        st = stats.get(info.name)
        if st:
            rt = st["runtime_s"]
            print(f"{'':<28} calls {st['calls']}, skips {st['skips']}, errors {st['errors']}, "
                  f"p50 {_ms(rt['p50'])}, p99 {_ms(rt['p99'])}")
        if state == "disabled":
            print(f"{'':<28} disabled: {reg.state(info.name).reason}")
    for err in reg.errors:
        print(f"refused: {err}")
    return 1 if reg.errors else 0


def _show(settings: Settings, name: str) -> int:
    reg = _registry(settings)
    info = reg.get(name)
    out = {
        "name": info.name, "version": info.version, "description": info.description, "origin": info.ref.origin,
        "built_in": info.trusted, "requires": list(info.requires), "tags": dict(info.tags),
        "properties": dict(info.properties), "files": {k: str(v) for k, v in info.files.items()},
        "state": reg.state(name).as_dict(), "statistics": _stats(settings).get(name),
        "topics": [settings.tag_topic(t) for t in info.tags],
    }
    print(json.dumps(out, indent=2))
    return 0


def _load_for_test(settings: Settings, target: str) -> tuple[Filter, str]:
    path = Path(target)
    if path.suffix == ".py" and path.exists():
        ref = FilterRef(kind="folder", path=path.resolve(), origin=str(path.resolve()))
        classes = filter_classes(load_module(ref))
        if len(classes) != 1:
            raise FilterRegistrationError(f"{path}: expected one Filter subclass, found {len(classes)}")
        cls = classes[0]
        info = validate(cls, ref.with_class(cls.__qualname__))
    else:
        reg = _registry(settings)
        info = reg.get(target)
        cls = reg.load_class(target)
    flt = cls()
    flt.setup(dict(info.files))
    return flt, info.ref.origin


def _test(settings: Settings, args: argparse.Namespace) -> int:
    flt, origin = _load_for_test(settings, args.filter)
    paths = notice_paths(args.on or [sample_dir()])
    alerts = []
    for p in paths:
        try:
            alerts.append((p, parse(p.read_bytes(), guess_topic(p))))
        except RejectedNotice:
            continue
    if not args.no_annotate and alerts:
        from annotators.registry import build_annotators
        from broker.annotate import AnnotationStage

        annotated = AnnotationStage(build_annotators(settings)).process([a for _, a in alerts])
        alerts = [(p, a) for (p, _), a in zip(alerts, annotated, strict=True)]
    times: list[float] = []
    tagged: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    skipped = errors = 0
    first_error = None
    for path, alert in alerts:
        if not all(has_field(alert, r) for r in flt.requires):
            skipped += 1
            continue
        t0 = time.perf_counter()
        try:
            result = normalize_output(flt, flt.run(alert))
        except Exception as exc:  # the user's code under test: report, go on
            errors += 1
            first_error = first_error or f"{path.name}: {type(exc).__name__}: {exc}"
            continue
        finally:
            times.append(time.perf_counter() - t0)
        if result != FilterResult():
            counts.update(result.tags)
            tagged.append({"notice": str(path), "event": alert.event_name or alert.event_id,
                           "tags": list(result.tags), "properties": dict(result.properties)})
    q = np.percentile(times, [50, 90, 99]).tolist() if times else [None, None, None]
    summary = {
        "filter": flt.name, "version": flt.version, "origin": origin, "notices": len(paths), "alerts": len(alerts),
        "ran": len(times) - errors, "skipped": skipped, "errors": errors, "first_error": first_error,
        "tags": dict(counts), "runtime_s": {"p50": q[0], "p90": q[1], "p99": q[2]},
    }
    if args.json:
        print(json.dumps({"summary": summary, "tagged": tagged}, indent=2, default=str))
        return 1 if errors else 0
    for t in tagged:
        props = ", ".join(f"{k}={v}" for k, v in t["properties"].items())
        extra = f"  ({props})" if props else ""
        print(f"{','.join(t['tags']):<28} {t['event']:<28} {Path(t['notice']).name}{extra}")
    print(f"\n{flt.name} {flt.version}: {len(alerts)} alerts from {len(paths)} notices; ran on {summary['ran']}, "
          f"skipped {skipped} (missing {', '.join(flt.requires) or '-'}), errors {errors}")
    print("tags: " + (", ".join(f"{k} x{v}" for k, v in counts.items()) or "none"))
    print(f"run time per alert: p50 {_ms(q[0])}, p90 {_ms(q[1])}, p99 {_ms(q[2])}")
    if first_error:
        print(f"first error: {first_error}")
    return 1 if errors else 0


def _new(settings: Settings, name: str) -> int:
    folder = settings.user_filter_dir
    path = folder / f"{name.replace('-', '_')}.py"
    if path.exists():
        raise BrokerError(f"{path} exists already")
    folder.mkdir(parents=True, exist_ok=True)
    cls = "".join(part.capitalize() for part in name.replace("_", "-").split("-")) or "MyFilter"
    path.write_text(TEMPLATE.format(name=name, cls=cls, path=path))
    ref = FilterRef(kind="folder", path=path.resolve(), origin=str(path))
    (made,) = filter_classes(load_module(ref))
    validate(made, ref.with_class(made.__qualname__))  # the skeleton must itself register
    print(f"wrote {path}\nedit it, then: mmbroker filters test {path}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run ``filters``."""
    settings = settings_from(args)
    if args.action == "list":
        return _list(settings)
    if args.action == "show":
        return _show(settings, args.name)
    if args.action == "enable":
        reg = _registry(settings)
        reg.get(args.name)
        reg.enable(args.name)
        print(f"filter {args.name} enabled")
        return 0
    if args.action == "disable":
        reg = _registry(settings)
        reg.get(args.name)
        reg.disable(args.name, args.reason)
        print(f"filter {args.name} disabled: {args.reason}")
        return 0
    if args.action == "test":
        return _test(settings, args)
    return _new(settings, args.name)
