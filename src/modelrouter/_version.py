"""The package version (kept equal to pyproject.toml's; ``modelrouter --version`` and ``/metrics`` show it)."""

__version__ = "0.1.0"
