# SPDX-License-Identifier: Apache-2.0
"""Decoding of HEALPix sky maps carried inside notices.

Multi-order maps (``ORDERING = NUNIQ``, columns ``UNIQ``, ``PROBDENSITY`` and
optionally ``DISTMU``/``DISTSIGMA``/``DISTNORM``) are kept as they are.  Flat
maps (``ORDERING = RING`` or ``NESTED``, column ``PROB`` or the first column,
probability per pixel) are converted to NUNIQ at their single order, with the
density in sr^-1.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import warnings
import zlib

import numpy as np
import numpy.typing as npt

from broker.errors import RejectedNotice
from broker.model import SkyMap

_MAX_ORDER = 29


def _reject(reason: str) -> RejectedNotice:
    return RejectedNotice("corrupt_skymap", reason)


def decode_base64_skymap(text: object, field: str) -> SkyMap:
    """Decode a base64 string holding a (possibly gzipped) FITS sky map.

    Raises
    ------
    RejectedNotice
        ``corrupt_skymap`` when the text is not base64 or not a FITS map.
    """
    if not isinstance(text, str):
        raise _reject(f"{field} is not a base64 string")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _reject(f"{field} is not valid base64 ({exc})") from exc
    return decode_fits_skymap(raw, field)


def _column(data: np.ndarray, names: list[str], name: str) -> npt.NDArray[np.float64] | None:
    upper = [n.upper() for n in names]
    if name not in upper:
        return None
    return np.asarray(data[names[upper.index(name)]], dtype=np.float64).ravel()


def decode_fits_skymap(raw: bytes, field: str) -> SkyMap:
    """Decode FITS bytes (optionally gzip-compressed) to a :class:`SkyMap`.

    Raises
    ------
    RejectedNotice
        ``corrupt_skymap`` when the bytes are not a readable HEALPix table, a
        column is missing, pixel indices are invalid, or densities are negative
        or not finite.
    """
    from astropy.io import fits

    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _reject(f"{field}: corrupt gzip stream ({exc})") from exc
    if not raw.startswith(b"SIMPLE  ="):
        raise _reject(f"{field}: not a FITS file (no SIMPLE card)")
    if len(raw) % 2880 != 0:
        raise _reject(f"{field}: truncated FITS file ({len(raw)} bytes, not a multiple of 2880)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                    raise _reject(f"{field}: FITS file has no binary table extension")
                hdr = hdul[1].header
                data = hdul[1].data
                names = list(data.columns.names)
                ordering = str(hdr.get("ORDERING", "")).upper()
                distmean = hdr.get("DISTMEAN")
                diststd = hdr.get("DISTSTD")
                if ordering == "NUNIQ":
                    return _multiorder(data, names, field, distmean, diststd)
                if ordering in ("RING", "NESTED"):
                    return _flat(data, names, hdr, ordering, field)
                raise _reject(f"{field}: unsupported HEALPix ORDERING {ordering!r}")
    except RejectedNotice:
        raise
    except Exception as exc:  # astropy raises many types on corrupt input
        raise _reject(f"{field}: unreadable FITS table ({type(exc).__name__}: {exc})") from exc


def _finite_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _check_density(prob: npt.NDArray[np.float64], field: str) -> None:
    if prob.size == 0:
        raise _reject(f"{field}: empty sky map")
    if not np.all(np.isfinite(prob)) or np.any(prob < 0):
        raise _reject(f"{field}: probability densities must be finite and >= 0")
    if not np.any(prob > 0):
        raise _reject(f"{field}: all probability densities are zero")


def _multiorder(data: np.ndarray, names: list[str], field: str, distmean: object, diststd: object) -> SkyMap:
    upper = [n.upper() for n in names]
    if "UNIQ" not in upper or "PROBDENSITY" not in upper:
        raise _reject(f"{field}: multi-order map lacks UNIQ or PROBDENSITY column")
    uniq = np.asarray(data[names[upper.index("UNIQ")]], dtype=np.int64).ravel()
    if np.any(uniq < 4):
        raise _reject(f"{field}: invalid NUNIQ pixel index (< 4)")
    order = np.log2(uniq // 4).astype(np.int64) // 2
    if np.any(order > _MAX_ORDER):
        raise _reject(f"{field}: NUNIQ pixel index beyond order {_MAX_ORDER}")
    prob = np.asarray(data[names[upper.index("PROBDENSITY")]], dtype=np.float64).ravel()
    _check_density(prob, field)
    return SkyMap(
        uniq=uniq,
        probdensity=prob,
        distmu=_column(data, names, "DISTMU"),
        distsigma=_column(data, names, "DISTSIGMA"),
        distnorm=_column(data, names, "DISTNORM"),
        distmean=_finite_float(distmean),
        diststd=_finite_float(diststd),
        source="inline",
    )


def _flat(data: np.ndarray, names: list[str], hdr: object, ordering: str, field: str) -> SkyMap:
    import healpy as hp

    upper = [n.upper() for n in names]
    col = names[upper.index("PROB")] if "PROB" in upper else names[0]
    prob = np.asarray(data[col], dtype=np.float64).ravel()
    npix = prob.size
    if not hp.isnpixok(npix):
        raise _reject(f"{field}: {npix} pixels is not a valid HEALPix map size")
    nside = hp.npix2nside(npix)
    if ordering == "RING":
        prob = hp.reorder(prob, r2n=True)
    _check_density(prob, field)
    order = int(np.log2(nside))
    area = 4.0 * np.pi / npix
    uniq = 4 * (np.int64(1) << (2 * order)) + np.arange(npix, dtype=np.int64)
    return SkyMap(uniq=uniq, probdensity=prob / area, source=f"flat-{ordering.lower()}-nside{nside}")
