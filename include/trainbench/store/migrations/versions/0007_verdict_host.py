"""Verdicts name their case's host: a case is host x framework x device set x environment, and a report lists
two hosts' verdicts apart (the environment key already told them apart, but no reader could show it).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("host", sa.String(64)))
    op.execute(
        "UPDATE verdicts SET host = (SELECT MIN(results.host) FROM results WHERE results.run_id = verdicts.run_id "
        "AND results.env_key = verdicts.env_key)"
    )


def downgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("host")
