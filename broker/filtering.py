# SPDX-License-Identifier: Apache-2.0
"""The filter API: what an astronomer writes to tag alerts.

A filter is a class deriving from :class:`Filter` that says what it is
(``name``, ``version``, ``description``), what it needs (``requires``: the
alert is skipped, and the skip counted, when one is absent), what it may emit
(``tags`` and ``properties``, each with a description; emitting anything else
is an error), and a pure ``run(alert)``.  The broker owns topics and storage:
every tag a filter emits is published to ``<prefix>.tag.<tag>``.

Example
-------
>>> from broker.filtering import Filter, FilterResult
>>> class BrightNeutrino(Filter):
...     name = "bright-neutrino"
...     version = "1.0.0"
...     description = "IceCube tracks with signalness of at least 0.5."
...     requires = ("properties.signalness",)
...     tags = {"bright-neutrino": "neutrino track with signalness >= 0.5"}
...     properties = {"signalness": "probability that the track is astrophysical (0-1)"}
...
...     def run(self, alert):
...         s = alert.properties["signalness"]
...         if s >= 0.5:
...             return FilterResult(tags=("bright-neutrino",), properties={"signalness": s})
...         return None
>>> from broker.formats import parse
>>> from broker.replay import sample_dir
>>> folder = sample_dir() / "voevent/icecube_amon"
>>> gold = parse((folder / "finkmm_icecube_voevent_number_825.xml").read_bytes())
>>> run_filter(BrightNeutrino(), gold)
FilterResult(tags=('bright-neutrino',), properties={'signalness': 0.9001})
>>> bronze = parse((folder / "finkmm_icecube_voevent_number_3028.xml").read_bytes())
>>> run_filter(BrightNeutrino(), bronze)
FilterResult(tags=(), properties={})

Requirements
------------
``requires`` lists alert fields by name: ``region``, ``skymap``, ``position``,
``localization`` (region or sky map), ``event_time``, ``far``, ``event_name``,
``instrument``, ``revision``, ``significant``, ``classification`` (non-empty);
``properties.<key>`` and ``classification.<key>`` (the key present, not null);
``annotations.<annotator>`` (that annotator ran and its status is ``ok``,
e.g. ``annotations.catalogs``, ``annotations.skymap``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from broker.errors import BrokerError
from broker.model import Alert, PropertyValue

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""Filter names, tag names and property names: lowercase, digits, ``-`` and ``_``."""

SIMPLE_FIELDS: tuple[str, ...] = (
    "region",
    "skymap",
    "position",
    "localization",
    "event_time",
    "far",
    "event_name",
    "instrument",
    "revision",
    "significant",
    "classification",
)
FIELD_PREFIXES: tuple[str, ...] = ("properties.", "classification.", "annotations.")


class FilterError(BrokerError):
    """A filter failed on an alert, or emitted what it did not declare."""


class FilterRegistrationError(BrokerError):
    """A filter cannot be registered; the message says what is wrong and where."""


@dataclass(frozen=True)
class FilterResult:
    """What a filter says about one alert.

    Parameters
    ----------
    tags
        Tags to give the alert (each must be declared in the filter's ``tags``).
    properties
        Values to attach (each must be declared in the filter's ``properties``).
    """

    tags: tuple[str, ...] = ()
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)


RunOutput = FilterResult | str | Iterable[str] | None
"""What ``run`` may return: a :class:`FilterResult`, one tag, an iterable of tags, or None (nothing)."""


