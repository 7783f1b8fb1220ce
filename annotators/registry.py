# SPDX-License-Identifier: Apache-2.0
"""Which catalogs and annotators a worker runs, from its settings.

Catalogs come from three places, in this order: the bundled ones (unless
``bundled_catalogs`` is off), the user registry ``<state_dir>/catalogs.yaml``
that ``mmbroker catalogs add`` and ``fetch`` write, and the YAML files listed
in ``catalog_files``.  A name declared twice is refused, naming both places.

Annotator plugins from other packages are found through the entry-point group
``mmbroker.annotators``: each entry point names a callable taking the
:class:`~broker.config.Settings` and returning an annotator.  They are
validated here, when the worker starts, never at import time.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from annotators.catalogs import Catalog, CatalogSpec, bundled_specs, load_catalog, read_specs
from broker.annotate import Annotator, validate_annotator
from broker.config import Settings
from broker.errors import CatalogError, ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmbroker.annotators"


def catalog_sources(settings: Settings) -> list[tuple[str, list[CatalogSpec]]]:
    """Every place catalogs are declared, with what each declares (disabled ones included)."""
    out: list[tuple[str, list[CatalogSpec]]] = []
    if settings.bundled_catalogs:
        out.append(("bundled", bundled_specs()))
    if settings.user_catalogs_file.exists():
        out.append((str(settings.user_catalogs_file), read_specs(settings.user_catalogs_file)))
    for path in settings.catalog_files:
        out.append((str(path), read_specs(path)))
    return out


def catalog_specs(settings: Settings, include_disabled: bool = False) -> list[CatalogSpec]:
    """The declared catalogs, in order; duplicate names refused.

    Raises
    ------
    CatalogError
        If two declarations use one name.
    """
    seen: dict[str, str] = {}
    specs: list[CatalogSpec] = []
    for where, declared in catalog_sources(settings):
        for spec in declared:
            if spec.name in seen:
                raise CatalogError(f"catalog {spec.name!r} is declared twice: in {seen[spec.name]} and in {where}")
            seen[spec.name] = where
            if include_disabled or spec.name not in settings.disabled_catalogs:
                specs.append(spec)
    unknown = set(settings.disabled_catalogs) - set(seen)
    if unknown:
        log.warning("disabled_catalogs names unknown catalogs: %s", ", ".join(sorted(unknown)))
    return specs


def register_user_catalog(settings: Settings, spec: CatalogSpec) -> Catalog:
    """Validate ``spec`` by loading it, then add it to ``<state_dir>/catalogs.yaml``.

    Returns
    -------
    Catalog
        The loaded catalog (so the caller can report its size).

    Raises
    ------
    CatalogError
        If the file cannot be loaded or the name is taken.
    """
    catalog = load_catalog(spec)
    taken = {s.name for s in catalog_specs(settings, include_disabled=True)}
    if spec.name in taken:
        raise CatalogError(f"a catalog named {spec.name!r} is already registered; choose another --name")
    path = settings.user_catalogs_file
    existing = read_specs(path) if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = [s.to_yaml_dict(relative_to=path.parent) for s in [*existing, spec]]
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump({"catalogs": docs}, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return catalog


def load_catalogs(settings: Settings) -> list[Catalog]:
    """Load every enabled catalog (each file is validated; errors name file and column)."""
    return [load_catalog(spec) for spec in catalog_specs(settings)]


def plugin_annotators(settings: Settings) -> list[Annotator]:
    """Annotators contributed by installed packages (entry points ``mmbroker.annotators``)."""
    out: list[Annotator] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} = {ep.value}"
        try:
            factory = ep.load()
            annotator = factory(settings)
        except Exception as exc:
            raise ConfigError(f"annotator from {where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        out.append(validate_annotator(annotator, where))
    return out


def build_annotators(settings: Settings) -> list[Annotator]:
    """The annotators of a worker: local catalogs, sky maps, CDS (if enabled), plugins.

    Raises
    ------
    ConfigError
        On a bad catalog, an unknown galaxy catalog, or an invalid plugin;
        at start-up, before anything is consumed.
    """
    from annotators.crossmatch import CatalogAnnotator
    from annotators.skymap import SkyMapAnnotator

    catalogs = load_catalogs(settings)
    by_name = {c.name: c for c in catalogs}
    galaxies = by_name.get(settings.galaxy_catalog)
    if settings.galaxy_catalog and galaxies is None:
        log.warning("galaxy catalog %r is not loaded: GW sky maps get no galaxy ranking", settings.galaxy_catalog)
    annotators: list[Annotator] = [
        CatalogAnnotator(catalogs, max_matches_per_catalog=settings.max_matches_per_catalog),
        SkyMapAnnotator(galaxies, top_n=settings.top_galaxies),
    ]
    annotators.extend(remote_annotators(settings))
    annotators.extend(plugin_annotators(settings))
    names = [a.name for a in annotators]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two annotators share the name(s) {', '.join(dupes)}")
    return annotators


def remote_annotators(settings: Settings) -> list[Annotator]:
    """The CDS annotators the settings enable (none by default)."""
    from annotators.cds import SimbadAnnotator, XMatchAnnotator
    from annotators.remote import Cache, CircuitBreaker, MemoryCache, RedisCache

    if not settings.simbad and not settings.xmatch_tables:
        return []
    cache: Cache = (
        RedisCache(settings.redis_url.get_secret_value(), prefix=f"{settings.prefix}:cds:")
        if settings.redis_url is not None
        else MemoryCache()
    )
    common: dict[str, Any] = {
        "radius_arcsec": settings.cds_radius_arcsec,
        "deadline_s": settings.cds_deadline_s,
        "cache": cache,
        "url": settings.cds_xmatch_url,
        "max_error_deg": settings.cds_max_error_arcsec / 3600.0,
    }
    def breaker() -> CircuitBreaker:  # one per service: SIMBAD failing does not stop XMatch
        return CircuitBreaker(settings.cds_failure_threshold, settings.cds_reset_s)

    out: list[Annotator] = []
    if settings.simbad:
        out.append(SimbadAnnotator(breaker=breaker(), **common))
    if settings.xmatch_tables:
        out.append(
            XMatchAnnotator(
                tuple(settings.xmatch_tables), breaker=breaker(), max_matches=settings.max_matches_per_catalog, **common
            )
        )
    return out


def user_catalog_dir(settings: Settings) -> Path:
    """Where ``mmbroker catalogs fetch`` stores downloaded tables."""
    return settings.state_dir / "catalogs"
