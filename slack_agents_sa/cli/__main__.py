"""`python -m slack_agents_sa.cli`: the `slack-agents-sa` command."""

import sys

from slack_agents_sa.cli import main

sys.exit(main())
