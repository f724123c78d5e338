"""Each result keeps its phase timeline (seconds of startup, data, first epoch, steady training, evaluation,
teardown; see trainbench.measure.phases).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("phases", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("phases")
