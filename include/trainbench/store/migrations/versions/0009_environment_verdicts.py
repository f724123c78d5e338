"""Environment changes judged: per before/after run, case and metric, the change after / before - 1 with its 95 %
interval and the verdict (slower, faster, no change, inconclusive), and what changed in the host's environment.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "environment_verdicts",
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("host", sa.String(64), primary_key=True),
        sa.Column("framework", sa.String(32), primary_key=True),
        sa.Column("device_set", sa.Text, primary_key=True),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("change", sa.Float),
        sa.Column("low", sa.Float),
        sa.Column("high", sa.Float),
        sa.Column("before", sa.JSON, nullable=False),
        sa.Column("after", sa.JSON, nullable=False),
        sa.Column("baseline_run", sa.String(250)),
        sa.Column("repeats", sa.Integer, nullable=False),
        sa.Column("changed", sa.JSON, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True)),
        sa.Column("detail", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("environment_verdicts")
