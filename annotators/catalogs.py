# SPDX-License-Identifier: Apache-2.0
"""Local astronomical catalogs: declaration, loading, validation and the HEALPix index.

A catalog is declared by a :class:`CatalogSpec` (one entry of a YAML file such
as the bundled ``annotators/data/catalogs/bundled.yaml``) and loaded by
:func:`load_catalog` into a :class:`Catalog`: columnar numpy arrays of
positions (deg), source names, optional distances (Mpc), optional per-source
error ellipses (deg) and the columns to report as match properties, plus a
HEALPix index used by :func:`annotators.crossmatch.cone_pairs`.

Declaring a catalog
-------------------
.. code-block:: yaml

    catalogs:
      - name: 4fgl-dr4                        # lowercase slug, used in CatalogMatch.catalog
        description: Fermi-LAT 14-year source catalog
        paths: [fermi-lat/gll_psc_v35.fit]     # relative to the YAML file's folder
        hdu: LAT_Point_Source_Catalog
        id: Source_Name
        ra: RAJ2000
        dec: DEJ2000                           # coord_unit: deg (default) | sexagesimal | hourangle
        error: {kind: ellipse, semi_major: Conf_95_SemiMajor, semi_minor: Conf_95_SemiMinor,
                position_angle: Conf_95_PosAng, unit: deg, containment: 0.95}
        properties: {class: CLASS1, assoc: ASSOC1}
        serves: [neutrino, gamma]               # messengers matched against it (default: all)

Error kinds (``error.kind``): ``radius`` (a column), ``constant`` (one radius
for every source), ``ellipse`` (semi-major, semi-minor, position angle east of
north in deg) and ``asymmetric`` (plus/minus extents in RA and Dec, as in
IceCat-1; replaced by the centred ellipse whose semi-axes are the larger extent
on each axis, the RA extents multiplied by cos(Dec): that ellipse contains the
asymmetric region made of four quarter-ellipses).  Every error region is the
one stated at ``containment``; it is used as stated (never rescaled).

Rows whose position is masked, blank or NaN are dropped and counted (logged);
any other malformed value (an unparseable coordinate, a coordinate out of
range, a negative error or distance) is a :class:`~broker.errors.CatalogError`
naming the file, the column and the row.  ``fallback_positions`` give other
position columns to use, in order, for rows whose main position is missing
(e.g. the Swift GRB table: XRT position, else BAT position); the property
``position`` then holds the ``label`` of the position used.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import astropy.units as u
import erfa
import healpy as hp
import numpy as np
import numpy.typing as npt
import yaml
from astropy.io import ascii as astropy_ascii
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from broker.errors import CatalogError
from broker.model import MESSENGERS, Messenger, PropertyValue

__all__ = [
    "BUNDLED_DIR",
    "DENSE_INDEX_MAX_ORDER",
    "INDEX_ORDER",
    "AsymmetricError",
    "Catalog",
    "CatalogSpec",
    "ConstantError",
    "EllipseError",
    "PositionSpec",
    "RadiusError",
    "bundled_specs",
    "load_catalog",
    "load_catalogs",
    "read_specs",
    "unit_vectors",
]

log = logging.getLogger(__name__)

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]

INDEX_ORDER = 29
"""HEALPix order (nested scheme) of the per-source pixel index; the finest healpy supports."""

DENSE_INDEX_MAX_ORDER = 7
"""Finest order of the per-pixel lookup tables (:meth:`Catalog.pixel_starts`)."""

BUNDLED_DIR = Path(str(files("annotators"))) / "data" / "catalogs"
"""Folder of the bundled catalog files and of ``bundled.yaml``."""

_DEG2RAD = float(u.deg.to(u.rad))  # the very factor astropy uses to convert deg to rad (== pi/180)
_ANGLE_UNITS: dict[str, float] = {"deg": 1.0, "arcmin": 1.0 / 60.0, "arcsec": 1.0 / 3600.0}
_DEFAULT_NULLS: tuple[str, ...] = ("", "n/a", "N/A", "NA", "--", "nan", "NaN", "None", "null")
_EXTENSIONS: dict[str, str] = {
    ".fit": "fits",
    ".fits": "fits",
    ".fts": "fits",
    ".fit.gz": "fits",
    ".fits.gz": "fits",
    ".xml": "votable",
    ".vot": "votable",
    ".votable": "votable",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "ascii",
    ".dat": "ascii",
}
_SLUG = r"^[a-z0-9][a-z0-9._-]*$"

AngleUnit = Literal["deg", "arcmin", "arcsec"]
CoordUnit = Literal["deg", "sexagesimal", "hourangle"]
TableFormat = Literal["auto", "fits", "votable", "csv", "tsv", "ascii"]


# --------------------------------------------------------------------------- declarations


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RadiusError(_Strict):
    """A circular error per source, from a column.

    Attributes
    ----------
    column
        Column holding the radius.
    unit
        Unit of the column: ``deg``, ``arcmin`` or ``arcsec``.
    containment
        Probability content of the stated circle, in (0, 1).
    """

    kind: Literal["radius"]
    column: str
    unit: AngleUnit = "deg"
    containment: float = Field(gt=0.0, lt=1.0)


class ConstantError(_Strict):
    """One circular error radius for every source of the catalog (``unit``), at ``containment``."""

    kind: Literal["constant"]
    radius: float = Field(gt=0.0)
    unit: AngleUnit = "deg"
    containment: float = Field(gt=0.0, lt=1.0)


class EllipseError(_Strict):
    """An error ellipse per source: semi-axes in ``unit``, position angle east of north in deg."""

    kind: Literal["ellipse"]
    semi_major: str
    semi_minor: str
    position_angle: str
    unit: AngleUnit = "deg"
    containment: float = Field(gt=0.0, lt=1.0)


class AsymmetricError(_Strict):
    """Asymmetric extents (``unit``) in RA (coordinate degrees, not multiplied by cos Dec) and Dec.

    Replaced by the centred ellipse with semi-axes ``max(ra_plus, ra_minus) * cos(dec)``
    (east-west) and ``max(dec_plus, dec_minus)`` (north-south), which contains the
    region made of the four quarter-ellipses the extents bound.
    """

    kind: Literal["asymmetric"]
    ra_plus: str
    ra_minus: str
    dec_plus: str
    dec_minus: str
    unit: AngleUnit = "deg"
    containment: float = Field(gt=0.0, lt=1.0)


ErrorSpec = Annotated[RadiusError | ConstantError | EllipseError | AsymmetricError, Field(discriminator="kind")]


class PositionSpec(_Strict):
    """Where a source position is, and its error.

    Attributes
    ----------
    ra, dec
        Column names.
    coord_unit
        ``deg`` (numbers, or strings holding decimal numbers), or
        ``sexagesimal``/``hourangle`` (strings: RA in h:m:s, Dec in d:m:s; any
        of ``:``, blanks or ``h m s d`` as separators).
    error
        The position's error region, or ``None``.
    label
        Name of this position in the ``position`` property (catalogs with fallbacks).
    """

    ra: str
    dec: str
    coord_unit: CoordUnit = "deg"
    error: ErrorSpec | None = None
    label: str | None = None


class CatalogSpec(_Strict):
    """Declaration of one local catalog (one entry of a catalogs YAML file).

    Unknown keys are refused, so a typo in a YAML file is an error, not a
    silently ignored setting.

    Attributes
    ----------
    name
        Lowercase slug (``[a-z0-9][a-z0-9._-]*``), stored in every match.
    description
        One line for humans.
    paths
        Files concatenated into the catalog (same columns in each).
        :func:`read_specs` resolves relative paths against the YAML file's folder.
    format
        ``auto`` (from the extension), ``fits``, ``votable``, ``csv``, ``tsv`` or ``ascii``.
    hdu
        FITS HDU name or number (default: the first table).
    encoding, delimiter, null_values, pad_short_rows
        Text tables: file encoding, field delimiter (default ``,`` for csv,
        tab for tsv, whitespace for ascii; blanks around delimiters are
        ignored), the strings meaning "missing", and whether rows with fewer
        fields than the header are completed with missing trailing fields
        (off by default: a ragged table is an error).
    id, id_prefix
        Column of source names and a prefix prepended to them (e.g. ``"GRB "``).
    ra, dec, coord_unit, error, label
        The source position (see :class:`PositionSpec`).
    fallback_positions
        Positions used, in order, for rows whose main position is missing.
    distance
        Column of distances in Mpc, if any.
    properties
        Output name -> column: reported in ``CatalogMatch.properties``
        (missing values are left out).
    serves
        Messengers whose alerts are matched against this catalog (default: all).
    max_region_radius
        Alerts whose 90 % region extends farther than this (deg) from their
        position are not matched against this catalog (the annotation says so);
        ``None``: no limit.
    provenance, licence, url
        Where the data come from and under which terms.
    """

    name: str = Field(pattern=_SLUG, max_length=64)
    description: str = ""
    paths: tuple[str, ...] = Field(min_length=1)
    format: TableFormat = "auto"
    hdu: str | int | None = None
    encoding: str = "utf-8"
    delimiter: str | None = None
    null_values: tuple[str, ...] = _DEFAULT_NULLS
    pad_short_rows: bool = False
    id: str
    id_prefix: str = ""
    ra: str
    dec: str
    coord_unit: CoordUnit = "deg"
    error: ErrorSpec | None = None
    label: str | None = None
    fallback_positions: tuple[PositionSpec, ...] = ()
    distance: str | None = None
    properties: dict[str, str] = Field(default_factory=dict)
    serves: tuple[Messenger, ...] = MESSENGERS
    max_region_radius: float | None = Field(default=None, gt=0.0, le=180.0)
    provenance: str = ""
    licence: str = ""
    url: str = ""

    @field_validator("serves")
    @classmethod
    def _serves_unique(cls, v: tuple[Messenger, ...]) -> tuple[Messenger, ...]:
        if not v:
            raise ValueError("serves must name at least one messenger")
        if len(set(v)) != len(v):
            raise ValueError("serves names a messenger twice")
        return v

    @field_validator("properties")
    @classmethod
    def _property_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k, col in v.items():
            if not k.strip() or not col.strip():
                raise ValueError(f"property {k!r} -> {col!r}: names and columns must not be empty")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CatalogSpec:
        containments = {p.error.containment for p in self.positions if p.error is not None}
        if len(containments) > 1:
            raise ValueError(f"all positions must state their errors at one containment, got {sorted(containments)}")
        if self.fallback_positions and "position" in self.properties:
            raise ValueError("property name 'position' is reserved for catalogs with fallback_positions")
        return self

    @property
    def positions(self) -> tuple[PositionSpec, ...]:
        """The main position followed by the fallbacks, in order of preference."""
        main = PositionSpec(ra=self.ra, dec=self.dec, coord_unit=self.coord_unit, error=self.error, label=self.label)
        return (main, *self.fallback_positions)

    @property
    def error_containment(self) -> float | None:
        """Containment of the per-source error regions, or ``None`` without errors."""
        for p in self.positions:
            if p.error is not None:
                return p.error.containment
        return None

    def to_yaml_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The declaration as a plain mapping for a YAML file (defaults left out).

        Parameters
        ----------
        relative_to
            Write paths under this folder relative to it (as :func:`read_specs` reads them).
        """
        out: dict[str, Any] = self.model_dump(mode="json", exclude_defaults=True)
        if relative_to is not None:
            base = Path(relative_to).resolve()
            rel = []
            for p in self.paths:
                path = Path(p)
                try:
                    rel.append(str(path.resolve().relative_to(base)) if path.is_absolute() else p)
                except ValueError:
                    rel.append(p)
            out["paths"] = rel
        return out


