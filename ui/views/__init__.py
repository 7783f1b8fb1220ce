# SPDX-License-Identifier: Apache-2.0
"""The dashboard's pages, one module each, each with one page function."""
