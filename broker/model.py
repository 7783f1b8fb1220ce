# SPDX-License-Identifier: Apache-2.0
"""The normalized alert model.

One frozen dataclass per message type.  Field meanings and units are
documented once, in ``avro_schemas/alert.avsc``; the docstrings here repeat
only the units.  Conventions everywhere:

* angles in degrees (ICRS/J2000 RA and Dec, position angles east of north);
* times as timezone-aware :class:`datetime.datetime` in UTC;
* durations and time differences in seconds;
* false-alarm rates in Hz;
* energies in TeV;
* probability densities of sky maps in sr^-1, distances in Mpc.

Kafka coordinates of the message an alert came from are kept apart, in
:class:`SourceMessage`; an :class:`Alert` carries science only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

Messenger = Literal["neutrino", "gamma", "xray", "optical", "radio", "gw", "unknown"]
AlertKind = Literal["early_warning", "preliminary", "initial", "update", "retraction"]
AnnotationStatus = Literal["ok", "missing", "skipped"]
RevisionState = Literal["first", "update", "stale", "retraction", "unknown_retraction", "after_retraction"]
CoincidenceStatus = Literal["active", "withdrawn"]
SourceFormat = Literal["gcn_json", "voevent", "igwn_json", "igwn_avro"]
PropertyValue: TypeAlias = bool | int | float | str

MESSENGERS: tuple[Messenger, ...] = ("neutrino", "gamma", "xray", "optical", "radio", "gw", "unknown")
ALERT_KINDS: tuple[AlertKind, ...] = ("early_warning", "preliminary", "initial", "update", "retraction")
ANNOTATION_STATUSES: tuple[AnnotationStatus, ...] = ("ok", "missing", "skipped")
REVISION_STATES: tuple[RevisionState, ...] = (
    "first", "update", "stale", "retraction", "unknown_retraction", "after_retraction"
)
COINCIDENCE_STATUSES: tuple[CoincidenceStatus, ...] = ("active", "withdrawn")


def gaussian_radius_scale(containment: float, target: float = 0.9) -> float:
    """Factor turning a radius at ``containment`` into the radius at ``target`` for a circular 2-D Gaussian.

    The probability inside radius ``r`` of a circular 2-D Gaussian of width
    ``sigma`` is ``p = 1 - exp(-r**2 / (2 sigma**2))``, so
    ``r_target / r_p = sqrt(ln(1 - target) / ln(1 - p))``.  From 68 % to 90 %
    the factor is 1.4216, from 50 % 1.8226, from 95 % 0.8767.

    Parameters
    ----------
    containment, target
        Probability contents, each in (0, 1).

    Raises
    ------
    ValueError
        If either is not in (0, 1) (a 100 % radius has no Gaussian equivalent).

    Examples
    --------
    >>> round(gaussian_radius_scale(0.68), 4), round(gaussian_radius_scale(0.5), 4)
    (1.4216, 1.8226)
    """
    for name, p in (("containment", containment), ("target", target)):
        if not 0.0 < p < 1.0:
            raise ValueError(f"{name} {p!r} is not a probability in (0, 1)")
    return math.sqrt(math.log1p(-target) / math.log1p(-containment))


@dataclass(frozen=True)
class ContainmentRadius:
    """An extra error radius at another containment than the main one.

    Parameters
    ----------
    containment
        Probability content, in (0, 1].
    radius
        Radius in deg.
    """

    containment: float
    radius: float


@dataclass(frozen=True)
class Point:
    """A best position with no stated error (deg)."""

    ra: float
    dec: float


@dataclass(frozen=True)
class Circle:
    """A circular error region (deg) at a stated containment probability."""

    ra: float
    dec: float
    radius: float
    containment: float | None = None
    systematic_included: bool | None = None
    other_radii: tuple[ContainmentRadius, ...] = ()


@dataclass(frozen=True)
class Ellipse:
    """An elliptical error region (deg); position angle east of north (deg)."""

    ra: float
    dec: float
    semi_major: float
    semi_minor: float
    position_angle: float
    containment: float | None = None
    systematic_included: bool | None = None


@dataclass(frozen=True)
class Rectangle:
    """A quadrilateral error region given by its corners (deg), e.g. MAXI GSC."""

    ra: float
    dec: float
    corners: tuple[tuple[float, float], ...]
    containment: float | None = None
    systematic_included: bool | None = None


Region: TypeAlias = Point | Circle | Ellipse | Rectangle


@dataclass(frozen=True, eq=False)
class SkyMap:
    """A multi-order HEALPix sky map (NUNIQ indexing, nested scheme).

    Parameters
    ----------
    uniq
        NUNIQ pixel indices, int64.
    probdensity
        Probability density per pixel, sr^-1.
    distmu, distsigma, distnorm
        Optional per-pixel distance ansatz parameters (Mpc, Mpc, Mpc^-2).
    distmean, diststd
        Optional posterior mean and standard deviation of the distance (Mpc).
    source
        Where the map came from (``"inline"``, ``"flat-ring-nside8"``, ...).
    """

    uniq: npt.NDArray[np.int64]
    probdensity: npt.NDArray[np.float64]
    distmu: npt.NDArray[np.float64] | None = None
    distsigma: npt.NDArray[np.float64] | None = None
    distnorm: npt.NDArray[np.float64] | None = None
    distmean: float | None = None
    diststd: float | None = None
    source: str = "inline"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SkyMap):
            return NotImplemented
        return (
            np.array_equal(self.uniq, other.uniq)
            and np.array_equal(self.probdensity, other.probdensity)
            and _opt_equal(self.distmu, other.distmu)
            and _opt_equal(self.distsigma, other.distsigma)
            and _opt_equal(self.distnorm, other.distnorm)
            and self.distmean == other.distmean
            and self.diststd == other.diststd
        )

    __hash__ = None  # type: ignore[assignment]

    @cached_property
    def order(self) -> npt.NDArray[np.int64]:
        """HEALPix order of each pixel (exact in integers; computed once)."""
        uniq = np.asarray(self.uniq, dtype=np.int64)
        order = (np.floor(np.log2(np.maximum(uniq, 4).astype(np.float64))).astype(np.int64) - 2) // 2
        # float log2 can be off by one next to powers of two above 2**53: correct exactly
        order -= uniq < (np.int64(4) << (2 * order))
        order += uniq >= (np.int64(16) << (2 * order))
        return order

    @cached_property
    def ipix(self) -> npt.NDArray[np.int64]:
        """Nested pixel index of each pixel at its own order."""
        return self.uniq - 4 * (np.int64(1) << (2 * self.order))

    @cached_property
    def pixel_area(self) -> npt.NDArray[np.float64]:
        """Area of each pixel, sr."""
        return np.pi / (3.0 * 4.0 ** self.order.astype(np.float64))

    @property
    def probability(self) -> npt.NDArray[np.float64]:
        """Probability content of each pixel (dimensionless, sums to ~1)."""
        return np.asarray(self.probdensity * self.pixel_area, dtype=np.float64)

    def credible_area(self, level: float) -> float:
        """Area (deg^2) of the smallest region holding probability ``level``."""
        order = np.argsort(-self.probdensity, kind="stable")
        cum = np.cumsum(self.probability[order])
        n = int(np.searchsorted(cum, level * cum[-1], side="left")) + 1
        area_sr = float(np.sum(self.pixel_area[order][:n]))
        return area_sr * (180.0 / np.pi) ** 2

    def max_position(self) -> tuple[float, float]:
        """RA and Dec (deg) of the centre of the highest-density pixel."""
        import healpy as hp

        i = int(np.argmax(self.probdensity))
        order = int(self.order[i])
        theta, phi = hp.pix2ang(1 << order, int(self.ipix[i]), nest=True)
        return float(np.degrees(phi)), float(90.0 - np.degrees(theta))


def _opt_equal(a: npt.NDArray[np.float64] | None, b: npt.NDArray[np.float64] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b, equal_nan=True))


@dataclass(frozen=True)
class RelatedEvent:
    """Another event an upstream notice links to (external coincidence, follow-up).

    ``time_difference`` in s (this event minus the related one, as upstream
    states it), false-alarm rates in Hz.
    """

    relation: str
    observatory: str | None = None
    event_id: str | None = None
    ivorn: str | None = None
    search: str | None = None
    time_difference: float | None = None
    far_temporal: float | None = None
    far_spatiotemporal: float | None = None
    skymap: SkyMap | None = None


@dataclass(frozen=True)
class SubEvent:
    """One constituent of a multiplet or of a coincidence search result."""

    event_id: str | None = None
    time: datetime | None = None
    time_offset: float | None = None
    region: Region | None = None
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogMatch:
    """One catalog source matched to an alert's localization.

    Parameters
    ----------
    catalog
        Name of the catalog (as registered, e.g. ``"4fgl-dr4"``).
    source_id
        The source's name or id in that catalog.
    ra, dec
        Source position (deg, ICRS).
    separation
        Angular distance from the alert's best position to the source (deg).
    source_in_region
        The source lies inside the alert's region at 90 % containment (the
        90 % credible region for a sky map).
    alert_in_source_error
        The alert's best position lies inside the source's own error region
        (e.g. a 4FGL 95 % ellipse); ``None`` for catalogs without per-source errors.
    containment
        Smallest containment probability of the alert's region that includes
        the source (Gaussian scaling for circles and ellipses; the searched
        probability for sky maps); dimensionless, in [0, 1].
    probdensity
        Sky-map probability density at the source (sr^-1).
    searched_area
        Sky-map area that must be searched to reach the source (deg^2).
    distance
        Catalog distance of the source (Mpc), if the catalog has one.
    dp_dv
        Posterior probability density per unit volume at the source (Mpc^-3),
        for 3D sky maps and catalogs with distances.
    properties
        The catalog columns the catalog declares as matched properties.
    """

    catalog: str
    source_id: str
    ra: float
    dec: float
    separation: float
    source_in_region: bool | None = None
    alert_in_source_error: bool | None = None
    containment: float | None = None
    probdensity: float | None = None
    searched_area: float | None = None
    distance: float | None = None
    dp_dv: float | None = None
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class CredibleRegion:
    """The smallest sky region holding probability ``level`` of a sky map.

    Parameters
    ----------
    level
        Probability content, in (0, 1].
    area
        Area (deg^2).
    moc
        The region as a normalized multi-order coverage map: sorted NUNIQ
        indices, int64 (siblings merged into their parent).
    """

    level: float
    area: float
    moc: npt.NDArray[np.int64]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CredibleRegion):
            return NotImplemented
        return self.level == other.level and self.area == other.area and np.array_equal(self.moc, other.moc)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Annotation:
    """What one annotator added to one alert.

    Parameters
    ----------
    annotator, version
        Name and version of the annotator plugin.
    status
        ``ok``: done (possibly with no matches); ``missing``: could not be done
        (remote service timed out or failed, circuit open) and ``reason``
        says why; ``skipped``: not applicable (e.g. no localization).
    reason
        Human-readable reason when the status is not ``ok``.
    matches
        Catalog sources matched to the alert's localization.
    credible_regions
        Sky-map credible regions (50 %, 90 %) with their areas and MOCs.
    properties
        Scalar results (e.g. ``area_90_deg2``, ``n_galaxies_90``).
    """

    annotator: str
    version: str
    status: AnnotationStatus = "ok"
    reason: str | None = None
    matches: tuple[CatalogMatch, ...] = ()
    credible_regions: tuple[CredibleRegion, ...] = ()
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Coincidence:
    """A multi-messenger coincidence between two alerts (of two different events).

    The pair is ordered by the rule that found it: side ``a`` is the rule's
    first alert class, side ``b`` its second (for ``gw-cbc/grb``, a is the GW
    candidate and b the GRB), and ``time_difference`` is ``t_b - t_a``, the
    convention of the IGWN alert schema's ``external_coinc.time_difference``
    (GRB 170817A: +2.02 s).

    Parameters
    ----------
    coincidence_id
        Identity of the coincidence: the rule and the two upstream events (not
        their revisions), so a later revision that is still coincident gives
        the same id with updated statistics.
    rule
        Name of the rule that found it (``gw-cbc/grb``, ``neutrino/grb``, ...).
    tag
        The rule's pair tag (``gw-grb``, ...): the alert carrying the
        coincidence is published to ``<prefix>.tag.<tag>`` and ``...tag.coincidence``.
    status
        ``active``, or ``withdrawn`` once either event was retracted.
    a_broker_id, b_broker_id
        Broker ids of the two alert revisions compared.
    a_event_key, b_event_key
        Event keys (``mission/event_id``) of the two sides.
    a_messenger, b_messenger
        Messengers of the two sides.
    time_difference
        ``t_b - t_a``, s.
    window
        The rule's window on ``time_difference``, s (low, high).
    spatial_test
        How the localizations were compared: ``skymap-overlap`` (two HEALPix
        maps), ``skymap-point`` (a map and a point or region centre),
        ``region-overlap`` (two circles/ellipses), ``point-in-region``, or
        ``none`` (one side has no localization: temporal coincidence only).
    overlap
        RAVEN's sky-map overlap integral I_Omega (dimensionless; 1 for
        uninformative maps, larger when the maps agree); None when
        ``spatial_test`` is ``none``.
    separation
        Angular distance between the two best positions, deg.
    far_temporal, far_spatiotemporal
        Joint false-alarm rates, Hz (see :mod:`broker.coincidence.far`).
    reason
        Why it was withdrawn.
    """

    coincidence_id: str
    rule: str
    tag: str
    status: CoincidenceStatus
    a_broker_id: str
    a_event_key: str
    a_messenger: Messenger
    b_broker_id: str
    b_event_key: str
    b_messenger: Messenger
    time_difference: float
    window: tuple[float, float]
    spatial_test: str
    overlap: float | None = None
    separation: float | None = None
    far_temporal: float | None = None
    far_spatiotemporal: float | None = None
    reason: str | None = None

    def involves(self, event_key: str) -> bool:
        """Whether ``event_key`` is one of the two sides."""
        return event_key in (self.a_event_key, self.b_event_key)

    def other_event_key(self, event_key: str) -> str:
        """The event key of the side that is not ``event_key``."""
        return self.b_event_key if event_key == self.a_event_key else self.a_event_key

    def withdrawn(self, reason: str) -> Coincidence:
        """Return this coincidence marked withdrawn, with ``reason``."""
        return replace(self, status="withdrawn", reason=reason)


@dataclass(frozen=True)
class Provenance:
    """How the alert was made: wire format, parser, and the raw payload's digest."""

    source_format: SourceFormat
    parser_version: str
    raw_sha256: str
    raw_size: int
    upstream_ref: str | None = None


