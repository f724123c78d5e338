"""Run revision and plan.

`runs.revision` counts the writes of a run's results (a row stored, replaced, or every row replaced), so a reader
that keeps what it computed from a run (the Benchmarks pages) knows, from the runs table alone, which runs changed
since. Runs stored before this revision start at 0.

`planned_cases`: each host's planned cases of a run, so a run stopped part-way says which never ran.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "planned_cases",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("host", sa.String(64), primary_key=True),
        sa.Column("case_key", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("planned_cases")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("revision")
