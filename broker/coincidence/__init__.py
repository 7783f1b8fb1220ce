# SPDX-License-Identifier: Apache-2.0
"""Multi-messenger coincidences: localization footprints, spatial tests, joint false-alarm rates."""
