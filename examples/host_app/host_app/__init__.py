"""A small app that keeps its own tables next to slack_agents_sa's, in one database."""
