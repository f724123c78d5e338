"""Host quarantines and sent alerts.

`quarantines`: a host that stopped measuring in a run (its pre-flight doctor failed, or a GPU turned unhealthy),
with the reason its remaining cases name.  `alerts_sent`: each alert delivered per channel, so a retried alert
task never sends one twice.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "quarantines",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("host", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "alerts_sent",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("alert_key", sa.String(500), primary_key=True),
        sa.Column("channel", sa.String(32), primary_key=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alerts_sent")
    op.drop_table("quarantines")
