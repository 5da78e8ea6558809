"""OAuth secrets at rest (option `encryption_keys`): sealed, opened, rotated; never shown."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Connection, event, insert, select, update

from slack_agents_sa import Provider, cli
from slack_agents_sa.cli.keys import KEYS_ENV_VAR
from slack_agents_sa.errors import ConfigError, DecryptionError
from slack_agents_sa.keys import rotate_keys
from slack_agents_sa.models import OAuthClient, OAuthToken, table_of
from slack_agents_sa.secretbox import PREFIX, SecretBox
from tests import samples
from tests.test_cli import run_cli

NEW = Fernet.generate_key().decode()
OLD = Fernet.generate_key().decode()
STRANGER = Fernet.generate_key().decode()

# A plaintext token may look like a Fernet token: only our prefix marks a sealed value.
ACCESS = "gAAAAA-looks-like-fernet-" + "a" * 3000
SECRET = "client-secret-s3cr3t"

# The shared samples, with the secrets this file looks for in the stored rows.
TOKEN = replace(samples.TOKEN, access_token=ACCESS, refresh_token_enc="host-sealed-refresh")
CLIENT = replace(samples.CLIENT, client_id="client-1", client_secret=SECRET)
PUBLIC_CLIENT = replace(CLIENT, client_id="client-2", client_secret=None)

TOKENS = table_of(OAuthToken)
CLIENTS = table_of(OAuthClient)


async def stored_tokens(storage: Provider) -> dict[str, str]:
    """access_token as stored, by user_id (a raw select: no decryption)."""
    rows = await storage.db.execute(select(TOKENS.c.user_id, TOKENS.c.access_token))
    return {row.user_id: row.access_token for row in rows}


async def stored_secrets(storage: Provider) -> dict[str, str | None]:
    """client_secret as stored, by redirect_uri."""
    rows = await storage.db.execute(select(CLIENTS.c.redirect_uri, CLIENTS.c.client_secret))
    return {row.redirect_uri: row.client_secret for row in rows}


async def store_token_as_is(storage: Provider, user_id: str, access_token: str) -> None:
    """A row as an earlier provider (other keys, or none) wrote it."""
    values: dict[str, Any] = {**TOKEN.__dict__, "access_token": access_token}
    await storage.db.execute(insert(TOKENS), {"user_id": user_id, "server_id": "mcp", **values})


async def store_client_as_is(storage: Provider, uri: str, client_secret: str | None) -> None:
    values: dict[str, Any] = {**CLIENT.__dict__, "client_secret": client_secret}
    await storage.db.execute(insert(CLIENTS), {"server_id": "mcp", "redirect_uri": uri, **values})


def under_first_key_alone(stored: str) -> str:
    assert stored.startswith(PREFIX)
    return Fernet(NEW).decrypt(stored.removeprefix(PREFIX)).decode()


@pytest.fixture
async def sealed(fresh_url: str, provider_options: dict[str, Any]) -> Any:
    """A provider with `encryption_keys: [NEW, OLD]`, on every backend."""
    storage = Provider(url=fresh_url, encryption_keys=[NEW, OLD], **provider_options)
    await storage.initialize()
    try:
        yield storage
    finally:
        await storage.close()


async def test_secrets_round_trip_equal_and_are_not_stored_as_plaintext(sealed: Provider) -> None:
    await sealed.put_oauth_token("U1", "mcp", TOKEN)
    await sealed.put_oauth_client("mcp", "https://x/cb", CLIENT)
    await sealed.put_oauth_client("mcp", "https://x/public", PUBLIC_CLIENT)

    assert await sealed.get_oauth_token("U1", "mcp") == TOKEN
    assert await sealed.get_oauth_client("mcp", "https://x/cb") == CLIENT
    assert await sealed.get_oauth_client("mcp", "https://x/public") == PUBLIC_CLIENT

    token = (await stored_tokens(sealed))["U1"]
    assert ACCESS not in token
    assert under_first_key_alone(token) == ACCESS
    secrets = await stored_secrets(sealed)
    assert secrets["https://x/public"] is None  # no secret stays no secret
    assert SECRET not in (secrets["https://x/cb"] or "")
    assert under_first_key_alone(secrets["https://x/cb"] or "") == SECRET
    # The host seals the refresh token itself: stored as given.
    refresh = await sealed.db.execute(select(TOKENS.c.refresh_token_enc))
    assert refresh.scalar_one() == TOKEN.refresh_token_enc


async def test_a_put_again_keeps_the_first_created_at_and_reads_back(sealed: Provider) -> None:
    await sealed.put_oauth_token("U1", "mcp", TOKEN)
    newer = replace(TOKEN, access_token="at-2", created_at=1_800_000_000, updated_at=2)
    await sealed.put_oauth_token("U1", "mcp", newer)
    assert await sealed.get_oauth_token("U1", "mcp") == replace(newer, created_at=TOKEN.created_at)


async def test_rows_written_before_encryption_still_read(sealed: Provider) -> None:
    await store_token_as_is(sealed, "U-plain", ACCESS)
    await store_client_as_is(sealed, "https://x/plain", SECRET)
    assert await sealed.get_oauth_token("U-plain", "mcp") == TOKEN
    assert await sealed.get_oauth_client("mcp", "https://x/plain") == CLIENT


async def test_rotation_leaves_every_row_under_the_first_key_once(sealed: Provider) -> None:
    await store_token_as_is(sealed, "U-old", SecretBox([OLD]).seal(ACCESS))
    await sealed.put_oauth_token("U-new", "mcp", TOKEN)
    await store_token_as_is(sealed, "U-plain", ACCESS)
    await store_client_as_is(sealed, "https://x/old", SecretBox([OLD]).seal(SECRET))
    await store_client_as_is(sealed, "https://x/public", None)
    for user_id in ("U-old", "U-new", "U-plain"):
        assert await sealed.get_oauth_token(user_id, "mcp") == TOKEN
    assert await sealed.get_oauth_client("mcp", "https://x/old") == CLIENT
    new_row_before = (await stored_tokens(sealed))["U-new"]

    first = await rotate_keys(sealed.db, batch_size=2)  # three tokens: two batches

    tokens, clients = first.counts["agents_oauth_tokens"], first.counts["agents_oauth_clients"]
    assert (tokens.seen, tokens.resealed, tokens.current, tokens.failed) == (3, 2, 1, 0)
    assert (clients.seen, clients.resealed, clients.current, clients.failed) == (2, 1, 1, 0)
    after = await stored_tokens(sealed)
    assert {user_id: under_first_key_alone(value) for user_id, value in after.items()} == {
        "U-old": ACCESS,
        "U-new": ACCESS,
        "U-plain": ACCESS,
    }
    assert after["U-new"] == new_row_before  # already under the first key: not rewritten
    secrets = await stored_secrets(sealed)
    assert under_first_key_alone(secrets["https://x/old"] or "") == SECRET
    assert secrets["https://x/public"] is None

    second = await rotate_keys(sealed.db, batch_size=2)
    assert [(t.seen, t.resealed, t.current) for t in second.counts.values()] == [
        (3, 0, 3),
        (2, 0, 2),
    ]
    assert await stored_tokens(sealed) == after
    for user_id in ("U-old", "U-new", "U-plain"):
        assert await sealed.get_oauth_token(user_id, "mcp") == TOKEN


async def test_a_secret_no_key_opens_is_a_clear_error_without_the_secret(
    sealed: Provider,
) -> None:
    stranger = SecretBox([STRANGER]).seal(ACCESS)
    await store_token_as_is(sealed, "U1", stranger)
    await store_client_as_is(sealed, "https://x/cb", SecretBox([STRANGER]).seal(SECRET))

    with pytest.raises(DecryptionError) as token_error:
        await sealed.get_oauth_token("U1", "mcp")
    with pytest.raises(DecryptionError) as client_error:
        await sealed.get_oauth_client("mcp", "https://x/cb")
    for error, column in (
        (token_error.value, "agents_oauth_tokens.access_token"),
        (client_error.value, "agents_oauth_clients.client_secret"),
    ):
        message = str(error)
        assert error.column == column
        assert column in message
        assert "encryption_keys" in message
        for secret in (ACCESS, SECRET, stranger, stranger.removeprefix(PREFIX), NEW, OLD):
            assert secret not in message
        assert error.__cause__ is None and error.__suppress_context__

    # rotate-keys counts such rows and goes on with the others.
    await sealed.put_oauth_token("U2", "mcp", TOKEN)
    summary = await rotate_keys(sealed.db)
    assert summary.failed == 2
    assert summary.counts["agents_oauth_tokens"].current == 1
    assert (await stored_tokens(sealed))["U1"] == stranger  # left as it was


async def test_a_sealed_secret_without_the_option_is_a_clear_error(provider: Provider) -> None:
    sealed_value = SecretBox([NEW]).seal(ACCESS)
    await store_token_as_is(provider, "U1", sealed_value)
    with pytest.raises(DecryptionError, match="option `encryption_keys` is not set") as error:
        await provider.get_oauth_token("U1", "mcp")
    assert sealed_value not in str(error.value)
    assert ACCESS not in str(error.value)

    # Stored as given, a value with our prefix would later read as sealed: refused, unwritten.
    with pytest.raises(ValueError, match=r"row\.access_token starts with 'sa-enc:v1:'"):
        await provider.put_oauth_token("U2", "mcp", replace(TOKEN, access_token=sealed_value))
    assert await provider.get_oauth_token("U2", "mcp") is None
    with pytest.raises(ConfigError, match="needs option `encryption_keys`"):
        await rotate_keys(provider.db)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([NEW, "not-a-fernet-key"], "option 'encryption_keys': key 2 of 2 is not a Fernet key"),
        (["x" * 44], "option 'encryption_keys': key 1 of 1 is not a Fernet key"),
        ([], "option 'encryption_keys': must list at least one key"),
        (f" , {NEW[:-4]} ,", "option 'encryption_keys': key 1 of 1 is not a Fernet key"),
        ([NEW, 7], "option 'encryption_keys.1': Input should be a valid string"),
    ],
    ids=["second-malformed", "not-base64-of-32-bytes", "empty", "string-truncated", "not-a-str"],
)
def test_a_malformed_key_is_a_config_error_naming_its_position(keys: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        Provider(url="sqlite://", encryption_keys=keys)
    assert message in str(error.value)
    assert NEW not in str(error.value) and NEW[:-4] not in str(error.value)
    assert error.value.__cause__ is None


def test_keys_may_be_one_comma_separated_string_and_never_show() -> None:
    storage = Provider(url="sqlite://", encryption_keys=f"{NEW}, {OLD}")
    box = storage.settings.secrets
    assert box is not None
    assert box.open("c", SecretBox([OLD]).seal("x")) == "x"  # the second key opens
    assert under_first_key_alone(box.seal("y")) == "y"  # the first one seals
    for shown in (repr(storage.settings), str(storage.settings)):
        assert NEW not in shown and OLD not in shown


# --- slack-agents-sa rotate-keys ---


async def test_rotate_keys_command_re_encrypts_once(empty_url: str, tmp_path: Path) -> None:
    before = Provider(url=empty_url, encryption_keys=[OLD])
    await before.initialize()
    try:
        await before.put_oauth_token("U-old", "mcp", TOKEN)
        await store_token_as_is(before, "U-plain", ACCESS)
        await before.put_oauth_client("mcp", "https://x/cb", CLIENT)
    finally:
        await before.close()

    nothing = run_cli("--url", empty_url, "rotate-keys", env={KEYS_ENV_VAR: ""})
    assert nothing.returncode == cli.EXIT_USAGE
    assert KEYS_ENV_VAR in nothing.stderr

    malformed = run_cli("--url", empty_url, "rotate-keys", env={KEYS_ENV_VAR: f"{NEW},{OLD[:-2]}"})
    assert malformed.returncode == cli.EXIT_USAGE
    assert "key 2 of 2 is not a Fernet key" in malformed.stderr
    assert NEW not in malformed.stderr + malformed.stdout

    missing_old = run_cli(
        "--url", empty_url, "rotate-keys", "--no-progress", env={KEYS_ENV_VAR: NEW}
    )
    assert missing_old.returncode == cli.EXIT_FAILED
    assert "2 row(s) are encrypted under no key of encryption_keys" in missing_old.stderr
    # ... while the plaintext row was sealed all the same.
    assert missing_old.stdout.splitlines()[1].split() == ["agents_oauth_tokens", *"21001"]

    # Keys from the agent's config.yaml, placeholders filled as the host fills them.
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "config.yaml").write_text(
        "storage:\n  type: slack_agents_sa\n  url: '{DB}'\n"
        "  encryption_keys: ['{SA_KEY_NEW}', '{SA_KEY_OLD}']\n",
        encoding="utf-8",
    )
    env = {"DB": empty_url, "SA_KEY_NEW": NEW, "SA_KEY_OLD": OLD, KEYS_ENV_VAR: ""}
    first = run_cli("--config", str(agent), "rotate-keys", "--batch-size", "1", env=env)
    assert first.returncode == cli.EXIT_OK, first.stderr
    lines = first.stdout.splitlines()
    assert lines[1].split() == ["agents_oauth_tokens", *"21100"]
    assert lines[2].split() == ["agents_oauth_clients", *"11000"]
    for secret in (NEW, OLD, ACCESS, SECRET):
        assert secret not in first.stdout + first.stderr

    again = run_cli("--url", empty_url, "rotate-keys", env={KEYS_ENV_VAR: f"{NEW},{OLD}"})
    assert again.returncode == cli.EXIT_OK, again.stderr
    assert again.stdout.splitlines()[1].split() == ["agents_oauth_tokens", *"20200"]

    after = Provider(url=empty_url, encryption_keys=[NEW])  # the old key is no longer needed
    await after.initialize()
    try:
        assert await after.get_oauth_token("U-old", "mcp") == TOKEN
        assert await after.get_oauth_token("U-plain", "mcp") == TOKEN
        assert await after.get_oauth_client("mcp", "https://x/cb") == CLIENT
        assert all(
            under_first_key_alone(v) == ACCESS for v in (await stored_tokens(after)).values()
        )
    finally:
        await after.close()


def test_rotate_keys_exit_codes_for_an_unreachable_or_unmigrated_database(tmp_path: Path) -> None:
    env = {KEYS_ENV_VAR: NEW}
    unreachable = run_cli("--url", "postgresql://u:hunter2@127.0.0.1:9/db", "rotate-keys", env=env)
    assert unreachable.returncode == cli.EXIT_UNREACHABLE
    assert "hunter2" not in unreachable.stderr and NEW not in unreachable.stderr

    (tmp_path / "new.db").touch()  # a database with no tables (a missing file is unreachable)
    unmigrated = run_cli("--url", f"sqlite:///{tmp_path / 'new.db'}", "rotate-keys", env=env)
    assert unmigrated.returncode == cli.EXIT_FAILED
    assert "slack-agents-sa upgrade" in unmigrated.stderr


async def test_rotation_keeps_a_secret_an_agent_put_meanwhile(sealed: Provider) -> None:
    await store_token_as_is(sealed, "U1", ACCESS)
    newer = SecretBox([NEW]).seal("at-newer")

    # Just before rotate-keys writes, the agent puts a newer secret on the same row.
    def agent_writes_first(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE") and not raced:
            raced.append(True)
            conn.execute(update(TOKENS).values(access_token=newer))

    raced: list[bool] = []
    engine = sealed.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", agent_writes_first)
    try:
        summary = await rotate_keys(sealed.db)
    finally:
        event.remove(engine, "before_cursor_execute", agent_writes_first)

    assert raced
    tokens = summary.counts["agents_oauth_tokens"]
    assert (tokens.seen, tokens.resealed, tokens.changed) == (1, 0, 1)
    assert (await stored_tokens(sealed))["U1"] == newer
    assert await sealed.get_oauth_token("U1", "mcp") == replace(TOKEN, access_token="at-newer")


def test_without_cryptography_the_option_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)  # import fails as if absent
    with pytest.raises(ConfigError, match=r"pip install 'slack_agents_sa\[crypto\]'") as error:
        Provider(url="sqlite://", encryption_keys=[NEW])
    assert "option 'encryption_keys'" in str(error.value)
    assert Provider(url="sqlite://").settings.secrets is None  # not needed without the option
