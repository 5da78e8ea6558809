"""The host's built-in `postgres` provider, read for the importer."""

from __future__ import annotations

from slack_agents_sa.backends.builtin_source import BuiltinSource, SourceBlock, json_value, utc


class PostgreSQLSource(BuiltinSource):
    """`slack_agents.storage.postgres`: a table per block type, ordered by creation time."""

    file_kind = "file_block"
    tool_kind = "tool_block"
    required_tables = (
        "conversations",
        "messages",
        "text_blocks",
        "file_blocks",
        "tool_blocks",
        "usage_blocks",
        "kv_store",
        "list_store",
    )
    heartbeats_sql = (
        "SELECT agent_name, extract(epoch FROM last_socket_ping_at) FROM agent_heartbeats"
    )
    block_tables = ("text_blocks", "file_blocks", "tool_blocks", "usage_blocks")

    async def blocks(self, message_ids: list[int]) -> dict[int, list[SourceBlock]]:
        params = {"ids": message_ids}
        found: list[tuple[int, SourceBlock]] = []
        for row in await self.rows(
            "SELECT id, message_id, is_user, text, source_file_id, created_at "
            "FROM text_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            found.append(
                (
                    row.message_id,
                    SourceBlock(
                        "text_block",
                        row.id,
                        "user_text" if row.is_user else "text",
                        utc(row.created_at),
                        content={"text": row.text},
                        source_file_id=row.source_file_id,
                    ),
                )
            )
        for row in await self.rows(
            "SELECT id, message_id, is_user, filename, mimetype, size_bytes, content, "
            "tool_block_id, created_at FROM file_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            found.append(
                (
                    row.message_id,
                    SourceBlock(
                        "file_block",
                        row.id,
                        "user_file" if row.is_user else "file",
                        utc(row.created_at),
                        content=json_value(row.content),
                        filename=row.filename,
                        mimetype=row.mimetype,
                        size_bytes=row.size_bytes,
                        tool_block_id=row.tool_block_id,
                    ),
                )
            )
        for row in await self.rows(
            "SELECT id, message_id, tool_call_id, tool_name, tool_input, tool_output, is_error, "
            "created_at FROM tool_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            tool = {
                "tool_call_id": row.tool_call_id,
                "tool_name": row.tool_name,
                "tool_input": json_value(row.tool_input) or {},
                "tool_output": row.tool_output or "",
                "is_error": bool(row.is_error),
            }
            found.append(
                (
                    row.message_id,
                    SourceBlock("tool_block", row.id, "tool_use", utc(row.created_at), tool=tool),
                )
            )
        for row in await self.rows(
            "SELECT id, message_id, model, version, input_tokens, output_tokens, "
            "cache_creation_input_tokens, cache_read_input_tokens, "
            "peak_single_call_input_tokens, estimated_cost_usd, created_at "
            "FROM usage_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            usage = {
                "model": row.model,
                "version": row.version,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "cache_creation_input_tokens": row.cache_creation_input_tokens,
                "cache_read_input_tokens": row.cache_read_input_tokens,
                "peak_single_call_input_tokens": row.peak_single_call_input_tokens,
                "estimated_cost_usd": None
                if row.estimated_cost_usd is None
                else float(row.estimated_cost_usd),
            }
            found.append(
                (
                    row.message_id,
                    SourceBlock("usage_block", row.id, "usage", utc(row.created_at), usage),
                )
            )
        # The built-in provider orders a message's blocks by creation time.
        order = {"text_block": 0, "file_block": 1, "tool_block": 2, "usage_block": 3}
        found.sort(key=lambda pair: (pair[1].created_at, order[pair[1].kind], pair[1].source_id))
        grouped: dict[int, list[SourceBlock]] = {}
        for message_id, block in found:
            grouped.setdefault(message_id, []).append(block)
        return grouped
