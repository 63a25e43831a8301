"""services published by security servers: type, version, title, endpoints, publisher

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import registry.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("service_type", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("version", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("title", sa.String(length=1000), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("endpoints", sa.JSON(), nullable=False,
                                      server_default="[]"))
        batch_op.add_column(sa.Column("published_by", sa.String(length=1100), nullable=True))
        batch_op.add_column(sa.Column("published_at", registry.models.UTCDateTime(),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        for name in ("published_at", "published_by", "endpoints", "title", "version",
                     "service_type"):
            batch_op.drop_column(name)
