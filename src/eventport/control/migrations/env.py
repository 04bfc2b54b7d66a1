"""Alembic environment: always run against the engine eventport hands over."""

from __future__ import annotations

from alembic import context

from eventport.control.database import control_names_only, control_objects_only
from eventport.control.models import Base

engine = context.config.attributes["engine"]

with engine.begin() as connection:
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
