"""proxy/login.py against the fake Cognito, with scripted prompts; then `serve` (a CognitoSource
without a password) and `token` pick the saved login up."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest
from cognito_fixtures import (  # noqa: F401
    CognitoEnv,
    env_fixture,
    fake_fixture,
    header,
    http_fixture,
)

from proxy.config import StaticCredential
from proxy.credentials import CredentialsUnavailable, token_store
from proxy.login import login, token
from proxy.secret import Secret


class Script:
    """A prompt that answers from a list and records what it was asked."""

    def __init__(self, *answers: str, asynchronous: bool = False) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str, bool]] = []
        self.asynchronous = asynchronous

    def __call__(self, kind: str, message: str, secret: bool) -> object:
        self.asked.append((kind, message, secret))
        answer = self.answers.pop(0)
        if not self.asynchronous:
            return answer

        async def later() -> str:
            await asyncio.sleep(0)
            return answer
        return later()


async def test_login_answers_challenges_saves_the_refresh_token_and_serve_uses_it(
        env: CognitoEnv) -> None:
    fake = env.fake
    fake.add_user(env.pool, "dave", "Temp0rary!", challenge=["NEW_PASSWORD_REQUIRED",
                                                             "SOFTWARE_TOKEN_MFA"],
                  mfa_code="246810")
    config = env.cred(flow="srp", username="dave", password=None)
    script = Script("Temp0rary!", "N3w-Passw0rd!", "N3w-Passw0rd!", " 246810 ")
    result = await login(config, script, session=env.http, cache_dir=env.cache_dir)

    assert [(k, s) for k, _, s in script.asked] == [
        ("password", True), ("new_password", True), ("new_password", True), ("mfa_code", False)]
    assert "authenticator app" in script.asked[3][1]
    assert result.username == "dave" and result.method == "USER_SRP_AUTH"
    assert result.challenges == ("NEW_PASSWORD_REQUIRED", "SOFTWARE_TOKEN_MFA")
    assert "refresh token saved to" in str(result) and "N3w" not in str(result)

    path = result.cache_file
    assert path.parent == env.cache_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    saved = json.loads(path.read_text())
    assert saved["username"] == "dave" and saved["refresh_token"] in fake._refresh

    # serve: no password in the config, MFA on the user, and yet a token, by refresh only
    signins = fake.count("InitiateAuth", "USER_SRP_AUTH")
    source = await env.source(config)
    assert (await header(source)).startswith("Bearer eyJ")
    assert fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 1
    assert fake.count("InitiateAuth", "USER_SRP_AUTH") == signins
    # token: the same, in one call
    value = await token(config, session=env.http, cache_dir=env.cache_dir)
    assert value.startswith("Bearer eyJ")
    assert fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 2


@pytest.mark.parametrize(("challenge", "where"), [("SMS_MFA", "by SMS to +*******0100"),
                                                  ("EMAIL_OTP", "by email to a***@e***")])
async def test_code_challenges_with_an_async_prompt(env: CognitoEnv, challenge: str,
                                                    where: str) -> None:
    env.fake.add_user(env.pool, "erin", "Passw0rd!", challenge=challenge, mfa_code="1357")
    script = Script("1357", asynchronous=True)
    result = await login(env.cred(username="erin"), script, session=env.http,
                         cache_dir=env.cache_dir)
    assert script.asked == [("mfa_code", f"Code sent {where}", False)]
    assert result.method == "USER_PASSWORD_AUTH" and result.challenges == (challenge,)


async def test_prompts_for_a_missing_username_and_keys_the_cache_as_serve_does(
        env: CognitoEnv) -> None:
    config = env.cred(flow="refresh_token", username="", password=None)
    script = Script("alice", "Passw0rd!")
    result = await login(config, script, session=env.http, cache_dir=env.cache_dir)
    assert [k for k, _, _ in script.asked] == ["username", "password"]
    assert result.cache_file == token_store.path_for(config, env.cache_dir)
    source = await env.source(config)
    assert (await header(source)).startswith("Bearer ")


async def test_email_pool_with_secret_saves_the_internal_username(env: CognitoEnv) -> None:
    fake = env.fake
    pool = fake.add_pool(email_as_username=True)
    client = fake.add_client(pool, secret="s3cr3t")
    user = fake.add_user(pool, "zoe@example.com", "Passw0rd!")
    config = env.cred(user_pool_id=pool, client_id=client, client_secret=Secret("s3cr3t"),
                      username="zoe@example.com", password=None)
    result = await login(config, Script("Passw0rd!"), session=env.http, cache_dir=env.cache_dir)
    assert result.username == user.username != "zoe@example.com"
    value = await token(config, session=env.http, cache_dir=env.cache_dir)
    assert value.startswith("Bearer ")
    assert fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 1


async def test_wrong_password_and_wrong_code_fail_clearly_and_save_nothing(
        env: CognitoEnv) -> None:
    config = env.cred(password=None)
    with pytest.raises(CredentialsUnavailable, match="login user: wrong username or password"):
        await login(config, Script("nope"), session=env.http, cache_dir=env.cache_dir)
    env.fake.add_user(env.pool, "mfa", "Passw0rd!", challenge="SOFTWARE_TOKEN_MFA")
    with pytest.raises(CredentialsUnavailable, match="code was not accepted"):
        await login(env.cred(username="mfa"), Script("000000"), session=env.http,
                    cache_dir=env.cache_dir)
    with pytest.raises(CredentialsUnavailable, match="no password given"):
        await login(config, Script(""), session=env.http, cache_dir=env.cache_dir)
    env.fake.add_user(env.pool, "newbie", "Temp0rary!", challenge="NEW_PASSWORD_REQUIRED")
    with pytest.raises(CredentialsUnavailable, match="new passwords do not match"):
        await login(env.cred(username="newbie", password=Secret("Temp0rary!")),
                    Script("N3w-Passw0rd!", "N3w-Passw0rd?"), session=env.http,
                    cache_dir=env.cache_dir)
    assert not env.cache_dir.exists()


async def test_login_replaces_the_saved_token_atomically(env: CognitoEnv) -> None:
    config = env.cred()
    first = await login(config, Script(), session=env.http, cache_dir=env.cache_dir)
    before = json.loads(first.cache_file.read_text())["refresh_token"]
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        second = await login(config, Script(), session=env.http, cache_dir=env.cache_dir)
    finally:
        os.umask(old_umask)
    assert second.cache_file == first.cache_file
    assert json.loads(second.cache_file.read_text())["refresh_token"] != before
    assert stat.S_IMODE(second.cache_file.stat().st_mode) == 0o600
    assert len(list(env.cache_dir.iterdir())) == 1


async def test_default_cache_dir_follows_xdg(env: CognitoEnv,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(env.cache_dir / "xdg"))
    result = await login(env.cred(), Script(), session=env.http)
    assert result.cache_file.parent == env.cache_dir / "xdg" / "authproxy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(env.cache_dir / "home"))
    assert token_store.default_dir() == env.cache_dir / "home" / ".cache" / "authproxy"


async def test_token_for_each_kind_of_credential(env: CognitoEnv) -> None:
    static = StaticCredential(name="key", value=Secret("abc123"), header="x-api-key")
    assert await token(static) == "abc123"
    m2m = env.fake.add_client(env.pool, secret="m2m", scopes=["r/read"])
    machine = env.cred(flow="client_credentials", client_id=m2m, client_secret=Secret("m2m"),
                       domain=env.fake.url, token="access", prefix="")
    assert (await token(machine, session=env.http)).startswith("eyJ")
    with pytest.raises(CredentialsUnavailable, match="nothing to log in|no sign-in to save"):
        await login(machine, Script(), session=env.http, cache_dir=env.cache_dir)
    with pytest.raises(CredentialsUnavailable, match="wrong password for user alice"):
        await token(env.cred(password=Secret("bad")), session=env.http,
                    cache_dir=env.cache_dir)
    # without a session of its own caller's: token() opens and closes one
    assert (await token(env.cred(), cache_dir=env.cache_dir)).startswith("Bearer ")
