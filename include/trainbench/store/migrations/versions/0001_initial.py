"""Initial schema: runs, results (one per case x repeat x environment), device memory, verdicts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("case_key", sa.String(250), nullable=False),
        sa.Column("env_key", sa.String(64), nullable=False),
        sa.Column("framework", sa.String(32), nullable=False),
        sa.Column("device_set", sa.String(250), nullable=False),
        sa.Column("device_names", sa.String(500)),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("wall_s", sa.Float),
        sa.Column("user_s", sa.Float),
        sa.Column("sys_s", sa.Float),
        sa.Column("peak_mem_mib", sa.Float),
        sa.Column("peak_mem_method", sa.String(120)),
        sa.Column("images_per_s", sa.Float),
        sa.Column("parameters", sa.Integer),
        sa.Column("final_loss", sa.Float),
        sa.Column("test_accuracy", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("command", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("epochs", sa.JSON),
        sa.Column("summary", sa.JSON),
        sa.Column("environment", sa.JSON),
        sa.Column("telemetry", sa.JSON),
        sa.UniqueConstraint("run_id", "case_key", "env_key", name="uq_result_identity"),
    )
    op.create_index("ix_results_case", "results", ["framework", "device_set", "env_key"])
    op.create_table(
        "device_memory",
        sa.Column("result_id", sa.Integer, sa.ForeignKey("results.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("device", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100)),
        sa.Column("idle_mib", sa.Float),
        sa.Column("peak_mib", sa.Float),
        sa.Column("used_mib", sa.Float),
        sa.Column("method", sa.String(64), nullable=False),
    )
    op.create_table(
        "verdicts",
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("framework", sa.String(32), primary_key=True),
        sa.Column("device_set", sa.String(250), primary_key=True),
        sa.Column("env_key", sa.String(64), primary_key=True),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("current", sa.Float),
        sa.Column("baseline", sa.Float),
        sa.Column("change", sa.Float),
        sa.Column("p_value", sa.Float),
        sa.Column("history_runs", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text),
    )


def downgrade() -> None:
    for table in ("verdicts", "device_memory", "results", "runs"):
        op.drop_table(table)