@dataclass(frozen=True)
class Alert:
    """A normalized multi-messenger alert: one revision of one upstream event.

    ``event_time`` and ``issued`` are UTC datetimes; ``far`` is in Hz.  See
    ``avro_schemas/alert.avsc`` for every field's meaning.
    """

    mission: str
    instrument: str | None
    messenger: Messenger
    notice_type: str
    event_id: str
    revision: int | None
    kind: AlertKind
    is_test: bool
    event_time: datetime | None
    issued: datetime | None
    provenance: Provenance
    event_name: str | None = None
    upstream_ids: tuple[str, ...] = ()
    region: Region | None = None
    skymap: SkyMap | None = None
    skymap_url: str | None = None
    far: float | None = None
    significant: bool | None = None
    classification: Mapping[str, float] = field(default_factory=dict)
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    related: tuple[RelatedEvent, ...] = ()
    sub_events: tuple[SubEvent, ...] = ()
    tags: tuple[str, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    coincidences: tuple[Coincidence, ...] = ()
    revision_state: RevisionState | None = None
    previous_broker_id: str | None = None
    dropped_tags: tuple[str, ...] = ()

    @property
    def event_key(self) -> str:
        """Identity of the upstream event across revisions: ``mission/event_id``."""
        return f"{self.mission}/{self.event_id}"

    @cached_property
    def broker_id(self) -> str:
        """Deterministic id of this revision (same bytes re-delivered, same id)."""
        h = hashlib.sha256(
            f"{self.event_key}\x00{self.revision}\x00{self.provenance.raw_sha256}".encode()
        )
        return "mmb-" + h.hexdigest()[:24]

    @property
    def localization(self) -> SkyMap | Region | None:
        """The most informative localization: the sky map if any, else the region."""
        return self.skymap if self.skymap is not None else self.region

    @property
    def position(self) -> tuple[float, float] | None:
        """Best position (RA, Dec in deg): the region centre, else the sky-map peak."""
        if self.region is not None:
            return self.region.ra, self.region.dec
        if self.skymap is not None:
            return self.skymap.max_position()
        return None

    def annotation(self, annotator: str) -> Annotation | None:
        """The annotation made by ``annotator``, if any."""
        for a in self.annotations:
            if a.annotator == annotator:
                return a
        return None

    def with_annotations(self, annotations: tuple[Annotation, ...]) -> Alert:
        """Return a copy with ``annotations`` appended to the existing ones."""
        return replace(self, annotations=self.annotations + annotations)

    def with_coincidences(self, coincidences: tuple[Coincidence, ...]) -> Alert:
        """Return a copy with ``coincidences`` appended to the existing ones."""
        return replace(self, coincidences=self.coincidences + coincidences)

    def with_tags(self, tags: tuple[str, ...]) -> Alert:
        """Return a copy carrying ``tags`` (sorted, de-duplicated)."""
        return replace(self, tags=tuple(sorted(set(tags))))


@dataclass(frozen=True)
class SourceMessage:
    """Kafka coordinates and raw bytes of one consumed message."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def coordinates(self) -> str:
        """``topic[partition]@offset``, for error messages and DLQ headers."""
        return f"{self.topic}[{self.partition}]@{self.offset}"
