"""The environment watch: each host's environment as the watch read it (driver, CUDA, GPUs and VBIOS, framework
interpreters' packages, trainer revisions), with when and the watch run that read it (a retried watch replaces
its own reading), so a change is noticed between two readings.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "host_environments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("environment", sa.JSON, nullable=False),
        sa.Column("run_id", sa.String(250)),
    )
    op.create_index("ix_host_environments_host", "host_environments", ["host", "observed_at"])


def downgrade() -> None:
    op.drop_index("ix_host_environments_host", "host_environments")
    op.drop_table("host_environments")
