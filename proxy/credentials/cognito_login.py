"""`authproxy login NAME` for a Cognito credential: sign in once interactively (a missing
username or password, NEW_PASSWORD_REQUIRED, SOFTWARE_TOKEN_MFA, SMS_MFA, EMAIL_OTP,
SELECT_MFA_TYPE) and save the refresh token to the token cache, where `serve` and `token` find
it, so that users whose pool asks for MFA never put a password in the config.

Without argv, print or exit: the CLI supplies the `prompt` callback.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt

from proxy.config import CognitoCredential
from proxy.credentials import token_store
from proxy.credentials.base import CredentialsUnavailable, LoginResult, Prompt
from proxy.credentials.cognito_api import Challenge, CognitoApi, CognitoError, advice

_CODE_KEYS = {"SOFTWARE_TOKEN_MFA": "SOFTWARE_TOKEN_MFA_CODE", "SMS_MFA": "SMS_MFA_CODE",
              "EMAIL_OTP": "EMAIL_OTP_CODE"}


@dataclass(frozen=True)
class CognitoLogin(LoginResult):
    credential: str
    username: str  # Cognito's internal username, as saved for refreshes
    method: str  # USER_SRP_AUTH or USER_PASSWORD_AUTH
    challenges: tuple[str, ...]  # answered on the way
    cache_file: Path

    def __str__(self) -> str:
        answered = f" (answered {', '.join(self.challenges)})" if self.challenges else ""
        return (f"signed in as {self.username} via {self.method}{answered}; refresh token saved "
                f"to {self.cache_file}; `authproxy serve` and `authproxy token "
                f"{self.credential}` now use it")


async def login(config: CognitoCredential, prompt: Prompt, http: aiohttp.ClientSession,
                cache_dir: Path) -> CognitoLogin:
    """Sign in interactively and save the refresh token. Raises CredentialsUnavailable."""
    name = config.name
    if config.flow == "client_credentials":
        raise CredentialsUnavailable(
            f"credential {name} uses flow client_credentials, which has no sign-in to save: "
            f"`authproxy token {name}` fetches a token directly")

    async def ask(kind: str, message: str, secret: bool) -> str:
        answer = prompt(kind, message, secret)
        text = await answer if inspect.isawaitable(answer) else answer
        if not text:
            raise CredentialsUnavailable(f"login {name}: no {kind.replace('_', ' ')} given")
        return str(text)

    username = config.username or await ask("username", f"Cognito username for {name}", False)
    typed = config.password is None
    password = (config.password.reveal() if config.password else
                await ask("password", f"Password for {username}", True))

    async def answer(ch: Challenge) -> dict[str, str]:
        p = ch.parameters
        if ch.name == "NEW_PASSWORD_REQUIRED":
            new = await ask("new_password", f"Cognito requires a new password for {username}",
                            True)
            if await ask("new_password", "Repeat the new password", True) != new:
                raise CredentialsUnavailable(f"login {name}: the new passwords do not match")
            answers = {"NEW_PASSWORD": new}
            for attr in json.loads(p.get("requiredAttributes") or "[]"):
                attr = attr.removeprefix("userAttributes.")
                answers[f"userAttributes.{attr}"] = await ask(
                    "attribute", f"Value for the required attribute {attr}", False)
            return answers
        if ch.name in _CODE_KEYS:
            where = p.get("CODE_DELIVERY_DESTINATION", "")
            message = {"SOFTWARE_TOKEN_MFA": "Code from your authenticator app",
                       "SMS_MFA": f"Code sent by SMS to {where}",
                       "EMAIL_OTP": f"Code sent by email to {where}"}[ch.name]
            return {_CODE_KEYS[ch.name]: (await ask("mfa_code", message, False)).strip()}
        if ch.name == "SELECT_MFA_TYPE":
            options = ", ".join(json.loads(p.get("MFAS_CAN_CHOOSE") or "[]"))
            return {"ANSWER": (await ask("mfa_choice", f"Second factor to use ({options})",
                                         False)).strip()}
        raise CognitoError("UnsupportedChallenge", f"{ch.name} cannot be answered here; "
                           "complete it in your app first (e.g. set up MFA)", transient=False)

    api = CognitoApi(http, config)
    try:
        # flow refresh_token signs in with SRP: the flow every Amplify-made client allows
        tokens = await api.sign_in(username, password, use_srp=config.flow != "password",
                                   answer=answer)
    except CognitoError as e:
        raise CredentialsUnavailable(f"login {name}: {_login_advice(e, config, typed)}"
                                     ) from None
    if not tokens.refresh_token:
        raise CredentialsUnavailable(f"login {name}: Cognito returned no refresh token")
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    internal = str(claims.get("username") or username)
    path = token_store.path_for(config, cache_dir)
    token_store.save(path, tokens.refresh_token, internal)
    return CognitoLogin(name, internal, tokens.method, tokens.challenges, path)


def _login_advice(e: CognitoError, config: CognitoCredential, typed: bool) -> str:
    if e.kind == "NotAuthorizedException" and typed and "password" in e.message.lower():
        return f"wrong username or password ({e.kind}: {e.message})"
    if e.kind == "CodeMismatchException":
        return f"the code was not accepted ({e.message}); run login again for a new one"
    if e.kind == "InvalidPasswordException":
        return f"the new password was refused ({e.message})"
    return advice(e, config)
