"""Fleet and schedule: results carry the host (its Celery queue) they were planned on and ran on (earlier
rows ran on the single `gpu` queue), and runs their logical date, so "latest" is the newest week measured.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("host", sa.String(64)))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("logical_date", sa.DateTime(timezone=True)))
    op.execute("UPDATE results SET host = 'gpu' WHERE run_id IN (SELECT run_id FROM runs WHERE source = 'trainbench')")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("logical_date")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("host")
