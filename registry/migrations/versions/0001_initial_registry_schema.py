"""initial registry schema

Revision ID: 0001
Revises: (none)
Create Date: 2025-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import registry.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", registry.models.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=1100), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("admin_audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_audit_log_at"), ["at"], unique=False)

    op.create_table(
        "approved_cas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("ocsp_urls", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "approved_tsas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "conf_signing_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", registry.models.UTCDateTime(), nullable=False),
        sa.Column("activated_at", registry.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "federation_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("ocsp_freshness_seconds", sa.Integer(), nullable=False),
        sa.Column("timestamping_interval_seconds", sa.Integer(), nullable=False),
        sa.Column("conf_expiry_seconds", sa.Integer(), nullable=False),
        sa.Column("conf_refresh_seconds", sa.Integer(), nullable=False),
        sa.Column("auto_approve_auth_certs", sa.Boolean(), nullable=False),
        sa.Column("auto_approve_clients", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "global_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "management_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("server", sa.String(length=1100), nullable=False),
        sa.Column("member", sa.String(length=1100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", registry.models.UTCDateTime(), nullable=False),
        sa.Column("decided_at", registry.models.UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=256), nullable=True),
        sa.Column("comment", sa.String(length=2000), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id"),
    )
    with op.batch_alter_table("management_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_management_requests_state"), ["state"], unique=False)

    op.create_table(
        "member_classes",
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("generated_at", registry.models.UTCDateTime(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "global_group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=1100), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["global_groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "client_id"),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_class", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("created_at", registry.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_class"],
            ["member_classes.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("member_class", "code"),
    )
    op.create_table(
        "security_servers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("created_at", registry.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["members.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "code"),
    )
    op.create_table(
        "subsystems",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("created_at", registry.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("member_id", "code"),
    )
    op.create_table(
        "auth_certs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("cert_hash", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("registered_at", registry.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["server_id"], ["security_servers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cert_hash"),
    )
    op.create_table(
        "server_clients",
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("subsystem_id", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("registered_at", registry.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["server_id"], ["security_servers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subsystem_id"], ["subsystems.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("server_id", "subsystem_id"),
    )
    op.create_table(
        "services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subsystem_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("description", sa.String(length=4000), nullable=False),
        sa.Column("description_document", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["subsystem_id"], ["subsystems.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subsystem_id", "code"),
    )


def downgrade() -> None:
    op.drop_table("services")
    op.drop_table("server_clients")
    op.drop_table("auth_certs")
    op.drop_table("subsystems")
    op.drop_table("security_servers")
    op.drop_table("members")
    op.drop_table("global_group_members")
    op.drop_table("publications")
    op.drop_table("member_classes")
    with op.batch_alter_table("management_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_management_requests_state"))

    op.drop_table("management_requests")
    op.drop_table("global_groups")
    op.drop_table("federation_settings")
    op.drop_table("conf_signing_keys")
    op.drop_table("approved_tsas")
    op.drop_table("approved_cas")
    with op.batch_alter_table("admin_audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_audit_log_at"))

    op.drop_table("admin_audit_log")
