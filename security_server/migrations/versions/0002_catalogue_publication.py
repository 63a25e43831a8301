"""Configuration store: where publishing each client's services to the registry stands.

Revision ID: 0002
Revises: 0001
The ss_catalogue_publication table (security_server.store.CataloguePublicationRow).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ss_catalogue_publication',
        sa.Column('client_id', sa.String(length=1100), nullable=False),
        sa.Column('wanted', sa.Integer(), nullable=False),
        sa.Column('published', sa.Integer(), nullable=False),
        sa.Column('tried', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=True),
        sa.Column('request_id', sa.String(length=128), nullable=True),
        sa.Column('services', sa.Integer(), nullable=False),
        sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.String(), nullable=True),
        sa.PrimaryKeyConstraint('client_id')
    )


def downgrade() -> None:
    op.drop_table('ss_catalogue_publication')
