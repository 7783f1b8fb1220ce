# SPDX-License-Identifier: Apache-2.0
"""Avro schemas of mmbroker's public messages (``alert.avsc``)."""
