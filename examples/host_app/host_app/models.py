"""The host app's tables, declared on slack_agents_sa's `Base` so they can point at ours."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from slack_agents_sa.models import Base, Conversation, Message
from slack_agents_sa.types import BigID, utcnow


class Feedback(Base):
    """A user's rating of an agent's answer: belongs to a conversation, maybe a message."""

    __tablename__ = "host_feedback"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("agents_conversations.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(
        BigID, ForeignKey("agents_messages.id", ondelete="SET NULL")
    )
    rating: Mapped[int]
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Both ways: Feedback.conversation, and Conversation.feedback added by the backref
    # (our package's models stay untouched).
    conversation: Mapped[Conversation] = relationship(
        backref=backref("feedback", order_by="Feedback.id", passive_deletes=True)
    )
    message: Mapped[Message | None] = relationship(backref=backref("feedback"))
