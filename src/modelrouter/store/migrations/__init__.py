"""Alembic migrations for the store, shipped inside the package so that ``Store.open`` can bring any database
to the current schema at start.

To add a revision (from the repository root; ``[tool.alembic]`` in pyproject.toml points here)::

    alembic -x url=sqlite:///data/modelrouter.db revision -m "what changes"

Write the upgrade by hand, update ``store/schema.py`` to match, and run ``pytest tests/test_store.py``: a test
compares the migrated database with ``_schema``. Revisions are frozen once released: never edit one, add another.
"""
