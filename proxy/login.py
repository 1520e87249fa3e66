"""The core of `authproxy login NAME` and `authproxy token NAME`, without argv, print or exit:
the CLI supplies a `prompt` callback and turns the result or `CredentialsUnavailable` into
output and an exit code. Both work for every strategy through its source: how one signs in
(Cognito: proxy/credentials/cognito_login.py) is the strategy's own business.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.config import Credential
from proxy.credentials import Outgoing, build_source
from proxy.credentials.aws_keys import AwsKeys
from proxy.credentials.base import CredentialSource, LoginResult, Prompt

if TYPE_CHECKING:
    import aiohttp

# `token` asks for the headers outside any request: a strategy that signs requests is given
# an empty GET of the root (its own `token` output is the credentials, not a signature).
_NO_REQUEST = Outgoing(method="GET", host="", raw_path="/", query="", headers=())


async def login(config: Credential, prompt: Prompt, *,
                session: aiohttp.ClientSession | None = None,
                cache_dir: Path | None = None, timeout: float | None = None) -> LoginResult:
    """Sign in interactively and save what `serve` needs. `timeout` bounds a sign-in in a
    browser (default five minutes). Raises CredentialsUnavailable."""
    source = build_source(config, cache_dir=cache_dir)
    if session is not None:
        return await source.login(prompt, session, cache_dir, timeout)
    import aiohttp  # a sign-in calls Cognito (the CLI asks only a credential that signs_in)

    async with aiohttp.ClientSession() as http:
        return await source.login(prompt, http, cache_dir, timeout)


async def token(config: Credential, *, session: aiohttp.ClientSession | None = None,
                cache_dir: Path | None = None) -> str:
    """The header value credential `config` would inject now (for `authproxy token`), from
    the saved login when there is one. Raises CredentialsUnavailable."""
    source = build_source(config, cache_dir=cache_dir)
    async with _session(session, [source]) as http:
        await source.start(http)
        try:
            headers = source.current() or await source.headers_for(_NO_REQUEST)
        finally:
            await source.close()
    low = source.header_name.lower()
    return next(v for k, v in headers if k.lower() == low)


async def aws_credentials(configs: Mapping[str, Credential], name: str, *,
                          session: aiohttp.ClientSession | None = None,
                          cache_dir: Path | None = None) -> tuple[AwsKeys, float | None]:
    """The AWS credentials credential `name` signs with (for `authproxy token --format`),
    started together with the credentials it builds on (an identity pool's `login`) and no
    others. Raises CredentialsUnavailable."""
    sources: dict[str, CredentialSource] = {}
    wanted = [name]
    while wanted:
        n = wanted.pop()
        if n not in sources:
            sources[n] = build_source(configs[n], cache_dir=cache_dir)
            wanted.extend(sources[n].depends_on())
    for source in sources.values():
        source.link(sources)
    async with _session(session, sources.values()) as http:
        await asyncio.gather(*(s.start(http) for s in sources.values()))
        try:
            return await sources[name].aws_credentials()
        finally:
            await asyncio.gather(*(s.close() for s in sources.values()))


@contextlib.asynccontextmanager
async def _session(given: aiohttp.ClientSession | None, sources: Iterable[CredentialSource]
                   ) -> AsyncIterator[aiohttp.ClientSession | None]:
    """The caller's session, else one of ours for as long as `sources` run, if one of them
    uses_http; else none, so that `authproxy token` for a static value, a command or fixed
    keys never imports aiohttp (~100 ms of a command often run in a shell's $(...))."""
    if given is not None or not any(s.uses_http for s in sources):
        yield given
        return
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session
