"""Alembic environment. ``Store.open`` runs it with a connection already inside a transaction (holding the
migration lock), handed over in ``config.attributes["connection"]``. Run from the ``alembic`` command (developers:
``alembic -x url=sqlite:///tmp/x.db upgrade head`` or ``revision --autogenerate``), it needs a synchronous URL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from modelrouter.store.schema import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if isinstance(given, sa.Connection):
    _run(given)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: give a database, e.g. alembic -x url=sqlite:///data/modelrouter.db upgrade head")
    with sa.create_engine(url).begin() as connection:
        _run(connection)
