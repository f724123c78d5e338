"""Alembic environment: migrations run on the connection ResultStore hands in."""

from alembic import context

from trainbench.store.results import VERSION_TABLE, metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
