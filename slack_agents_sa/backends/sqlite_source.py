"""The host's built-in `sqlite` provider, read for the importer."""

from __future__ import annotations

import json

from sqlalchemy import text

from slack_agents_sa.backends.builtin_source import BuiltinSource, SourceBlock, json_value, utc


class SQLiteSource(BuiltinSource):
    """`slack_agents.storage.sqlite`: one `blocks` table for every block type."""

    required_tables = ("conversations", "messages", "blocks", "kv_store", "list_store")
    heartbeats_sql = "SELECT agent_name, last_ping_pong_time FROM agent_heartbeats"
    block_tables = ("blocks",)

    async def blocks(self, message_ids: list[int]) -> dict[int, list[SourceBlock]]:
        found: dict[int, list[SourceBlock]] = {}
        rows = await self.conn.execute(
            text(
                "SELECT * FROM blocks WHERE message_id IN (SELECT value FROM json_each(:ids)) "
                "ORDER BY id"
            ),
            {"ids": json.dumps(message_ids)},
        )
        for row in rows.mappings():
            block_type = row["block_type"]
            block = SourceBlock(
                kind="block",
                source_id=row["id"],
                block_type=block_type,
                created_at=utc(row["created_at"]),
            )
            if block_type == "tool_use":
                block.tool = {
                    "tool_call_id": row["tool_call_id"],
                    "tool_name": row["tool_name"],
                    "tool_input": json_value(row["tool_input"]) or {},
                    "tool_output": row["tool_output"] or "",
                    "is_error": bool(row["is_error"]),
                }
            else:
                block.content = json_value(row["content"])
                block.filename = row["filename"]
                block.mimetype = row["mimetype"]
                block.size_bytes = row["size_bytes"]
                block.source_file_id = row["source_file_id"]
                block.tool_block_id = row["tool_block_id"]
            found.setdefault(row["message_id"], []).append(block)
        return found
