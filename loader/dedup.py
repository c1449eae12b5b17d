"""Exactly-once rows: messageId is the key, with no time window.

Within a batch the copy with the earliest receivedAt wins (ties: line order); across batches,
files and runs the first copy loaded wins, checked by an anti-join against every message id
ever loaded (`_loader.seen_messages`), inside the same transaction as the insert.
"""

from __future__ import annotations

# Over the normaliser's `checked` rows (alias c, envelope list e, receivedAt is e[6]).
IN_BATCH_RANK = (
    "row_number() OVER (PARTITION BY c.message_id "
    "ORDER BY try_cast(c.e[6]->>'$' AS TIMESTAMPTZ) NULLS LAST, c.line_no)"
)

SEEN_TABLE = "_loader.seen_messages"


def fresh_messages_sql(batch_messages: str) -> str:
    """The batch's messages that no earlier batch, file or run has loaded."""
    return (
        f"SELECT m.line_no, m.message_id FROM {batch_messages} m "
        f"ANTI JOIN {SEEN_TABLE} s ON s.message_id = m.message_id"
    )