# --------------------------------------------------------------------------- the loaded catalog


def unit_vectors(ra: npt.ArrayLike, dec: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cartesian unit vectors of positions, bit for bit as astropy computes them.

    Parameters
    ----------
    ra, dec
        Positions (deg).

    Returns
    -------
    x, y, z
        float64 arrays (``SkyCoord(ra, dec).cartesian.xyz``, computed with
        ``erfa.s2c`` on the same radians as astropy).
    """
    ra_rad = np.asarray(ra, dtype=np.float64) * _DEG2RAD
    dec_rad = np.asarray(dec, dtype=np.float64) * _DEG2RAD
    xyz = erfa.s2c(ra_rad, dec_rad)
    return (
        np.ascontiguousarray(xyz[..., 0]),
        np.ascontiguousarray(xyz[..., 1]),
        np.ascontiguousarray(xyz[..., 2]),
    )


@dataclass(frozen=True, eq=False)
class Catalog:
    """A loaded catalog: columnar arrays and a HEALPix index.

    Parameters
    ----------
    spec
        The declaration it was loaded from.
    ra, dec
        Source positions (deg, ICRS), float64; RA in [0, 360).
    source_id
        Source names (numpy str array).
    distance
        Distances (Mpc, float64, NaN when unknown), or ``None`` for catalogs
        without a distance column.
    err_semi_major, err_semi_minor, err_pa
        Per-source error ellipses at ``spec.error_containment``: semi-axes
        (deg) and position angle of the major axis (deg east of north); NaN
        for sources whose error is unknown; ``None`` for catalogs without
        per-source errors.
    properties
        Output name -> column values (numpy masked arrays aligned with ``ra``).
    n_dropped
        Rows dropped at load time because their position was missing.

    Notes
    -----
    The index holds each source's nested HEALPix pixel at order
    :data:`INDEX_ORDER`, sorted, with the permutation to catalog order and the
    unit vectors in that sorted order; the sources of one pixel of any coarser
    order ``k`` are then one contiguous range, found with ``np.searchsorted``
    of ``pixel << 2 * (INDEX_ORDER - k)``.
    """

    spec: CatalogSpec
    ra: FloatArray
    dec: FloatArray
    source_id: npt.NDArray[np.str_]
    distance: FloatArray | None = None
    err_semi_major: FloatArray | None = None
    err_semi_minor: FloatArray | None = None
    err_pa: FloatArray | None = None
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    n_dropped: int = 0
    sorted_pixels: IntArray = field(init=False, repr=False)
    sorted_index: IntArray = field(init=False, repr=False)
    sorted_xyz: FloatArray = field(init=False, repr=False)
    max_error: float = field(init=False)
    _starts: dict[int, npt.NDArray[np.int32]] = field(init=False, repr=False, default_factory=dict)
    _per_source: list[dict[str, PropertyValue] | None] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        n = self.ra.shape[0]
        if self.dec.shape != (n,) or self.source_id.shape != (n,):
            raise ValueError("ra, dec and source_id must be 1-D arrays of one length")
        for name in ("distance", "err_semi_major", "err_semi_minor", "err_pa"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (n,):
                raise ValueError(f"{name} must have the length of ra")
        for name, arr in self.properties.items():
            if arr.shape != (n,):
                raise ValueError(f"property {name!r} must have the length of ra")
        x, y, z = unit_vectors(self.ra, self.dec)
        pix = hp.vec2pix(1 << INDEX_ORDER, x, y, z, nest=True).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
        order = np.argsort(pix, kind="stable").astype(np.int64)
        object.__setattr__(self, "sorted_pixels", np.ascontiguousarray(pix[order]))
        object.__setattr__(self, "sorted_index", order)
        object.__setattr__(self, "sorted_xyz", np.ascontiguousarray(np.stack([x[order], y[order], z[order]])))
        max_err = 0.0
        if self.err_semi_major is not None and n and np.isfinite(self.err_semi_major).any():
            max_err = float(np.nanmax(self.err_semi_major))
            if self.err_semi_minor is not None and np.isfinite(self.err_semi_minor).any():
                max_err = max(max_err, float(np.nanmax(self.err_semi_minor)))
        object.__setattr__(self, "max_error", max_err)

    @property
    def name(self) -> str:
        """The catalog's name (``spec.name``)."""
        return self.spec.name

    def pixel_starts(self, order: int) -> npt.NDArray[np.int32]:
        """Where each nested pixel of ``order`` starts in the sorted index (cached; ``order <= 7``).

        The sources of pixel ``p`` are at sorted positions
        ``pixel_starts(order)[p]`` to ``pixel_starts(order)[p + 1]`` (excluded);
        the array has ``12 * 4**order + 1`` entries (int32, 0.8 MB at order 7).
        """
        if not 0 <= order <= DENSE_INDEX_MAX_ORDER:
            raise ValueError(f"dense pixel tables exist up to order {DENSE_INDEX_MAX_ORDER}, not {order}")
        starts = self._starts.get(order)
        if starts is None:
            edges = np.arange(12 * 4**order + 1, dtype=np.int64) << (2 * (INDEX_ORDER - order))
            starts = np.searchsorted(self.sorted_pixels, edges, side="left").astype(np.int32)
            self._starts[order] = starts
        return starts

    @property
    def has_errors(self) -> bool:
        """Whether sources carry their own error regions."""
        return self.err_semi_major is not None

    def __len__(self) -> int:
        return int(self.ra.shape[0])

    def properties_of(self, i: int) -> dict[str, PropertyValue]:
        """The matched-property values of source ``i`` as Python scalars.

        Masked, NaN, infinite and empty-string values are left out.  The dict
        is computed once per source and shared by every match: do not modify it.
        """
        if not self._per_source:  # built on first use, then shared: per-match calls stay cheap
            self._per_source.extend([None] * len(self))
        cached = self._per_source[i]
        if cached is None:
            cached = {}
            for name, column in self.properties.items():
                if np.ma.getmaskarray(column)[i]:
                    continue
                value = _python_scalar(np.ma.getdata(column)[i])
                if value is not None:
                    cached[name] = value
            self._per_source[i] = cached
        return cached


def _python_scalar(v: Any) -> PropertyValue | None:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    s = str(v).strip()
    return s or None


# --------------------------------------------------------------------------- reading specs


def read_specs(path: str | Path) -> list[CatalogSpec]:
    """Read catalog declarations from a YAML file.

    The file holds ``catalogs:`` followed by a list of :class:`CatalogSpec`
    mappings (or just the list).  Relative ``paths`` are resolved against the
    file's folder.

    Raises
    ------
    CatalogError
        If the file is missing or not YAML, or a declaration is invalid
        (unknown key, wrong type, ...); the message names the file and the entry.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog declarations: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    entries = doc.get("catalogs") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and set(doc) - {"catalogs"}:
        raise CatalogError(f"{path}: unknown top-level key(s) {sorted(set(doc) - {'catalogs'})}; expected 'catalogs'")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise CatalogError(f"{path}: 'catalogs' must be a list of catalog declarations")
    base = path.resolve().parent
    specs: list[CatalogSpec] = []
    for n, entry in enumerate(entries):
        label = entry.get("name", f"#{n + 1}") if isinstance(entry, dict) else f"#{n + 1}"
        if not isinstance(entry, dict):
            raise CatalogError(f"{path}: catalog {label} is not a mapping")
        try:
            spec = CatalogSpec.model_validate(entry)
        except ValidationError as exc:
            raise CatalogError(f"{path}: catalog {label!r} is invalid: {_pydantic_message(exc)}") from exc
        resolved = tuple(str(p if Path(p).is_absolute() else base / p) for p in spec.paths)
        specs.append(spec.model_copy(update={"paths": resolved}))
    names = [s.name for s in specs]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise CatalogError(f"{path}: catalog name(s) declared twice: {', '.join(dupes)}")
    return specs


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "(entry)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def bundled_specs() -> list[CatalogSpec]:
    """The declarations of the catalogs shipped in ``annotators/data/catalogs`` (see its PROVENANCE.md)."""
    return read_specs(BUNDLED_DIR / "bundled.yaml")


# --------------------------------------------------------------------------- loading


@dataclass
class _Part:
    """What one file contributes."""

    ra: FloatArray
    dec: FloatArray
    ids: npt.NDArray[np.str_]
    distance: FloatArray | None
    err: tuple[FloatArray, FloatArray, FloatArray] | None
    properties: dict[str, np.ndarray]
    n_dropped: int


def load_catalogs(specs: Iterable[CatalogSpec]) -> list[Catalog]:
    """Load several catalogs (see :func:`load_catalog`)."""
    return [load_catalog(s) for s in specs]


def load_catalog(spec: CatalogSpec) -> Catalog:
    """Read and validate a catalog's files and build its index.

    Parameters
    ----------
    spec
        The declaration; relative paths are taken relative to the current
        directory (:func:`read_specs` has already resolved those of YAML files).

    Returns
    -------
    Catalog
        Rows of every file, in file order; rows without any position dropped
        (counted in ``n_dropped`` and logged).

    Raises
    ------
    CatalogError
        Missing or unreadable file, missing column, malformed or out-of-range
        value; the message names the file and the column (and the row for a
        malformed value).
    """
    parts = [_load_part(spec, Path(p)) for p in spec.paths]
    ra = np.concatenate([p.ra for p in parts])
    dec = np.concatenate([p.dec for p in parts])
    ids = np.concatenate([p.ids for p in parts])
    distance = None if spec.distance is None else np.concatenate([p.distance for p in parts if p.distance is not None])
    err: tuple[FloatArray, FloatArray, FloatArray] | None = None
    if any(p.error is not None for p in spec.positions):
        err = (
            np.concatenate([p.err[0] for p in parts if p.err is not None]),
            np.concatenate([p.err[1] for p in parts if p.err is not None]),
            np.concatenate([p.err[2] for p in parts if p.err is not None]),
        )
    props: dict[str, np.ndarray] = {}
    for name in parts[0].properties:
        props[name] = np.ma.concatenate([p.properties[name] for p in parts])
    dropped = sum(p.n_dropped for p in parts)
    if dropped:
        log.warning("catalog %s: %d row(s) without a position dropped", spec.name, dropped)
    catalog = Catalog(
        spec=spec,
        ra=ra,
        dec=dec,
        source_id=ids,
        distance=distance,
        err_semi_major=None if err is None else err[0],
        err_semi_minor=None if err is None else err[1],
        err_pa=None if err is None else err[2],
        properties=props,
        n_dropped=dropped,
    )
    log.info("catalog %s: %d sources loaded from %d file(s)", spec.name, len(catalog), len(parts))
    return catalog


def _table_format(spec: CatalogSpec, path: Path) -> str:
    if spec.format != "auto":
        return spec.format
    name = path.name.lower()
    for ext in sorted(_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return _EXTENSIONS[ext]
    raise CatalogError(
        f"catalog {spec.name}: {path}: cannot tell the table format from the extension; set 'format' "
        f"(one of fits, votable, csv, tsv, ascii)"
    )


def _read_table(spec: CatalogSpec, path: Path) -> Table:
    if not path.is_file():
        raise CatalogError(f"catalog {spec.name}: file {path} not found")
    fmt = _table_format(spec, path)
    try:
        if fmt == "fits":
            kwargs: dict[str, Any] = {"format": "fits", "character_as_bytes": False}
            if spec.hdu is not None:
                kwargs["hdu"] = spec.hdu
            return Table.read(path, **kwargs)
        if fmt == "votable":
            return Table.read(path, format="votable")
        return _read_text_table(spec, path, fmt)
    except CatalogError:
        raise
    except Exception as exc:  # astropy raises many kinds (OSError, KeyError, InconsistentTableError, ...)
        raise CatalogError(f"catalog {spec.name}: {path}: cannot read as {fmt}: {type(exc).__name__}: {exc}") from exc


def _read_text_table(spec: CatalogSpec, path: Path, fmt: str) -> Table:
    try:
        text = path.read_text(encoding=spec.encoding)
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f"catalog {spec.name}: {path}: not valid {spec.encoding} text ({exc}); set 'encoding'"
        ) from exc
    delimiter = spec.delimiter if spec.delimiter is not None else {"csv": ",", "tsv": "\t"}.get(fmt)
    # split on newlines only: str.splitlines() also breaks at U+0085, which is a Latin-1 byte (0x85)
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if spec.pad_short_rows and delimiter is not None and lines:
        width = lines[0].count(delimiter)
        padded = 0
        for i in range(1, len(lines)):
            missing = width - lines[i].count(delimiter)
            if missing > 0 and lines[i].strip():
                lines[i] += delimiter * missing
                padded += 1
        if padded:
            log.info("catalog %s: %s: %d short row(s) completed with missing trailing fields", spec.name, path, padded)
    fill = [(v, "0") for v in spec.null_values]
    if fmt == "ascii" and delimiter is None:
        return astropy_ascii.read(lines, format="basic", fill_values=fill, guess=False)
    # "tab" keeps empty trailing fields, which the whitespace-stripping "basic" reader would lose
    ascii_format = {",": "csv", "\t": "tab"}.get(delimiter or "", "basic")
    return astropy_ascii.read(
        lines, format=ascii_format, delimiter=delimiter, fill_values=fill, guess=False, fast_reader=False
    )


def _columns_needed(spec: CatalogSpec) -> list[tuple[str, str]]:
    """(column, role) pairs of every column the declaration uses."""
    need: list[tuple[str, str]] = [(spec.id, "id")]
    for n, pos in enumerate(spec.positions):
        where = "" if n == 0 else f" of fallback position {n}"
        need += [(pos.ra, f"ra{where}"), (pos.dec, f"dec{where}")]
        e = pos.error
        if isinstance(e, RadiusError):
            need.append((e.column, f"error radius{where}"))
        elif isinstance(e, EllipseError):
            need += [
                (e.semi_major, f"error semi-major axis{where}"),
                (e.semi_minor, f"error semi-minor axis{where}"),
                (e.position_angle, f"error position angle{where}"),
            ]
        elif isinstance(e, AsymmetricError):
            need += [
                (e.ra_plus, f"error ra_plus{where}"),
                (e.ra_minus, f"error ra_minus{where}"),
                (e.dec_plus, f"error dec_plus{where}"),
                (e.dec_minus, f"error dec_minus{where}"),
            ]
    if spec.distance is not None:
        need.append((spec.distance, "distance"))
    need += [(col, f"property {name!r}") for name, col in spec.properties.items()]
    return need


def _load_part(spec: CatalogSpec, path: Path) -> _Part:
    table = _read_table(spec, path)
    missing = [(col, role) for col, role in _columns_needed(spec) if col not in table.colnames]
    if missing:
        shown = ", ".join(repr(c) for c in table.colnames[:40]) + (" ..." if len(table.colnames) > 40 else "")
        what = "; ".join(f"column {col!r} ({role})" for col, role in missing)
        raise CatalogError(f"catalog {spec.name}: {path}: {what} not found; the file has columns {shown}")
    n = len(table)
    ctx = _Ctx(spec.name, path, table)

    # Each position is read only for the rows still without one: a fallback column is
    # validated where it is used (the Swift table's BAT columns hold oddities in rows
    # that have an XRT position).
    chosen = np.full(n, -1, dtype=np.int64)
    ra = np.full(n, np.nan)
    dec = np.full(n, np.nan)
    has_err = any(p.error is not None for p in spec.positions)
    err = (np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)) if has_err else None
    for k, pos in enumerate(spec.positions):
        rows = np.flatnonzero(chosen < 0)
        if rows.size == 0:
            break
        p_ra, p_dec = _positions(ctx, pos, rows)
        ok = np.isfinite(p_ra) & np.isfinite(p_dec)
        take = rows[ok]
        chosen[take] = k
        ra[take] = p_ra[ok]
        dec[take] = p_dec[ok]
        if err is not None and pos.error is not None and take.size:
            a, b, pa = _errors(ctx, pos.error, p_dec[ok], take)
            err[0][take], err[1][take], err[2][take] = a, b, pa
    keep = chosen >= 0
    kept = np.flatnonzero(keep)
    ids = _strings(table[spec.id])
    blank = np.flatnonzero(keep & (np.char.str_len(ids) == 0))
    if blank.size:
        raise CatalogError(f"{ctx.where(spec.id)}, data row {int(blank[0]) + 1}: empty source id")
    if spec.id_prefix:
        ids = np.char.add(spec.id_prefix, ids)
    distance = None
    if spec.distance is not None:
        distance = _floats(ctx, spec.distance, "Mpc", kept)
        bad = np.flatnonzero(distance < 0)
        if bad.size:
            i = int(bad[0])
            raise CatalogError(f"{ctx.where(spec.distance)}, data row {kept[i] + 1}: negative distance {distance[i]}")
    props = {name: _property(ctx, col)[keep] for name, col in spec.properties.items()}
    if spec.fallback_positions:
        labels = np.array([p.label or ("main" if k == 0 else f"fallback {k}") for k, p in enumerate(spec.positions)])
        props["position"] = np.ma.MaskedArray(labels[chosen[keep]])
    ra_kept = np.mod(ra[keep], 360.0)
    ra_kept[ra_kept >= 360.0] = 0.0  # np.mod(-tiny, 360) is 360.0
    return _Part(
        ra=ra_kept,
        dec=dec[keep],
        ids=np.asarray(ids[keep], dtype=str),
        distance=distance,
        err=None if err is None else (err[0][keep], err[1][keep], err[2][keep]),
        properties=props,
        n_dropped=int(n - kept.size),
    )


@dataclass(frozen=True)
class _Ctx:
    """The file being read, for values and error messages."""

    catalog: str
    path: Path
    table: Table

    def where(self, column: str) -> str:
        return f"catalog {self.catalog}: {self.path}: column {column!r}"

    def values(self, column: str, rows: IntArray) -> tuple[np.ndarray, npt.NDArray[np.bool_]]:
        """Data and mask of ``column`` at ``rows``."""
        col = self.table[column]
        data = np.ma.getdata(col)
        if data.ndim != 1:
            raise CatalogError(f"{self.where(column)}: not one value per row (shape {data.shape})")
        return data[rows], _mask(col)[rows]


def _mask(col: Any) -> npt.NDArray[np.bool_]:
    return np.asarray(np.ma.getmaskarray(col), dtype=bool).reshape(-1)


def _check_unit(ctx: _Ctx, name: str, expected: str) -> None:
    """Refuse a column whose unit in the file contradicts the declared one."""
    unit = getattr(ctx.table[name], "unit", None)
    if unit is None or str(unit).strip() == "":
        return
    try:
        file_unit = u.Unit(unit)
    except (ValueError, TypeError):
        log.debug("%s: unit %r not understood; declared %s used", ctx.where(name), unit, expected)
        return
    if file_unit != u.Unit(expected):
        raise CatalogError(f"{ctx.where(name)}: the file says its unit is {unit}, the declaration says {expected}")


def _floats(ctx: _Ctx, name: str, unit: str | None, rows: IntArray) -> FloatArray:
    """Column ``name`` at ``rows`` as float64 (NaN where masked or blank); malformed values are errors."""
    if unit is not None:
        _check_unit(ctx, name, unit)
    data, mask = ctx.values(name, rows)
    kind = data.dtype.kind
    if kind in "fiu":
        out = np.array(data, dtype=np.float64)
        out[mask] = np.nan
        bad = np.flatnonzero(np.isinf(out))
        if bad.size:
            raise CatalogError(f"{ctx.where(name)}, data row {rows[bad[0]] + 1}: infinite value")
        return out
    if kind in "US":
        out = np.full(len(data), np.nan)
        for i, raw in enumerate(data.tolist()):
            if mask[i]:
                continue
            s = raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else str(raw).strip()
            if not s:
                continue
            try:
                v = float(s)
            except ValueError:
                raise CatalogError(f"{ctx.where(name)}, data row {rows[i] + 1}: {s!r} is not a number") from None
            if math.isinf(v):
                raise CatalogError(f"{ctx.where(name)}, data row {rows[i] + 1}: infinite value {s!r}")
            out[i] = v
        return out
    raise CatalogError(f"{ctx.where(name)}: expected numbers, found a column of type {data.dtype}")


_SEPARATORS = re.compile(r"[\s:hdms°'\"]+")
_NUMBER = re.compile(r"^\d+(?:\.\d*)?$|^\.\d+$")


def _sexagesimal(s: str) -> float:
    """Parse ``[+-]A[ :]B[ :]C`` (A, B, C decimal; B, C optional) to A + B/60 + C/3600, signed.

    B and C must not exceed 60 (60 itself, a rounding artefact, is accepted as astropy does).
    """
    s = s.strip()
    sign = 1.0
    if s[:1] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    parts = [p for p in _SEPARATORS.split(s) if p]
    if not 1 <= len(parts) <= 3 or not all(_NUMBER.match(p) for p in parts):
        raise ValueError(s)
    nums = [float(p) for p in parts]
    if any(v > 60.0 for v in nums[1:]):  # exactly 60 is a rounding artefact (e.g. 32:03:60.0), as astropy allows
        raise ValueError(s)
    if len(nums) == 3 and not float(nums[1]).is_integer():
        raise ValueError(s)
    return sign * (nums[0] + (nums[1] / 60.0 if len(nums) > 1 else 0.0) + (nums[2] / 3600.0 if len(nums) > 2 else 0.0))


def _sexagesimal_column(ctx: _Ctx, name: str, hours: bool, rows: IntArray) -> FloatArray:
    data, mask = ctx.values(name, rows)
    if data.dtype.kind not in "US":
        raise CatalogError(f"{ctx.where(name)}: declared sexagesimal but holds {data.dtype} values, not strings")
    out = np.full(len(data), np.nan)
    for i, raw in enumerate(data.tolist()):
        if mask[i]:
            continue
        s = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if not s.strip():
            continue
        try:
            v = _sexagesimal(s)
        except ValueError:
            what = "h:m:s" if hours else "d:m:s"
            raise CatalogError(f"{ctx.where(name)}, data row {rows[i] + 1}: {s.strip()!r} is not {what}") from None
        out[i] = v * 15.0 if hours else v
    return out


def _positions(ctx: _Ctx, pos: PositionSpec, rows: IntArray) -> tuple[FloatArray, FloatArray]:
    """RA and Dec (deg; NaN where missing) at ``rows``, range-checked."""
    if pos.coord_unit == "deg":
        ra = _floats(ctx, pos.ra, "deg", rows)
        dec = _floats(ctx, pos.dec, "deg", rows)
    else:
        ra = _sexagesimal_column(ctx, pos.ra, True, rows)
        dec = _sexagesimal_column(ctx, pos.dec, False, rows)
    for name, values, lo, hi in ((pos.ra, ra, 0.0, 360.0), (pos.dec, dec, -90.0, 90.0)):
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero((values < lo) | (values > hi))
        if bad.size:
            i = int(bad[0])
            raise CatalogError(
                f"{ctx.where(name)}, data row {rows[i] + 1}: {values[i]!r} deg is outside [{lo:g}, {hi:g}]"
            )
    both = np.isfinite(ra) & np.isfinite(dec)  # a position with one coordinate only is missing
    ra[~both] = np.nan
    dec[~both] = np.nan
    return ra, dec


def _nonnegative(ctx: _Ctx, name: str, values: FloatArray, rows: IntArray) -> FloatArray:
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(values < 0)
    if bad.size:
        i = int(bad[0])
        raise CatalogError(f"{ctx.where(name)}, data row {rows[i] + 1}: negative error {values[i]!r}")
    return values


def _errors(
    ctx: _Ctx, e: RadiusError | ConstantError | EllipseError | AsymmetricError, dec: FloatArray, rows: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Error ellipses at ``rows``: semi-major, semi-minor (deg), position angle (deg east of north).

    ``dec`` (deg) is the sources' declination, for the asymmetric kind.
    """
    scale = _ANGLE_UNITS[e.unit]
    n = rows.size
    if isinstance(e, ConstantError):
        r = np.full(n, e.radius * scale)
        return r, r.copy(), np.zeros(n)
    if isinstance(e, RadiusError):
        r = _nonnegative(ctx, e.column, _floats(ctx, e.column, e.unit, rows), rows) * scale
        return r, r.copy(), np.where(np.isfinite(r), 0.0, np.nan)
    if isinstance(e, EllipseError):
        a = _nonnegative(ctx, e.semi_major, _floats(ctx, e.semi_major, e.unit, rows), rows) * scale
        b = _nonnegative(ctx, e.semi_minor, _floats(ctx, e.semi_minor, e.unit, rows), rows) * scale
        pa = _floats(ctx, e.position_angle, "deg", rows)
        unknown = ~(np.isfinite(a) & np.isfinite(b) & np.isfinite(pa))
        a[unknown] = b[unknown] = pa[unknown] = np.nan
        return a, b, pa
    ext = {
        c: _nonnegative(ctx, c, _floats(ctx, c, e.unit, rows), rows) * scale
        for c in (e.ra_plus, e.ra_minus, e.dec_plus, e.dec_minus)
    }
    east = np.maximum(ext[e.ra_plus], ext[e.ra_minus]) * np.cos(np.radians(dec))
    north = np.maximum(ext[e.dec_plus], ext[e.dec_minus])
    a = np.maximum(east, north)
    b = np.minimum(east, north)
    pa = np.where(east > north, 90.0, 0.0)
    unknown = ~(np.isfinite(a) & np.isfinite(b))
    a[unknown] = b[unknown] = pa[unknown] = np.nan
    return a, b, pa


def _strings(col: Any) -> npt.NDArray[np.str_]:
    """A column as stripped str values ('' where masked)."""
    mask = _mask(col)
    data = np.ma.getdata(col)
    values = np.char.decode(data, "utf-8", errors="replace") if data.dtype.kind == "S" else data.astype(str)
    values = np.char.strip(values.reshape(-1))
    values[mask] = ""
    return np.asarray(values, dtype=str)


def _property(ctx: _Ctx, column: str) -> np.ndarray:
    """A property column as a masked array; strings decoded and stripped, empty strings masked."""
    col = ctx.table[column]
    mask = _mask(col)
    data = np.ma.getdata(col)
    if data.ndim != 1:
        raise CatalogError(f"{ctx.where(column)}: not one value per row (shape {data.shape})")
    if data.dtype.kind in "biuf":
        return np.ma.MaskedArray(np.array(data), mask=mask)
    s = _strings(col)
    return np.ma.MaskedArray(s, mask=mask | (np.char.str_len(s) == 0))
