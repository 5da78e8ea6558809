"""Tool providers an agent enables under `tools:` (e.g. `type: slack_agents_sa.tools.history`)."""
