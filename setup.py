"""Only the optional compiled helpers are declared here; everything else is in pyproject.toml.

``optional=True``: without a C compiler (or Python headers) the build goes on without them and modelrouter
runs on its pure-Python paths (speedups.py). Set MODELROUTER_NO_EXTENSIONS=1 to skip building them.
"""

import os

from setuptools import Extension, setup

extensions = []
if os.environ.get("MODELROUTER_NO_EXTENSIONS") != "1":
    extensions.append(Extension("modelrouter._speedups", ["src/modelrouter/_speedups.c"], optional=True))

setup(ext_modules=extensions)
