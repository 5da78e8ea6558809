"""A realistic agent conversation, driven through the host's ConversationManager."""

from __future__ import annotations

from slack_agents.conversations import ConversationManager

IMAGE = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
}
PDF = {"data": "JVBERi0xLjQK", "filename": "q3.pdf", "mimeType": "application/pdf"}
CHART = {"data": "iVBORw0KGgoAAA==", "filename": "chart.png", "mimeType": "image/png"}


async def _usage(cm: ConversationManager, message_id: int | str, tokens: int) -> None:
    await cm.append_usage_block(
        message_id,
        model="claude-sonnet",
        version="2025-01",
        input_tokens=tokens,
        output_tokens=tokens // 10,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=tokens // 2,
        peak_single_call_input_tokens=tokens,
        estimated_cost_usd=tokens / 1e6,
    )


async def drive_conversation(cm: ConversationManager, *, with_documents: bool = True) -> int | str:
    """Three turns: a tool call, an image upload, and (optionally) a PDF plus a tool-made file."""
    conversation_id = await cm.get_or_create_conversation(
        "helper", "C042", "1700000000.000100", "ops"
    )

    turn = await cm.create_message(conversation_id, "U1", "Ann Lee", "ann")
    await cm.append_text_block(turn, "What's the weather in Paris?", is_user=True)
    await cm.append_text_block(turn, "Let me check.")
    await cm.append_tool_block(
        turn,
        tool_call_id="toolu_weather_1",
        tool_name="get_weather",
        tool_input={"city": "Paris", "units": "metric"},
        tool_output='{"temp": 12, "sky": "rain"}',
        is_error=False,
    )
    await cm.append_text_block(turn, "12°C and raining in Paris ☔.")
    await _usage(cm, turn, 1200)

    conversation_id = await cm.get_or_create_conversation(
        "helper", "C042", "1700000000.000100", "ops"
    )
    turn = await cm.create_message(conversation_id, "U2", "Bo Chen", "bo")
    await cm.append_file_block(
        turn, IMAGE, is_user=True, filename="photo.png", mimetype="image/png", size_bytes=8
    )
    await cm.append_text_block(turn, "What is in this photo?", is_user=True)
    await cm.append_text_block(turn, "A cat on a keyboard.")
    await _usage(cm, turn, 3400)

    if with_documents:
        turn = await cm.create_message(conversation_id, "U1", "Ann Lee", "ann")
        pdf_id = await cm.append_file_block(
            turn, PDF, is_user=True, filename="q3.pdf", mimetype="application/pdf", size_bytes=9
        )
        await cm.append_text_block(
            turn, "[q3.pdf]\nRevenue grew 12%.", is_user=True, source_file_id=pdf_id
        )
        await cm.append_text_block(turn, "Plotting it.")
        tool_id = await cm.append_tool_block(
            turn,
            tool_call_id="toolu_plot_1",
            tool_name="plot",
            tool_input={"series": [1.0, 1.12], "labels": ["Q2", "Q3"]},
            tool_output="rendered chart.png",
            is_error=False,
        )
        await cm.append_file_block(
            turn,
            CHART,
            is_user=False,
            filename="chart.png",
            mimetype="image/png",
            size_bytes=11,
            tool_block_id=tool_id,
        )
        await cm.append_tool_block(
            turn,
            tool_call_id="toolu_mail_1",
            tool_name="send_mail",
            tool_input={"to": "cfo@example.com"},
            tool_output="SMTP timeout",
            is_error=True,
        )
        await cm.append_text_block(turn, "Chart attached; mail failed.")
        await _usage(cm, turn, 5600)
    return conversation_id
