"""Alembic environment: migrations run on a connection the caller hands in.

``coordinator.schema`` opens the connection and calls Alembic on a thread
of its own, away from the event loop.
"""

from __future__ import annotations

from alembic import context

from coordinator.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through `runmesh-coordinator migrate`, not bare alembic"
    )

progress = config.attributes.get("progress")

context.configure(
    connection=connection,
    # `runmesh-coordinator migrate` shows each step as it is applied.
    on_version_apply=progress,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copy-and-rename
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