class Filter:
    """Base class of every filter.  Subclass it and set the class attributes.

    Attributes
    ----------
    name
        Unique name (lowercase, digits, ``-``, ``_``).
    version
        Version string; recorded with every result and every error.
    description
        What the filter selects, for people browsing ``mmbroker filters list``.
    requires
        Alert fields the filter needs (see the module docstring); alerts
        lacking one are skipped, and the skip is counted.
    tags
        Tag name -> description of every tag the filter may emit.
    properties
        Property name -> description (with unit) of every value it may emit.
    files
        File name -> path (relative to the module defining the filter, or
        absolute) of data files given to :meth:`setup`.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    tags: ClassVar[Mapping[str, str]] = {}
    properties: ClassVar[Mapping[str, str]] = {}
    files: ClassVar[Mapping[str, str]] = {}

    def setup(self, files: Mapping[str, Path]) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Load models or tables once, before the first alert; ``files`` maps declared names to paths."""

    def run(self, alert: Alert) -> RunOutput:
        """Return the tags and properties for ``alert`` (pure: no I/O, no state between alerts)."""
        raise NotImplementedError(f"filter {self.name!r} does not implement run(alert)")

    def run_batch(self, alerts: Sequence[Alert]) -> list[RunOutput]:
        """Vectorised form: one output per alert, in order.  Override for numpy-friendly filters."""
        return [self.run(a) for a in alerts]


def has_field(alert: Alert, path: str) -> bool:
    """Whether ``alert`` has the required field ``path`` (see the module docstring)."""
    if path == "localization":
        return alert.region is not None or alert.skymap is not None
    if path == "classification":
        return bool(alert.classification)
    if path in SIMPLE_FIELDS:
        return getattr(alert, path) is not None
    head, _, key = path.partition(".")
    if head == "properties":
        return alert.properties.get(key) is not None
    if head == "classification":
        return alert.classification.get(key) is not None
    if head == "annotations":
        ann = alert.annotation(key)
        return ann is not None and ann.status == "ok"
    return False


def check_requirement(path: str) -> str | None:
    """Why ``path`` is not a valid requirement, or None if it is."""
    if path in SIMPLE_FIELDS:
        return None
    for prefix in FIELD_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return None
    return (
        f"unknown required field {path!r}: use one of {', '.join(SIMPLE_FIELDS)}, "
        f"or properties.<key>, classification.<key>, annotations.<annotator>"
    )


def normalize_output(flt: Filter, out: RunOutput) -> FilterResult:
    """Turn what ``run`` returned into a checked :class:`FilterResult`.

    Raises
    ------
    FilterError
        If the output has the wrong type, or a tag or property the filter did
        not declare, or a property value that is not a bool, int, float or str.
    """
    if out is None:
        return FilterResult()
    if isinstance(out, str):
        result = FilterResult(tags=(out,))
    elif isinstance(out, FilterResult):
        result = out
    elif isinstance(out, Iterable) and not isinstance(out, Mapping | bytes):
        tags = tuple(out)
        if not all(isinstance(t, str) for t in tags):
            raise FilterError(f"filter {flt.name!r} returned tags that are not strings: {tags!r}")
        result = FilterResult(tags=tags)
    else:
        raise FilterError(
            f"filter {flt.name!r} returned {type(out).__name__}; return a FilterResult, a tag, tags, or None"
        )
    undeclared = [t for t in result.tags if t not in flt.tags]
    if undeclared:
        raise FilterError(f"filter {flt.name!r} emitted undeclared tag(s) {', '.join(map(repr, undeclared))}")
    bad_props = [k for k in result.properties if k not in flt.properties]
    if bad_props:
        raise FilterError(f"filter {flt.name!r} emitted undeclared propert(ies) {', '.join(map(repr, bad_props))}")
    for k, v in result.properties.items():
        if not isinstance(v, bool | int | float | str):
            raise FilterError(f"filter {flt.name!r} property {k!r} is a {type(v).__name__}, not bool/int/float/str")
    return FilterResult(tags=tuple(dict.fromkeys(result.tags)), properties=dict(result.properties))


def run_filter(flt: Filter, alert: Alert) -> FilterResult | None:
    """Run ``flt`` on one alert as the broker does: None if skipped (a requirement is absent).

    For trying a filter in a notebook or a doctest; the broker itself runs
    filters in batches, measured and isolated.
    """
    if not all(has_field(alert, r) for r in flt.requires):
        return None
    return normalize_output(flt, flt.run(alert))
