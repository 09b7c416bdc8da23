"""Migration revisions, applied in order of ``down_revision``. (Alembic skips this file.)"""
