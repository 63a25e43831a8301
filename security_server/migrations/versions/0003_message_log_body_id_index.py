"""Message log: an index on ``message_log.body_id``.

Revision ID: 0003
Revises: 0002
Finding whether a record names a large body (dropping a body whose record failed, the
orphaned-body sweep) looked through every record without it. Partial: only records whose
``body_id`` is set, so a record with its body inline writes nothing to it. The
``message_log`` table itself is created from its definition
(:func:`security_server.db.create_tables`, which gives a new table this index): this
revision adds the index to a table made before it, and does nothing where the table does
not exist yet or already has it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

TABLE = 'message_log'
INDEX = 'ix_message_log_body_id'


def _index_names() -> set[str] | None:
    """The table's index names; None: no such table."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(TABLE):
        return None
    return {str(index['name']) for index in inspector.get_indexes(TABLE)}


def upgrade() -> None:
    names = _index_names()
    if names is not None and INDEX not in names:
        where = sa.text('body_id IS NOT NULL')  # as logtables': records of large bodies
        op.create_index(INDEX, TABLE, ['body_id'], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    names = _index_names()
    if names is not None and INDEX in names:
        op.drop_index(INDEX, table_name=TABLE)
