# SPDX-License-Identifier: Apache-2.0
"""Sky geometry shared by the archive, the state store and the coincidence search."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def angular_separation(
    ra1: npt.ArrayLike, dec1: npt.ArrayLike, ra2: npt.ArrayLike, dec2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Great-circle distance (deg) between positions (deg), broadcast; Vincenty's formula, exact at all angles.

    Examples
    --------
    >>> float(angular_separation(10.0, 0.0, 190.0, 0.0))
    180.0
    """
    r1, d1, r2, d2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2))
    dra = r2 - r1
    sd1, cd1, sd2, cd2 = np.sin(d1), np.cos(d1), np.sin(d2), np.cos(d2)
    cdra = np.cos(dra)
    num = np.hypot(cd2 * np.sin(dra), cd1 * sd2 - sd1 * cd2 * cdra)
    return np.asarray(np.degrees(np.arctan2(num, sd1 * sd2 + cd1 * cd2 * cdra)), dtype=np.float64)
