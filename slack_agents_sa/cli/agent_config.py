"""An agent's config.yaml as the command line reads it: its `storage:` options, with their
`{VAR}` placeholders filled from the environment as the host fills them.

Only the placeholders of the `storage:` block must be set: a job that works on the database
needs no Slack or LLM tokens. Whole-line comments are skipped first, as the host skips them
(a commented-out `# url: "{OLD_URL}"` needs no OLD_URL).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from slack_agents_sa.cli.exits import UsageError

PROVIDER_TYPE = "slack_agents_sa"

_PLACEHOLDER = re.compile(r"\{([A-Z_][A-Z0-9_]*)\}")
#: What an unset placeholder outside `storage:`'s lines becomes before parsing: should it
#: reach the storage options after all (an alias, a merge key), it is found there.
_UNSET = re.compile(r"__slack_agents_sa_unset_([A-Z_][A-Z0-9_]*)__")
_WHOLE_LINE_COMMENT = re.compile(r"(?m)^(\s*)#.*$")


def _storage_lines(text: str) -> range | None:
    """The lines (0-based) of the top-level `storage:` entry, key to last value line; None
    when there is none or the text does not parse before its placeholders are filled."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "storage":
            end = value.end_mark
            # A block ends where the next key begins (at the key's column, on a later line).
            starts_next = end.column <= key.start_mark.column and end.line > key.start_mark.line
            last = end.line - 1 if starts_next else end.line
            return range(key.start_mark.line, last + 1)
    return None


def _filled(text: str, config_file: Path) -> str:
    """`text` with its placeholders filled; UsageError for one on `storage:`'s lines that is
    not set (elsewhere an unset one becomes a marker `_check_all_set` looks for)."""
    uncommented = _WHOLE_LINE_COMMENT.sub(r"\1", text)
    required = _storage_lines(uncommented)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in os.environ:
            return os.environ[name]
        line = uncommented.count("\n", 0, match.start())
        if required is None or line in required:
            raise _unset(config_file, name)
        return f"__slack_agents_sa_unset_{name}__"

    return _PLACEHOLDER.sub(value, uncommented)


def _unset(config_file: Path, name: str) -> UsageError:
    return UsageError(f"{config_file} uses {{{name}}}, but {name} is not set")


def _check_all_set(value: Any, config_file: Path) -> None:
    """UsageError if an unset placeholder reached the storage options another way."""
    if isinstance(value, str) and (found := _UNSET.search(value)):
        raise _unset(config_file, found.group(1))
    if isinstance(value, dict):
        for item in (*value.keys(), *value.values()):
            _check_all_set(item, config_file)
    elif isinstance(value, list):
        for item in value:
            _check_all_set(item, config_file)


def storage_options(path: Path) -> dict[str, Any]:
    """The `storage:` mapping of an agent's config.yaml (or of the agent directory holding
    one), placeholders filled as the host fills them; UsageError unless it names us."""
    import yaml

    config_file = path / "config.yaml" if path.is_dir() else path
    try:
        text = config_file.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {config_file}: {error.strerror}") from None
    try:
        data = yaml.safe_load(_filled(text, config_file))
    except yaml.MarkedYAMLError as error:
        # Not str(error): it quotes the offending line, which may hold a password.
        line = f"line {error.problem_mark.line + 1}: " if error.problem_mark else ""
        problem = error.problem or "malformed"
        raise UsageError(f"{config_file} is not valid YAML ({line}{problem})") from None
    except yaml.YAMLError:
        raise UsageError(f"{config_file} is not valid YAML") from None
    storage = (data or {}).get("storage") if isinstance(data, dict) else None
    if not isinstance(storage, dict) or storage.get("type") != PROVIDER_TYPE:
        raise UsageError(f"{config_file} has no `storage:` with `type: {PROVIDER_TYPE}`")
    _check_all_set(storage, config_file)
    return {name: value for name, value in storage.items() if name != "type"}
