"""Noise: results say whether they were a warm-up run (stored and shown, never in statistics), and each
run keeps its dispersion per case (median, min, max, coefficient of variation of wall time and steady
images/s over the repeats, and whether that is noisier than [measurement] max_cv).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("warmup", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "case_stats",
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("framework", sa.String(32), primary_key=True),
        sa.Column("device_set", sa.String(250), primary_key=True),
        sa.Column("host", sa.String(64), primary_key=True),
        sa.Column("env_key", sa.String(64), primary_key=True),
        sa.Column("repeats", sa.Integer, nullable=False),
        sa.Column("wall_median", sa.Float),
        sa.Column("wall_min", sa.Float),
        sa.Column("wall_max", sa.Float),
        sa.Column("wall_cv", sa.Float),
        sa.Column("ips_median", sa.Float),
        sa.Column("ips_min", sa.Float),
        sa.Column("ips_max", sa.Float),
        sa.Column("ips_cv", sa.Float),
        sa.Column("noisy", sa.Boolean),
    )


def downgrade() -> None:
    op.drop_table("case_stats")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("warmup")
