"""Sphinx configuration for the trioplane documentation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane

project = "trioplane"
release = trioplane.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build"]

autodoc_typehints = "description"
autodoc_member_order = "bysource"

nitpicky = False

html_theme = "alabaster"
