"""Run state: "running" from the first task until the run is published, "validated" once its rows passed
validation, "published" once its reports are written, "invalid" when validation failed. Only a published
run can be "latest" (output/latest, `--run-id latest`, the page's newest run). Runs stored before this
revision were published by the code of their day.

Large device sets: a set of 7 or 8 GPU UUIDs is longer than 250 characters, so device sets and case
keys become text.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


LONG = {"results": ("case_key", "device_set"), "verdicts": ("device_set",), "case_stats": ("device_set",)}


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="published"))
    for table, columns in LONG.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.Text, existing_type=sa.String(250), existing_nullable=False)


def downgrade() -> None:
    for table, columns in LONG.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.String(250), existing_type=sa.Text, existing_nullable=False)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("state")
