"""Sphinx configuration of the stmix documentation."""

import shutil
from importlib.metadata import version as package_version
from pathlib import Path

HERE = Path(__file__).parent

project = "stmix"
author = "stmix developers"
copyright = "2026, stmix developers"
release = version = package_version("stmix")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the tutorial is stored with its outputs and executed by the tests
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"stmix {release}"
suppress_warnings = ["mystnb.unknown_mime_type"]

# the tutorial lives in notebooks/ (where the tests run it); the docs show that very file
(HERE / "generated").mkdir(exist_ok=True)
shutil.copyfile(HERE.parent / "notebooks" / "tutorial.ipynb", HERE / "generated" / "tutorial.ipynb")
