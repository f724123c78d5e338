"""Imported logs are named for what they are: runs.source "historical" becomes "imported_log", and their
run ids "historical:<file>" become "imported:<file>" ("history" now means only trainbench's own past runs).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

runs = sa.table(
    "runs",
    sa.column("run_id", sa.String),
    sa.column("source", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("settings", sa.JSON),
)
CHILDREN = [sa.table(name, sa.column("run_id", sa.String)) for name in ("results", "verdicts")]


def _rename(old_source: str, new_source: str, old_prefix: str, new_prefix: str) -> None:
    conn = op.get_bind()
    for run in conn.execute(sa.select(runs).where(runs.c.source == old_source)).mappings().all():
        new_id = new_prefix + run["run_id"].removeprefix(old_prefix)
        conn.execute(
            runs.insert().values(
                run_id=new_id, source=new_source, created_at=run["created_at"], settings=run["settings"]
            )
        )
        for child in CHILDREN:
            conn.execute(child.update().where(child.c.run_id == run["run_id"]).values(run_id=new_id))
        conn.execute(runs.delete().where(runs.c.run_id == run["run_id"]))


def upgrade() -> None:
    _rename("historical", "imported_log", "historical:", "imported:")


def downgrade() -> None:
    _rename("imported_log", "historical", "imported:", "historical:")
