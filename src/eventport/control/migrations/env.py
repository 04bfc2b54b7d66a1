"""Alembic environment: always run against the engine eventport hands over."""

from __future__ import annotations

from alembic import context

from eventport.control.database import control_names_only, control_objects_only
from eventport.control.models import Base

engine = context.config.attributes["engine"]

# Processes that start together on one PostgreSQL database (API servers, workers) migrate one
# at a time: the others wait here, then find the schema at head (before, 1-2 of 3 started at
# once died on alembic_version's unique key). The lock ends with the migrations' transaction.
MIGRATION_LOCK = 0x65706D67  # "epmg"

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=control_objects_only,
        include_name=control_names_only,
    )
    with context.begin_transaction():
        context.run_migrations()
