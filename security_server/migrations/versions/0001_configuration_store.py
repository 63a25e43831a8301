"""Configuration store: first revision.

Revision ID: 0001
Revises: (none)
The ss_* tables: local clients and their IS certificates, service descriptions, services,
endpoints, access rights, local groups, the admin audit log and the version counter.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ss_admin_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=256), nullable=False),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('data', sa.String(), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_table('ss_client',
        sa.Column('id', sa.String(length=1100), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('is_connection', sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_table('ss_meta',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('value', sa.String(), nullable=False),
        sa.PrimaryKeyConstraint('key')
    )
    op.create_table('ss_access_right',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=1100), nullable=False),
        sa.Column('service_code', sa.String(length=255), nullable=False),
        sa.Column('method', sa.String(length=16), nullable=False),
        sa.Column('path', sa.String(), nullable=False),
        sa.Column('subject', sa.String(length=1400), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['ss_client.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('client_id', 'service_code', 'method', 'path', 'subject')
    )
    op.create_table('ss_client_cert',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=1100), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('pem', sa.String(), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['ss_client.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('client_id', 'sha256')
    )
    op.create_table('ss_local_group',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=1100), nullable=False),
        sa.Column('code', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['ss_client.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('client_id', 'code')
    )
    op.create_table('ss_service_description',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=1100), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('url', sa.String(), nullable=False),
        sa.Column('document', sa.String(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('refreshed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['client_id'], ['ss_client.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_table('ss_local_group_member',
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.Column('member', sa.String(length=1100), nullable=False),
        sa.ForeignKeyConstraint(['group_id'], ['ss_local_group.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('group_id', 'member')
    )
    op.create_table('ss_service',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('description_id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=1100), nullable=False),
        sa.Column('code', sa.String(length=255), nullable=False),
        sa.Column('url', sa.String(), nullable=False),
        sa.Column('timeout', sa.Float(), nullable=False),
        sa.Column('tls_verify', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['description_id'], ['ss_service_description.id'],
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('client_id', 'code')
    )
    op.create_table('ss_endpoint',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('service_id', sa.Integer(), nullable=False),
        sa.Column('method', sa.String(length=16), nullable=False),
        sa.Column('path', sa.String(), nullable=False),
        sa.Column('generated', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['service_id'], ['ss_service.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('service_id', 'method', 'path')
    )


def downgrade() -> None:
    op.drop_table('ss_endpoint')
    op.drop_table('ss_service')
    op.drop_table('ss_local_group_member')
    op.drop_table('ss_service_description')
    op.drop_table('ss_local_group')
    op.drop_table('ss_client_cert')
    op.drop_table('ss_access_right')
    op.drop_table('ss_meta')
    op.drop_table('ss_client')
    op.drop_table('ss_admin_audit')
