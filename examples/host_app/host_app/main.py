"""Run the host app once: migrate both schemas, store a conversation, rate it, read it back.

python -m host_app.main --url sqlite:///app.db
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from host_app.models import Feedback
from slack_agents_sa import Conversation, Provider
from slack_agents_sa.settings import normalize_url

HERE = __file__.rsplit("/host_app/", 1)[0]


def migrate_everything(url: str) -> None:
    """`alembic upgrade head` of the host app: ours first (env.py), then the app's."""
    config = Config(f"{HERE}/alembic.ini")
    config.cmd_opts = argparse.Namespace(x=[f"url={url}"])
    command.upgrade(config, "head")


async def run(url: str) -> None:
    storage = Provider(url=url, migrate=False)  # the app's Alembic run migrated ours
    await storage.initialize()
    try:
        conversation_id = await storage.get_or_create_conversation("helper", "C1", "1.1", "ops")
        message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
        await storage.append_text_block(message_id, "Is prod healthy?", is_user=True)

        sessions = async_sessionmaker(storage.db.engine, class_=AsyncSession)
        async with sessions.begin() as session:
            session.add(Feedback(conversation_id=conversation_id, message_id=message_id, rating=5))
        async with sessions() as session:
            # `Conversation.feedback` is the backref Feedback declares (so mypy cannot see it).
            feedback_of = getattr(Conversation, "feedback")  # noqa: B009
            conversation = await session.scalar(
                select(Conversation)
                .where(Conversation.id == conversation_id)
                .options(selectinload(feedback_of))
            )
            assert conversation is not None
            ratings = [feedback.rating for feedback in getattr(conversation, "feedback")]  # noqa: B009
            feedback = await session.scalar(
                select(Feedback).options(selectinload(Feedback.conversation))
            )
            assert feedback is not None
        print(f"conversation {conversation_id} in #{conversation.channel_name}: ratings {ratings}")
        print(f"feedback {feedback.id} belongs to thread {feedback.conversation.thread_id}")
    finally:
        await storage.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="database URL, e.g. sqlite:///app.db")
    args = parser.parse_args()
    url = normalize_url(args.url).render_as_string(hide_password=False)
    migrate_everything(url)
    asyncio.run(run(url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
