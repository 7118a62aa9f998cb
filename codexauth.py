"""Use the Codex CLI's ChatGPT login from Python, safely when many processes run at once.

The Codex CLI keeps its login in ``$CODEX_HOME/auth.json`` (default ``~/.codex``).
Its refresh tokens are single-use: two processes refreshing with the same one
kill the login.  This module refreshes at most once across any number of
processes sharing the file, never corrupts it, and reads a fresh token for the
price of one ``stat()``::

    import codexauth, requests
    token = codexauth.get_token()          # an API key, or a fresh access token
    requests.get(url, auth=codexauth.RequestsAuth())

How it works: the data path is one straight line, written once in
``CodexAuth._refresh`` over a small ``Store`` interface (``FileStore`` is
auth.json)::

    read ─ fresh? ─► token
      └ _decide ─ adopt / fail / wait (no lock, then read again)
          └ lock ─ read, settle the outbox ─ _decide ─ POST ─ outbox ─ commit ─ unlock

The new login is durable in this machine's outbox before anything else
happens, and the commit writes it only while the store still holds the refresh
token it replaces.  The sections follow the data: constants, errors, the data
model, pure parsing, the stores (the decision, the outbox), auth.json on disk,
the refresh lock, the refresh client, the protocol (``CodexAuth``), the public
functions, the requests/httpx adapters; then the optional stores (the
config.toml choice, the keyring, Redis, push/pull), which a vendorer who needs
only auth.json can skip; and the command line.

Dependencies (``requests``, ``platformdirs``; ``portalocker`` off POSIX) are imported only
when a refresh, a lock or an adapter needs them.
"""

from __future__ import annotations

import _thread
import binascii
import contextlib
import enum
import errno
import json
import os
import sys
import time
import types

# Not `from typing import TYPE_CHECKING`: importing typing costs start-up time.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import AsyncGenerator, Callable, Generator, Mapping
    from datetime import datetime
    from typing import IO, Any, Union

    import httpx
    import requests

    StrPath = Union[str, "os.PathLike[str]"]

__version__ = "0.1.0"

__all__ = [
    "CLIENT_ID",
    "CLIENT_ID_OVERRIDE_ENV_VAR",
    "REFRESH_TOKEN_URL",
    "REFRESH_TOKEN_URL_OVERRIDE_ENV_VAR",
    "REVOKE_TOKEN_URL",
    "REVOKE_TOKEN_URL_OVERRIDE_ENV_VAR",
    "AuthDotJson",
    "AuthFileError",
    "AuthMode",
    "CodexAuth",
    "CodexAuthError",
    "FileStore",
    "HttpxAuth",
    "IdTokenInfo",
    "KeyringStore",
    "LockTimeoutError",
    "NotLoggedInError",
    "PermanentRefreshError",
    "RedisStore",
    "RefreshTokenError",
    "RefreshTokenFailedReason",
    "RequestsAuth",
    "Store",
    "StoreUnreachableError",
    "TokenData",
    "TransientRefreshError",
    "UnsupportedAuthModeError",
    "codex_keyring_account",
    "find_codex_home",
    "get_token",
    "load_auth_dot_json",
    "login_with_api_key",
    "logout",
    "main",
    "parse_id_token",
    "save_auth",
]


# Constants ###################################################################

# The Codex CLI's own endpoint, client id and override variable, so that we
# refresh exactly as it does and its tests' tricks work on us too.
REFRESH_TOKEN_URL = "https://auth.openai.com/oauth/token"
REFRESH_TOKEN_URL_OVERRIDE_ENV_VAR = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"
CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
CLIENT_ID_OVERRIDE_ENV_VAR = "CODEX_APP_SERVER_LOGIN_CLIENT_ID"
# `logout` revokes the token first, as `codex logout` does
# (codex-rs/login/src/auth/revoke.rs, constants in manager.rs).
REVOKE_TOKEN_URL = "https://auth.openai.com/oauth/revoke"
REVOKE_TOKEN_URL_OVERRIDE_ENV_VAR = "CODEX_REVOKE_TOKEN_URL_OVERRIDE"

AUTH_FILE_NAME = "auth.json"
# The lock is a sidecar: locking auth.json itself would be mandatory on
# Windows and break the Codex CLI's reads.
LOCK_FILE_NAME = "auth.lock"
# Failure memory shared between processes; never stored inside auth.json.
STATE_FILE_NAME = "codexauth-state.json"
# What this machine last pulled from, or pushed to, a shared store (see push).
FLEET_FILE_NAME = "codexauth-fleet.json"
# A refreshed login on its way into the store (see _Outbox): the spent refresh
# token's successor is on disk here from the moment its answer arrives.
OUTBOX_FILE_NAME = "codexauth-outbox.json"

# Refresh when the access token expires within this window, so that a request
# started now does not meet an expired token mid-flight.
REFRESH_WINDOW = 5 * 60.0
# Tokens without a readable `exp` are refreshed after this long, as Codex does.
REFRESH_INTERVAL = 8 * 24 * 3600.0

# Inside the refresh window, a token with more than this left is handed out at
# once when a peer holds the refresh lock, rather than waiting for its result.
NO_WAIT_MARGIN = 60.0

# Seconds for the whole refresh request (connect + answer), and for waiting on
# a peer's refresh; the wait must outlast one peer's request.
DEFAULT_TIMEOUT = 30.0
DEFAULT_LOCK_TIMEOUT = 60.0
# A revoke gets at most this long, as Codex's REVOKE_HTTP_TIMEOUT: logging out
# must not hang on a slow endpoint.
REVOKE_TIMEOUT = 10.0

# After a transient failure nobody retries the same refresh token for this
# long: a failing endpoint must not be hit once per waiting process.
TRANSIENT_BACKOFF = 5.0
# After `refresh_token_reused`, how long a spent token's successor may still
# land, written by whoever spent it: a peer that takes no lock (the Codex CLI)
# POSTs first and writes after its answer, however slow its link.  Until then
# "reused" is transient (exit 5); a read of the store after it that still finds
# the spent token makes it "sign in again" (exit 4).  Measured with the Codex
# CLI 0.171 beside codexauth: 34 ms median, 89 ms worst from our reused answer
# to its write on loopback; the margin is for a slow link or a busy machine
# (an answer 3.5 s late is tested).  A peer stopped longer than this is missed.
REUSE_WINDOW = 10.0
# Which store holds the login, and which login in it; see _store_for.
STORE_ENV_VAR = "CODEXAUTH_STORE"
NAMESPACE_ENV_VAR = "CODEXAUTH_NAMESPACE"
DEFAULT_NAMESPACE = "default"
# The fleet lock (Redis) has a TTL: this long while its holder reads and decides
# (a holder that dies there blocks the fleet no longer), then the request's
# timeout plus this margin from the POST on, for the commit after the answer.
REDIS_LOCK_IDLE_TTL = 5.0
REDIS_LOCK_MARGIN = 2.0
# A holder paused past its lock's TTL mid-request still commits unopposed for
# this long: peers wait for its answer rather than spend the same token.
REDIS_FLIGHT_GRACE = 2.0
# Waiters on a Redis store are woken by a message when the login changes; without
# one (lost, or an ACL without pub/sub) they look again this often.
REDIS_WAKE_POLL = 0.1
# One Redis command never needs longer than this (capped by the refresh timeout).
REDIS_IO_TIMEOUT = 5.0
# A request announced to peers (a store whose lock can lapse mid-request does)
# is waited for at most this long, whatever its announcement says.
MAX_REQUEST_WAIT = 600.0
# A local clock off by more than this from the token issuer's (measured from a
# new token's `iat`) is corrected for in the refresh rule: a clock hours ahead
# would otherwise find every new token expired and refresh on every call.
CLOCK_SKEW_TOLERANCE = 60.0

# The Codex CLI rewrites auth.json by truncate-then-write; a reader that finds
# half a file retries for this long before calling it corrupt.
TORN_READ_WINDOW = 0.05
# A stat() result is trusted to stand for unchanged content only once the
# file's ctime is older than this: timestamps tick coarsely, and two writes in
# one tick would otherwise look alike.
RACY_STAT_WINDOW = 1.0

# Waits for a peer poll this finely (portalocker's default is 0.25 s), so that
# waiters wake together once a peer's refresh lands.
LOCK_POLL_MIN = 0.001
LOCK_POLL_MAX = 0.01
# A wait for a refresh lock held in this machine's kernel is woken by its release
# (_ReleaseWatch); it looks anyway this often, for what the kernel cannot tell.
LOCK_WAKE_POLL = 0.1

# Caps on what we read: auth.json is ~4 KiB, a token response smaller still.
MAX_AUTH_FILE_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 1 << 20


# Errors ######################################################################


class CodexAuthError(Exception):
    """Base class for every error this module raises."""


class NotLoggedInError(CodexAuthError):
    """There is no login to use: run ``codex login``."""


class AuthFileError(CodexAuthError):
    """auth.json (or a sidecar) cannot be read, parsed or written; names the path."""

    def __init__(self, path: StrPath, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling into a worker pool's parent
        return (type(self), (self.path, self.problem))


class RefreshTokenFailedReason(enum.Enum):
    """Why a refresh failed for good, as the Codex CLI names it."""

    EXPIRED = "refresh_token_expired"
    EXHAUSTED = "refresh_token_reused"
    REVOKED = "refresh_token_invalidated"
    OTHER = "other"


class RefreshTokenError(CodexAuthError):
    """A refresh failed; see the two subclasses."""

    def failed_reason(self) -> RefreshTokenFailedReason | None:
        """The permanent reason, or None for a transient failure."""
        return None


class PermanentRefreshError(RefreshTokenError):
    """The login is dead: retrying cannot help, the user must sign in again."""

    def __init__(self, reason: RefreshTokenFailedReason, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or PERMANENT_MESSAGES[reason])

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling into a worker pool's parent
        return (type(self), (self.reason, str(self)))

    def failed_reason(self) -> RefreshTokenFailedReason | None:
        return self.reason


class TransientRefreshError(RefreshTokenError):
    """The refresh did not happen this time; safe to try again later."""


class LockTimeoutError(TransientRefreshError):
    """Gave up waiting for another process's refresh to finish."""


class StoreUnreachableError(TransientRefreshError):
    """The store that holds the login (Redis) did not answer; safe to try again."""


class UnsupportedAuthModeError(CodexAuthError):
    """auth.json holds a kind of login (its `auth_mode`) that codexauth cannot serve."""

    def __init__(self, path: StrPath, auth_mode: str) -> None:
        self.path = os.fspath(path)
        self.auth_mode = auth_mode
        super().__init__(
            f"{self.path}: auth_mode {auth_mode!r} is a login codexauth cannot use "
            "(it serves 'apikey' and 'chatgpt'); use the Codex CLI with it"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling into a worker pool's parent
        return (type(self), (self.path, self.auth_mode))


# How every transient failure's message begins, as Codex's do.
REFRESH_FAILED = "Failed to refresh token:"
# Codex's exact words, so users can search for them.
PERMANENT_MESSAGES = {
    RefreshTokenFailedReason.EXPIRED: (
        "Your access token could not be refreshed because your refresh token has expired. "
        "Please log out and sign in again."
    ),
    RefreshTokenFailedReason.EXHAUSTED: (
        "Your access token could not be refreshed because your refresh token was already "
        "used. Please log out and sign in again."
    ),
    RefreshTokenFailedReason.REVOKED: (
        "Your access token could not be refreshed because your refresh token was revoked. "
        "Please log out and sign in again."
    ),
    RefreshTokenFailedReason.OTHER: (
        "Your access token could not be refreshed. Please log out and sign in again."
    ),
}
# Codex's guarded reload finds another login where it expected its own
# (codex-rs/login/src/auth/manager.rs): neither refresh nor adopt.
ACCOUNT_CHANGED_MESSAGE = (
    "Your access token could not be refreshed because you have since logged out or signed in "
    "to another account. Please sign in again."
)


# Data model ##################################################################
# Plain classes with value semantics rather than @dataclass: importing
# dataclasses costs more than half of a warm `codexauth token` run.


class AuthMode(enum.Enum):
    """How auth.json authenticates: an API key, or a ChatGPT login."""

    API_KEY = "apikey"
    CHATGPT = "chatgpt"


class _Record:
    """Equality and a repr that never shows the fields named in `_secret`."""

    __slots__: tuple[str, ...] = ()
    _fields: tuple[str, ...] = ()  # when they are not the slots
    _secret: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields or self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable value objects are unhashable

    def __repr__(self) -> str:
        fields = []
        for name, value in zip(self._fields or self.__slots__, self._values()):
            shown = "<redacted>" if name in self._secret and value else repr(value)
            fields.append(f"{name}={shown}")
        return f"{type(self).__name__}({', '.join(fields)})"


class IdTokenInfo(_Record):
    """Claims read from the id_token; `raw_jwt` is what auth.json stores."""

    __slots__ = ("email", "chatgpt_plan_type", "chatgpt_user_id", "chatgpt_account_id", "raw_jwt")
    _secret = ("raw_jwt",)

    def __init__(
        self,
        raw_jwt: str = "",
        email: str | None = None,
        chatgpt_plan_type: str | None = None,
        chatgpt_user_id: str | None = None,
        chatgpt_account_id: str | None = None,
    ) -> None:
        self.raw_jwt = raw_jwt
        self.email = email
        self.chatgpt_plan_type = chatgpt_plan_type
        self.chatgpt_user_id = chatgpt_user_id
        self.chatgpt_account_id = chatgpt_account_id


class TokenData(_Record):
    """The `tokens` object of auth.json; `extra` keeps keys we do not know."""

    __slots__ = ("id_token", "access_token", "refresh_token", "account_id", "extra")
    _secret = ("access_token", "refresh_token", "extra")

    def __init__(
        self,
        id_token: IdTokenInfo,
        access_token: str,
        refresh_token: str,
        account_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.id_token = id_token
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.account_id = account_id
        self.extra = {} if extra is None else extra


class AuthDotJson(_Record):
    """The whole of auth.json; `extra` keeps top-level keys we do not know."""

    __slots__ = ("openai_api_key", "tokens", "_last_refresh", "extra")
    _fields = ("openai_api_key", "tokens", "last_refresh", "extra")
    _secret = ("openai_api_key", "extra")

    def __init__(
        self,
        openai_api_key: str | None = None,
        tokens: TokenData | None = None,
        last_refresh: datetime | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.openai_api_key = openai_api_key
        self.tokens = tokens
        # A datetime, or microseconds since the epoch as parsed, made one when asked.
        self._last_refresh: datetime | int | None = last_refresh
        self.extra = {} if extra is None else extra

    @property
    def last_refresh(self) -> datetime | None:
        """When the tokens were last refreshed, as an aware datetime."""
        if isinstance(self._last_refresh, int):
            self._last_refresh = _moment(self._last_refresh)
        return self._last_refresh

    @last_refresh.setter
    def last_refresh(self, value: datetime | None) -> None:
        self._last_refresh = value

    def _refreshed_at(self) -> float | None:
        """`last_refresh` in seconds since the epoch, without importing datetime."""
        value = self._last_refresh
        if value is None or isinstance(value, int):
            return None if value is None else value / _US
        return value.timestamp()

    @property
    def mode(self) -> AuthMode | None:
        """The login's kind, None when logged out; see _auth_mode for the rule."""
        return _auth_mode(self.openai_api_key, self.tokens, self.extra.get("auth_mode"))


def _auth_mode(api_key: str | None, tokens: TokenData | None, declared: object) -> AuthMode | None:
    """The mode rule, in one place.

    A written `auth_mode` decides, as in newer Codex; a mode we cannot serve
    raises rather than being guessed at.  Without one, a key means API-key mode.
    """
    if declared is None:
        if api_key is not None:
            return AuthMode.API_KEY
        return AuthMode.CHATGPT if tokens is not None else None
    if declared == AuthMode.API_KEY.value:
        return AuthMode.API_KEY if api_key is not None else None
    if declared == AuthMode.CHATGPT.value:
        return AuthMode.CHATGPT if tokens is not None else None
    raise UnsupportedAuthModeError(AUTH_FILE_NAME, str(declared))


# Parsing #####################################################################
# Pure functions: bytes and numbers in, values or one exception out.


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64url_decode(segment: str) -> bytes:
    # binascii, not base64: base64 costs the warm path an import (struct) for nothing.
    padded = (segment + "=" * (-len(segment) % 4)).encode("ascii")  # else a ValueError
    return binascii.a2b_base64(padded.translate(_FROM_URLSAFE))


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified; None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, RecursionError):  # binascii.Error is a ValueError
        return None
    return claims if isinstance(claims, dict) else None


# 0001-01-01T00:00:00Z, the earliest moment a datetime can hold.
_EARLIEST_EXP = -62135596800.0


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim in seconds since the epoch, or None."""
    exp = (_jwt_claims(token) or {}).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    # NaN and values past year 5000 are no expiry we can act on.
    if exp != exp or exp >= 1e11:
        return None
    # An `exp` before year 1 is as expired as any past date (chrono, which Codex
    # uses, can hold it); clamped, so that datetime can show it.
    return float(max(exp, _EARLIEST_EXP))


def _str_claim(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


def parse_id_token(raw_jwt: str) -> IdTokenInfo:
    """Read email, plan and ids from an id_token; never fails (unknown stays None)."""
    claims = _jwt_claims(raw_jwt) or {}
    auth = claims.get("https://api.openai.com/auth")
    auth = auth if isinstance(auth, dict) else {}
    return IdTokenInfo(
        raw_jwt=raw_jwt,
        email=_str_claim(claims, "email"),
        chatgpt_plan_type=_str_claim(auth, "chatgpt_plan_type"),
        chatgpt_user_id=_str_claim(auth, "chatgpt_user_id") or _str_claim(auth, "user_id"),
        chatgpt_account_id=_str_claim(auth, "chatgpt_account_id"),
    )


# Timestamps are microseconds since the epoch until something needs a datetime:
# importing datetime costs a warm `codexauth token` a millisecond it does not need.
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_US = 1_000_000
# datetime's range, 0001-01-01 to 9999-12-31, in microseconds since the epoch.
_EARLIEST_US = int(_EARLIEST_EXP) * _US
_LATEST_US = 253402300800 * _US - 1


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _digits(text: str, start: int, end: int) -> int:
    part = text[start:end]
    if not (part.isascii() and part.isdigit()):
        raise ValueError("not an RFC 3339 timestamp")
    return int(part)


def _parse_rfc3339(text: str) -> int:
    """An RFC 3339 timestamp with 0-9 fractional digits and any offset, in microseconds
    since the epoch; ValueError for anything else, or outside datetime's years 1-9999."""
    if (
        len(text) < 20
        or text[10] not in "Tt "
        or text[4] + text[7] + text[13] + text[16] != "--::"
    ):
        raise ValueError("not an RFC 3339 timestamp")
    year, month, day = _digits(text, 0, 4), _digits(text, 5, 7), _digits(text, 8, 10)
    hour, minute, second = _digits(text, 11, 13), _digits(text, 14, 16), _digits(text, 17, 19)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days_in_month = 29 if month == 2 and leap else _DAYS_IN_MONTH[(month - 1) % 12]
    if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= days_in_month):
        raise ValueError("no such date")
    if hour > 23 or minute > 59 or second > 59:  # no leap seconds, as datetime
        raise ValueError("no such time")
    rest, micros = text[19:], 0
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789")) - 1
        if not 1 <= digits <= 9:
            raise ValueError("bad fractional seconds")
        micros = int(f"{rest[1 : 1 + digits]:0<6}"[:6])  # nanoseconds are truncated
        rest = rest[1 + digits :]
    if rest in ("Z", "z"):
        offset = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        hours, minutes = _digits(rest, 1, 3), _digits(rest, 4, 6)
        if hours > 23 or minutes > 59:
            raise ValueError("bad UTC offset")
        offset = (hours * 60 + minutes) * (-60 if rest[0] == "-" else 60)
    else:
        raise ValueError("missing or bad UTC offset")
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    moment = (seconds - offset) * _US + micros
    if not _EARLIEST_US <= moment <= _LATEST_US:
        raise ValueError("outside years 1-9999")
    return moment


def _moment(micros: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime."""
    from datetime import datetime, timedelta, timezone

    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)


def _format_rfc3339(moment: datetime) -> str:
    """UTC with microseconds and a `Z`, the form Codex writes."""
    from datetime import timezone

    # isoformat, not strftime: glibc's %Y does not zero-pad years before 1000.
    utc = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _expect_str(value: object, field: str, *, nullable: bool) -> str | None:
    if isinstance(value, str) or (nullable and value is None):
        return value
    wanted = "a string or null" if nullable else "a string"
    raise ValueError(f"{field} must be {wanted}, not {type(value).__name__}")


def _expect_token_chars(value: str, field: str) -> None:
    """A token goes after `Bearer ` in a header: printable ASCII without spaces, or nothing."""
    if not (value.isascii() and value.isprintable()) or " " in value:  # C speed: read often
        raise ValueError(f"{field} must be printable ASCII without spaces")


def _required_str(raw: Mapping[str, Any], key: str, where: str) -> str:
    if key not in raw:
        raise ValueError(f"{where}.{key} is missing")
    return _expect_str(raw[key], f"{where}.{key}", nullable=False) or ""


def _parse_tokens(raw: object) -> TokenData:
    if not isinstance(raw, dict):
        raise ValueError(f"tokens must be an object, not {type(raw).__name__}")
    known = ("id_token", "access_token", "refresh_token")
    id_tok, access, refresh = (_required_str(raw, key, "tokens") for key in known)
    _expect_token_chars(access, "tokens.access_token")
    _expect_token_chars(refresh, "tokens.refresh_token")
    return TokenData(
        id_token=parse_id_token(id_tok),
        access_token=access,
        refresh_token=refresh,
        account_id=_expect_str(raw.get("account_id"), "tokens.account_id", nullable=True),
        extra={k: v for k, v in raw.items() if k not in (*known, "account_id")},
    )


def _auth_from_json(data: Any) -> AuthDotJson:
    """Build the model from parsed JSON; ValueError names the wrong field."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    api_key = _expect_str(data.get("OPENAI_API_KEY"), "OPENAI_API_KEY", nullable=True)
    _expect_token_chars(api_key or "", "OPENAI_API_KEY")
    raw_tokens = data.get("tokens")
    tokens = None if raw_tokens is None else _parse_tokens(raw_tokens)
    raw_refresh = _expect_str(data.get("last_refresh"), "last_refresh", nullable=True)
    try:
        last_refresh = None if raw_refresh is None else _parse_rfc3339(raw_refresh)
    except ValueError:
        raise ValueError("last_refresh is not an RFC 3339 timestamp") from None
    extra = {
        k: v for k, v in data.items() if k not in ("OPENAI_API_KEY", "tokens", "last_refresh")
    }
    auth = AuthDotJson(api_key, tokens, None, extra)
    auth._last_refresh = last_refresh
    return auth


class _TornReadError(ValueError):
    """The bytes may be a half-written file: worth reading again."""


def _parse_auth_bytes(data: bytes) -> AuthDotJson:
    """Parse auth.json's bytes; ValueError says what is wrong in one line."""
    if len(data) > MAX_AUTH_FILE_BYTES:
        raise ValueError(f"larger than {MAX_AUTH_FILE_BYTES} bytes; not an auth.json")
    if not data.strip():
        raise _TornReadError("file is empty")
    try:
        parsed = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _TornReadError(f"not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    return _auth_from_json(parsed)


def _auth_to_json(auth: AuthDotJson) -> dict[str, Any]:
    """Codex's own layout: OPENAI_API_KEY always, tokens and last_refresh when set."""
    data: dict[str, Any] = {"OPENAI_API_KEY": auth.openai_api_key}
    if auth.tokens is not None:
        t = auth.tokens
        data["tokens"] = {
            "id_token": t.id_token.raw_jwt,
            "access_token": t.access_token,
            "refresh_token": t.refresh_token,
            "account_id": t.account_id,
            **t.extra,
        }
    if auth.last_refresh is not None:
        data["last_refresh"] = _format_rfc3339(auth.last_refresh)
    data.update(auth.extra)
    return data


def _serialize_auth(auth: AuthDotJson) -> bytes:
    return json.dumps(_auth_to_json(auth), indent=2).encode("utf-8")


class _Freshness(enum.Enum):
    """Where an access token stands against the refresh rule (botocore's two windows)."""

    FRESH = "fresh"  # use it
    ADVISORY = "advisory"  # in the refresh window with time to spare: refresh, don't queue
    MANDATORY = "mandatory"  # about to expire: refresh, waiting for a peer's if need be
    EXPIRED = "expired"  # past `exp`: must refresh
    OVERDUE = "overdue"  # no `exp`, last refresh over 8 days ago: must refresh

    @property
    def still_valid(self) -> bool:
        """Whether the token works now (a failed refresh can fall back on it)."""
        return self in (_Freshness.FRESH, _Freshness.ADVISORY, _Freshness.MANDATORY)


def _freshness(access_exp: float | None, last_refresh: float | None, now: float) -> _Freshness:
    """The staleness rule, in one place."""
    if access_exp is not None:
        left = access_exp - now
        if left <= 0:
            return _Freshness.EXPIRED
        if left > REFRESH_WINDOW:
            return _Freshness.FRESH
        return _Freshness.ADVISORY if left > NO_WAIT_MARGIN else _Freshness.MANDATORY
    if last_refresh is not None and now - last_refresh >= REFRESH_INTERVAL:
        return _Freshness.OVERDUE
    return _Freshness.FRESH


def _refresh_error_code(body: bytes) -> str | None:
    """`error.code`, else `error` as a string, else top-level `code`; lowercased."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"]).lower()
    if isinstance(error, str):
        return error.lower()
    code = data.get("code")
    return code.lower() if isinstance(code, str) else None


def _classify_refresh_failure(status: int, body: bytes) -> RefreshTokenError:
    """The error a non-2xx token response means: permanent on 401, a known code, or a 400
    `invalid_grant`."""
    code = _refresh_error_code(body)
    known = {reason.value: reason for reason in RefreshTokenFailedReason}
    if code in known and code != RefreshTokenFailedReason.OTHER.value:
        return PermanentRefreshError(known[code])
    # OAuth's "this refresh token is no good" (RFC 6749 section 5.2).  The Codex 0.171 CLI
    # treats a 400 invalid_grant as permanent with its generic message, and a 500 with the
    # same code as transient (observed: its released binary against a loopback endpoint;
    # manager.rs on GitHub predates this).
    if status == 401 or (status == 400 and code == "invalid_grant"):
        return PermanentRefreshError(RefreshTokenFailedReason.OTHER)
    detail = f" ({code})" if code else ""
    return TransientRefreshError(f"{REFRESH_FAILED} HTTP {status}{detail}")


def _parse_token_response(body: bytes) -> dict[str, str]:
    """The fields of a 2xx token response; each is optional but must be a string."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise TransientRefreshError(f"{REFRESH_FAILED} the response is not a JSON object")
    fields = {}
    for key in ("id_token", "access_token", "refresh_token"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise TransientRefreshError(f"{REFRESH_FAILED} bad {key} in the response")
        fields[key] = value
    return fields


def _fingerprint(secret: str) -> str:
    """A short one-way digest, to tell tokens apart without showing them."""
    import hashlib  # deferred: loading OpenSSL is slow and only refresh paths need it

    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1); never a name that merely looks so."""
    import ipaddress  # deferred: only requests need it

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_refresh_url(url: str, what: str = "refresh") -> None:
    """Only https, or plain http to this machine (for tests), may receive a token."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is not None and parts.scheme == "https" and host:
        return
    if parts is not None and parts.scheme == "http" and _is_loopback_host(host):
        return
    raise CodexAuthError(
        f"refusing {what} URL {url!r}: it must be https, or http to a loopback address"
    )


# Stores ######################################################################
# A store holds one login; the protocol over it (CodexAuth._refresh) is written
# once.  Three primitives carry the promise, whatever the store:
#   - read_with_state(): the login and what peers told each other, in one read;
#   - commit(spent, account, new): write `new` only while the store still holds
#     the refresh token `spent` for that account (keyed on the token, never a
#     version, as Codex guards its own write);
#   - the outbox (_Outbox): a spent token's successor, durable on this machine
#     from the moment its answer arrives until the store holds it.
# What the lock holder then does is one pure function of that read (_decide).


_DEBUG, _WARNING = 10, 30


def _log(level: int, msg: str, *args: object) -> None:
    """Log to the "codexauth" logger without importing logging on the warm path.

    Until something imports logging, no handler can exist to hear debug lines;
    warnings (level >= 30) import it, so the last-resort handler shows them.
    """
    if level >= 30 or "logging" in sys.modules:
        import logging

        logging.getLogger("codexauth").log(level, msg, *args)


class _Snapshot:
    """The login as a store last read it, and what the warm path needs of it.

    `replaces` is set on a login that is not in the store yet (an outbox's):
    the fingerprint of the refresh token the store still holds in its place.
    """

    __slots__ = ("auth", "version", "trusted", "access_exp", "last_refresh", "replaces")

    def __init__(
        self,
        auth: AuthDotJson,
        version: object = None,
        trusted: bool = False,
        replaces: str | None = None,
    ) -> None:
        self.auth = auth
        self.version = version  # the store's own: a stat() key for a file
        self.trusted = trusted  # the version alone tells whether it is still current
        self.replaces = replaces
        tokens = auth.tokens
        self.access_exp = None if tokens is None else _jwt_expiry(tokens.access_token)
        self.last_refresh = auth._refreshed_at()


def _chatgpt_tokens(snapshot: _Snapshot | None) -> TokenData | None:
    """The tokens of a ChatGPT login; None for none, an API key, or a mode we cannot serve."""
    if snapshot is None or snapshot.auth.tokens is None:
        return None
    try:
        mode = snapshot.auth.mode
    except UnsupportedAuthModeError:
        return None
    return snapshot.auth.tokens if mode is AuthMode.CHATGPT else None


def _holds(snapshot: _Snapshot | None, spent: str, account: str | None) -> bool:
    """Whether a login still holds the refresh token fingerprinted `spent`, for `account`."""
    tokens = _chatgpt_tokens(snapshot)
    return (
        tokens is not None
        and account is not None
        and _account(tokens) == account
        and _fingerprint(tokens.refresh_token) == spent
    )


class _SharedState:
    """What processes sharing a login tell each other about one refresh token; never a token.

    It is trusted only while the store still holds that token (see _decide).
    Times are epoch seconds, but a wait read from it is honoured only up to
    its full length: a writer whose clock runs ahead must not block the rest.
    `clock_skew` is this machine's alone and lives in its own state file.
    """

    __slots__ = ("fingerprint", "reason", "retry_after", "peer_until", "sent_until", "clock_skew")

    def __init__(
        self,
        fingerprint: str = "",
        reason: RefreshTokenFailedReason | None = None,
        retry_after: float = 0.0,
        peer_until: float = 0.0,
        sent_until: float = 0.0,
        clock_skew: float = 0.0,
    ) -> None:
        self.fingerprint = fingerprint  # of the refresh token the rest is about
        self.reason = reason  # it failed for good
        self.retry_after = retry_after  # it failed for now: nobody retries before this
        self.peer_until = (
            peer_until  # it was answered "reused": a peer's write may land until this
        )
        self.sent_until = sent_until  # it is being refreshed: the answer may land until this
        self.clock_skew = clock_skew  # local clock minus the issuer's, when off by much

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "refresh_token_sha256": self.fingerprint,
                "reason": None if self.reason is None else self.reason.name,
                "retry_after": self.retry_after,
                "peer_until": self.peer_until,
                "sent_until": self.sent_until,
                "clock_skew": self.clock_skew,
            }
        ).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | None) -> _SharedState:
        """Parse the state; anything unreadable counts as nothing known."""
        try:
            raw = json.loads(data or b"")
            reason = raw.get("reason")
            keys = ("retry_after", "peer_until", "sent_until", "clock_skew")
            numbers = [raw.get(k, 0.0) for k in keys]
            numbers = [float(x) if _finite(x) else 0.0 for x in numbers]
            return cls(
                str(raw.get("refresh_token_sha256", "")),
                None if reason is None else RefreshTokenFailedReason[reason],
                *numbers,
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return cls()


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e12


def _remaining(until: float, now: float, longest: float) -> float:
    """Time left until `until`, trusted only within (0, longest]: clocks differ."""
    left = until - now
    return left if 0.0 < left <= longest else 0.0


class _Action(enum.Enum):
    """What the protocol does next, from one read of the login and its shared state."""

    ADOPT = "adopt"  # a peer refreshed since our snapshot: use its tokens
    POST = "post"  # refresh with the stored refresh token (under the lock)
    WAIT = "wait"  # a peer's answer may still land: wait holding no lock, then read again
    FAIL = "fail"  # a peer's attempt with the stored token failed, and that still holds
    DEAD = "dead"  # spent by a peer whose result never landed: sign in again
    OTHER = "other"  # another login, or none: not ours to refresh or adopt


def _decide(
    start: TokenData,
    current: TokenData | None,
    usable: bool,
    state: _SharedState,
    now: float,
) -> tuple[_Action, float, RefreshTokenError | None]:
    """The protocol's one decision: (action, until when to wait, the error to raise).

    `start` is what the caller holds, `current` the ChatGPT tokens just read
    (None: no login, or not ChatGPT), `usable` whether current's access token
    still works.  Like Codex's guarded reload (codex-rs/login/src/auth/manager.rs),
    an account that cannot be told (no id) is never taken to be the same one.
    """
    expected = _account(start)
    if current is None or expected is None or _account(current) != expected:
        return (
            _Action.OTHER,
            0.0,
            PermanentRefreshError(RefreshTokenFailedReason.OTHER, ACCOUNT_CHANGED_MESSAGE),
        )
    if current.refresh_token != start.refresh_token and usable:
        return _Action.ADOPT, 0.0, None
    # Not adopted: a peer may have written tokens that already expired; refresh from
    # its refresh token, not ours.  What peers said counts only while it is stored.
    # (No state, no digest: hashlib is a 2 ms import every process of a herd would pay.)
    if not state.fingerprint or state.fingerprint != _fingerprint(current.refresh_token):
        return _Action.POST, 0.0, None
    if state.reason is not None:
        return _Action.FAIL, 0.0, PermanentRefreshError(state.reason)
    left = _remaining(state.retry_after, now, TRANSIENT_BACKOFF)
    if left:
        message = f"{REFRESH_FAILED} a refresh just failed; try again in {left:.1f} s"
        return _Action.FAIL, 0.0, TransientRefreshError(message)
    # A wait from a clock that runs ahead is honoured only up to its own length, and
    # never turns into a verdict: the caller reads again, and its own deadline ends it.
    if state.sent_until > now:
        return _Action.WAIT, min(state.sent_until, now + MAX_REQUEST_WAIT), None
    if state.peer_until > now:
        return _Action.WAIT, min(state.peer_until, now + REUSE_WINDOW), None
    if state.peer_until:
        return _Action.DEAD, 0.0, PermanentRefreshError(RefreshTokenFailedReason.EXHAUSTED)
    return _Action.POST, 0.0, None


if TYPE_CHECKING:  # pragma: no cover
    # What CodexAuth decided, and on which snapshot: (snapshot, action, until, error).
    _Decision = tuple[Union[_Snapshot, None], _Action, float, Union[RefreshTokenError, None]]


class _OutboxRecord:
    """A refreshed login not yet known to be in the store: what it replaces, and itself."""

    __slots__ = ("spent", "account", "auth")

    def __init__(self, spent: str, account: str | None, auth: AuthDotJson) -> None:
        self.spent = spent  # fingerprint of the refresh token the store holds in its place
        self.account = account
        self.auth = auth

    def to_json(self) -> bytes:
        record = {
            "replaces_refresh_token_sha256": self.spent,
            "account_id": self.account,
            "auth": _auth_to_json(self.auth),
        }
        return json.dumps(record).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> _OutboxRecord | None:
        try:
            raw = json.loads(data)
            spent, account = raw["replaces_refresh_token_sha256"], raw["account_id"]
            if not isinstance(spent, str) or not isinstance(account, (str, type(None))):
                return None
            return cls(spent, account, _auth_from_json(raw["auth"]))
        except (ValueError, KeyError, TypeError, RecursionError):
            return None


def _settle(record: _OutboxRecord, current: _Snapshot | None) -> bool:
    """Whether an outbox record is still to be committed: the store holds the token it
    replaces, for its account.  A later login, none, or another account's wins."""
    return _holds(current, record.spent, record.account)


if TYPE_CHECKING:  # pragma: no cover
    from typing import Protocol

    class _HeldLock(Protocol):
        def release(self) -> None: ...


class Store:
    """Where one login lives, and what the processes sharing it tell each other.

    CodexAuth's single-flight refresh is written once over these methods and
    never asks which store it has (see CodexAuth._refresh).  Every store also
    has this machine's sidecars: an outbox (`outbox`) and a local state file
    for the clock's offset (`local`, a FileStore).
    """

    location = ""  # where the login is, for messages and `status`
    login_hint = "Run `codex login`."  # how to get a login into this store
    outbox: _Outbox
    local: FileStore
    lost = False  # the last read found the login emptied by the store itself, not a logout
    poll_interval = LOCK_POLL_MAX  # the longest a waiter sleeps between two looks
    # A lock wait's (longest, shortest) pause: fine to coarse, as waiters must look; a
    # store whose pause() is woken by a message looks seldom from the start.
    wake_interval = (LOCK_POLL_MAX, LOCK_POLL_MIN)

    def pause(self, seconds: float) -> None:
        """Wait up to `seconds` for a peer's change; a store that can tell waiters (Redis
        pub/sub) returns as soon as one lands."""
        time.sleep(seconds)

    def read(self, *, force: bool = False) -> _Snapshot | None:
        """The login (None: there is none); `force` re-reads what a cache may hold."""
        raise NotImplementedError

    def read_with_state(self, *, force: bool = True) -> tuple[_Snapshot | None, _SharedState]:
        """The login and the shared state, in one consistent read."""
        raise NotImplementedError

    def begin_request(self, stored: str, seconds: float) -> None:
        """Just before a refresh request that may take `seconds`, under the lock; `stored`
        is the fingerprint of the refresh token the store holds (an outbox's login
        spends a later one).

        A store whose lock can lapse mid-request (a TTL) must keep it for that
        long, and tell peers, so that nobody spends the same token meanwhile.
        """

    def describe(self) -> dict[str, Any]:
        """What `status` shows of the store: where, and who refreshed last; never a secret."""
        return {"store": self.location}

    def lock(self, timeout: float, done_elsewhere: Callable[[], bool]) -> _HeldLock | None:
        """The refresh lock, held; None if `done_elsewhere()` turned true while waiting.

        Raises LockTimeoutError after `timeout` seconds.
        """
        raise NotImplementedError

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Generator[None, None, None]:
        lock = self.lock(timeout, lambda: False)
        assert lock is not None  # nothing can be done elsewhere
        try:
            yield
        finally:
            lock.release()

    def check_writable(self) -> None:
        """Raise before a refresh token is spent whose successor could not be stored."""

    def commit(
        self, spent: str, account: str | None, new: AuthDotJson
    ) -> tuple[bool, _Snapshot | None]:
        """Under the lock: store `new` only while the login holds the refresh token
        fingerprinted `spent` for `account`.  (True, None) when written, else (False,
        what was found: None for no login).  Raises when the store cannot be written."""
        current = self.read(force=True)
        if not _holds(current, spent, account):
            return False, current
        self.save(new)
        return True, None

    def save(self, auth: AuthDotJson) -> None:
        """Store `auth` whatever is there now (a new login), under the lock."""
        raise NotImplementedError

    def delete(self) -> bool:
        """Remove the login, under the lock; True if there was one."""
        raise NotImplementedError

    def record(self, refresh_token: str, **facts: Any) -> None:
        """Under the lock: tell peers how the refresh with `refresh_token` went (the
        fields of _SharedState).  Best effort: what callers see is the real outcome."""
        state = _SharedState(_fingerprint(refresh_token), **facts)
        try:
            self._save_state(state)
        except CodexAuthError as exc:
            _log(_WARNING, "could not tell peers: %s", exc)

    def _save_state(self, state: _SharedState) -> None:
        raise NotImplementedError

    def clock_skew(self) -> float:
        """How far this machine's clock was last found ahead of the token issuer's."""
        return self.local.local_state().clock_skew

    def record_clock_skew(self, skew: float) -> None:
        self.local.save_local_state(skew)


# File store: auth.json on disk ###############################################


def find_codex_home() -> str:
    """$CODEX_HOME, else ~/.codex (the directory need not exist)."""
    home = os.environ.get("CODEX_HOME")
    return _home(home or os.path.join("~", ".codex"))


def _home(codex_home: StrPath | None) -> str:
    if codex_home is None:
        return find_codex_home()
    # `~` expanded as a shell would have: `--codex-home '~/x'` must not mean ./~/x.
    return os.path.abspath(os.path.expanduser(os.fspath(codex_home)))


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _file_snapshot(auth: AuthDotJson, st: os.stat_result) -> _Snapshot:
    """A snapshot versioned by stat(), trusted to stay current only past the racy window."""
    trusted = time.time_ns() - st.st_ctime_ns > RACY_STAT_WINDOW * 1e9  # see RACY_STAT_WINDOW
    return _Snapshot(auth, _stat_key(st), trusted)


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
# Opening a FIFO planted where a file should be must fail fast, not hang.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _open_regular(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses anything but a regular file (a FIFO, a directory, a device)."""
    fd = os.open(path, flags | _O_CLOEXEC | _O_BINARY | _O_NONBLOCK, mode)
    try:
        import stat  # cheap, and only needed here

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_auth_file(path: str) -> tuple[AuthDotJson, os.stat_result] | None:
    """Read and parse auth.json, riding out a peer's truncate-then-write; None if absent."""
    deadline = time.monotonic() + TORN_READ_WINDOW
    delay = 0.001
    while True:
        try:
            with os.fdopen(_open_regular(path, os.O_RDONLY), "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(MAX_AUTH_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuthFileError(path, f"cannot read: {exc.strerror or exc}") from None
        try:
            return _parse_auth_bytes(data), st
        except _TornReadError as exc:
            if time.monotonic() >= deadline:
                raise AuthFileError(path, str(exc)) from None
        except ValueError as exc:
            raise AuthFileError(path, str(exc)) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def _fsync_dir(directory: str) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _give_to_owner_of(fd: int, like: os.stat_result | None) -> None:
    """Run as root, hand a file we create to whoever owns the login (sudo must not take it)."""
    if like is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.fchown(fd, like.st_uid, like.st_gid)


def _write_in_place(path: str, data: bytes) -> None:
    """Overwrite an existing file in one write, keeping its inode, owner and group.

    Only where a new file cannot be renamed over it: a file that is itself a
    mount point (bind-mounted into a container), or one in a directory we
    may not write.  A reader can meet this write half done; a kill leaves
    either the old file or the new one only as far as one write(2) is atomic.
    """
    fd = _open_regular(path, os.O_RDWR)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 and hasattr(os, "fchmod"):  # not on Windows before 3.13
            os.fchmod(fd, 0o600)  # tokens are owner-only, as Codex writes them
        _pwrite_all(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_mount_point(path: str) -> bool:
    """Whether `path` is itself mounted (a file bind-mounted into a container), Linux only.

    os.path.ismount cannot tell a file bind-mounted from the same filesystem.
    """
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read()
    except OSError:
        return False
    target = os.fsencode(path)
    for line in table.splitlines():
        fields = line.split(b" ")
        # The mount point is the fifth field, with space, tab, newline, backslash octal-escaped.
        if len(fields) > 4 and _unescape_mountinfo(fields[4]) == target:
            return True
    return False


def _unescape_mountinfo(field: bytes) -> bytes:
    import re

    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    os.lseek(fd, offset, os.SEEK_SET)
    _write_all(fd, data)


def _write_new(path: str, data: bytes, like: os.stat_result | None) -> None:
    """Atomically replace `path` with a new 0600 file: temp file, fsync, rename."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW
    fd = _open_regular(tmp, flags, 0o600)
    try:
        try:
            _give_to_owner_of(fd, like)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # only on a failed write: a complete temp may be all that is left
        raise
    _fsync_dir(directory)


def _remove_temps_of(path: str) -> None:
    """Delete the temp files _write_new left for `path` when killed."""
    import glob  # deferred: only writes get here

    pattern = os.path.join(glob.escape(os.path.dirname(path)), f".{os.path.basename(path)}.*.tmp")
    for temp in glob.glob(pattern):
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _write_file(path: str, data: bytes, owner: os.stat_result | None) -> None:
    """Replace `path` (through a symlink, which stays a link) durably, mode 0600, as
    Codex writes auth.json: a temp file, fsync, rename (codex-rs/login/src/auth/storage.rs).

    A reader never meets half a file.  In place only where no rename can do it
    (see _write_in_place).  Temp files a killed writer left are removed first:
    the caller holds the lock.
    """
    target = os.path.realpath(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise AuthFileError(path, f"cannot write: {exc.strerror or exc}") from None
    try:
        _remove_temps_of(target)
        if st is not None and _is_mount_point(target):
            _write_in_place(target, data)
            return
        try:
            _write_new(target, data, st or owner)
        except OSError as exc:
            refused = (errno.EBUSY, errno.EXDEV, errno.EACCES, errno.EPERM)
            if st is None or exc.errno not in refused or not os.access(target, os.W_OK):
                raise
            _write_in_place(target, data)  # a directory we may not write, a file we may
    except OSError as exc:
        raise AuthFileError(path, f"cannot write: {exc.strerror or exc}") from None


def _makedirs_private(directory: str) -> None:
    """Create a directory owner-only, as Codex creates CODEX_HOME."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise AuthFileError(directory, f"cannot create directory: {exc.strerror or exc}") from None


def _write_sidecar(path: str, data: bytes, like: os.stat_result | None) -> None:
    """Replace a sidecar of ours by rename, never writing through a planted link or FIFO."""
    try:
        _write_new(path, data, like)
    except OSError as exc:
        raise AuthFileError(path, f"cannot write: {exc.strerror or exc}") from None


def _read_sidecar(path: str, limit: int = 1 << 16) -> bytes | None:
    """A sidecar's bytes; None if absent or not a regular file of ours."""
    try:
        with os.fdopen(_open_regular(path, os.O_RDONLY | _O_NOFOLLOW), "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def _private_runtime_dir() -> str | None:
    """This user's runtime directory (a tmpfs on Linux), if it is really theirs alone.

    Not platformdirs' fallback under /tmp, where another user could have made
    the directory first: tokens go only where nobody else can look.
    """
    import warnings

    import platformdirs  # deferred: only writes and refreshes get here

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when it falls back
        base = platformdirs.user_runtime_dir()
    try:
        st = os.stat(base, follow_symlinks=False)
    except OSError:
        return None
    import stat

    ours = not hasattr(os, "geteuid") or st.st_uid == os.geteuid()
    if not stat.S_ISDIR(st.st_mode) or not ours or st.st_mode & 0o077:
        return None
    return os.path.join(base, "codexauth")


class _Outbox:
    """This machine's record of a refreshed login until its store holds it (see _OutboxRecord).

    Written owner-only and fsynced by rename beside the store's other sidecars,
    else in this user's runtime directory (a full disk); if neither can be
    written, kept in this object's memory only, and `where` says so.
    """

    def __init__(self, local: FileStore, name: str) -> None:
        self._local, self._name = local, name
        self._paths: list[str] | None = None
        self._memory: _OutboxRecord | None = None
        self._owner: os.stat_result | None = None  # whose files they are (see prepare)
        self.where: str | None = None  # where the last put() kept it; None: memory only

    def paths(self) -> list[str]:
        """Beside the sidecars; and on another filesystem, for when that one is full."""
        if self._paths is None:
            local = self._local
            paths = [os.path.join(local.sidecar_dir(create=False), self._name)]
            runtime = _private_runtime_dir()
            if runtime is not None:
                paths.append(os.path.join(runtime, local.key(), self._name))
            self._paths = paths
        return self._paths

    def nearby(self) -> bool:
        """Whether a record waits beside the sidecars, or where this object put one: one
        stat(), for the warm path."""
        return (
            self._memory is not None
            or self.where is not None
            or os.path.lexists(os.path.join(self._local.sidecar_dir(create=False), self._name))
        )

    def prepare(self) -> None:
        """Under the lock, before the request: everything put() needs but the write, so
        that the window in which an answer lives only in memory is one file's write.
        Imports, directories, temp files a killed writer left, the owner."""
        self._owner = self._local.owner()
        primary = self.paths()[0]
        with contextlib.suppress(OSError, AuthFileError):
            _makedirs_private(os.path.dirname(primary))
        for path in self.paths():
            _remove_temps_of(path)
        import signal  # noqa: F401  # for _interrupts_deferred, which the answer meets

    def put(self, record: _OutboxRecord) -> str | None:
        """Keep `record` durably before anything else happens; the path, or None (memory)."""
        data, owner = record.to_json(), self._owner
        self._memory, self.where = record, None
        for path in self.paths():
            try:
                if path != self.paths()[0]:  # the fallback's directory, made when needed
                    _makedirs_private(os.path.dirname(path))
                _write_new(path, data, owner)
            except (OSError, AuthFileError) as exc:
                _log(_DEBUG, "could not keep the outbox in %s: %s", path, exc)
                continue
            self._memory, self.where = None, path
            for other in self.paths():
                if other != path:
                    with contextlib.suppress(OSError):
                        os.unlink(other)  # an older record: this one replaces it
            return path
        return None

    def load(self) -> _OutboxRecord | None:
        """The waiting record, if any: this object's, else the first one on disk."""
        self.where = None
        if self._memory is not None:
            return self._memory
        for path in self.paths():
            data = _read_sidecar(path, MAX_AUTH_FILE_BYTES * 2)
            if data is not None:
                record = _OutboxRecord.from_json(data)
                if record is not None:
                    self.where = path
                    return record
                with contextlib.suppress(OSError):
                    os.unlink(path)  # unreadable: of no use to anyone
        return None

    def clear(self, record: _OutboxRecord) -> None:
        """Remove `record` (only it: a later refresh's record stays)."""
        if self._memory is record:
            self._memory = None
        self.where = None
        for path in self.paths():
            data = _read_sidecar(path, MAX_AUTH_FILE_BYTES * 2)
            found = None if data is None else _OutboxRecord.from_json(data)
            if found is None or (found.spent, found.auth) == (record.spent, record.auth):
                with contextlib.suppress(OSError):
                    os.unlink(path)


class FileStore(Store):
    """The login in ``$CODEX_HOME/auth.json``, as the Codex CLI keeps it.

    Sidecars stay out of auth.json: the lock, the state peers share, the
    outbox (beside the real auth.json when that directory is writable, else
    in a per-user directory keyed by its real path).
    """

    def __init__(self, codex_home: StrPath | None = None) -> None:
        self.codex_home = _home(codex_home)
        self.auth_file = os.path.join(self.codex_home, AUTH_FILE_NAME)
        self._snapshot: _Snapshot | None = None
        self._sidecars: str | None = None
        self.local = self
        self.outbox = _Outbox(self, OUTBOX_FILE_NAME)

    @property
    def location(self) -> str:  # type: ignore[override]  # a property over the class default
        return self.auth_file

    # Reading: one stat() while the file is unchanged.  A read never writes.

    def read(self, *, force: bool = False) -> _Snapshot | None:
        """auth.json as a snapshot; `force` re-reads even when stat() says unchanged."""
        snapshot = self._snapshot
        if snapshot is not None and snapshot.trusted and not force:
            try:
                if _stat_key(os.stat(self.auth_file)) == snapshot.version:
                    return snapshot
            except OSError:
                pass
        result = _read_auth_file(self.auth_file)
        self._snapshot = None if result is None else _file_snapshot(*result)
        return self._snapshot

    def read_with_state(self, *, force: bool = True) -> tuple[_Snapshot | None, _SharedState]:
        # Both change only under the lock (or auth.json by a lockless peer, which the
        # state's fingerprint tells apart): read one after the other, they agree.
        return self.read(force=force), self.local_state()

    # The lock.

    def lock_paths(self) -> tuple[str | None, str]:
        """Codex's auth.lock in CODEX_HOME (None where it cannot be made), and the real auth.json.

        Both are locked, in this order: auth.lock is what the Codex CLI takes
        to write auth.json, and the real file is what every spelling of
        CODEX_HOME, symlink and bind mount shares.  Off POSIX, only the
        first: locks there are mandatory and would break the Codex CLI's reads.
        """
        home_lock = os.path.join(self.codex_home, LOCK_FILE_NAME)
        if os.name == "posix":
            if not os.access(self.codex_home, os.W_OK):
                home_lock = None  # type: ignore[assignment]  # the real file's lock suffices
            return home_lock, os.path.realpath(self.auth_file)
        if not os.access(self.codex_home, os.W_OK):
            home_lock = os.path.join(self.sidecar_dir(create=True), LOCK_FILE_NAME)
        return home_lock, ""

    def describe(self) -> dict[str, Any]:
        return {"store": "file", "auth_file": self.auth_file, "lock_file": self.lock_location()}

    def lock_location(self) -> str:
        """The first file the refresh lock takes, for `status`."""
        home_lock, real_file = self.lock_paths()
        return home_lock or real_file

    def lock(self, timeout: float, done_elsewhere: Callable[[], bool]) -> _RefreshLock | None:
        home_lock, real_file = self.lock_paths()
        lock = _RefreshLock(home_lock, real_file, self.owner())
        return lock if lock.acquire(timeout, done_elsewhere) else None

    def owner(self) -> os.stat_result | None:
        """Whose login this is: files we create are theirs (see _give_to_owner_of)."""
        for path in (self.auth_file, self.codex_home):
            with contextlib.suppress(OSError):
                return os.stat(path)
        return None

    # Writing, under the lock: a new file by rename, as Codex writes it.

    def check_writable(self) -> None:
        """Refuse to spend a single-use refresh token whose successor could not be stored."""
        target = os.path.realpath(self.auth_file)
        if os.access(os.path.dirname(target), os.W_OK) or os.access(target, os.W_OK):
            return
        raise AuthFileError(
            self.auth_file,
            "the access token needs a refresh but auth.json is read-only here; "
            "refresh it where it is writable (run `codex`), or mount it read-write",
        )

    def save(self, auth: AuthDotJson) -> None:
        self._snapshot = None
        _write_file(self.auth_file, _serialize_auth(auth), self.owner())

    def delete(self) -> bool:
        """Delete auth.json; True if there was one."""
        self._snapshot = None
        try:
            os.remove(self.auth_file)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise AuthFileError(self.auth_file, f"cannot delete: {exc.strerror or exc}") from None
        return True

    # This machine's state file: what peers tell each other, and the clock's offset.

    def local_state(self) -> _SharedState:
        return _SharedState.from_json(_read_sidecar(self._state_file()))

    def _save_state(self, state: _SharedState) -> None:
        state.clock_skew = self.local_state().clock_skew  # this machine's: kept
        self._write_state(state)

    def save_local_state(self, skew: float) -> None:
        state = self.local_state()
        state.clock_skew = skew
        try:
            self._write_state(state)
        except CodexAuthError as exc:
            _log(_WARNING, "could not keep the clock's offset: %s", exc)

    def _write_state(self, state: _SharedState) -> None:
        path = self._state_file()
        _makedirs_private(os.path.dirname(path))
        _write_sidecar(path, state.to_json(), self.owner())

    def _state_file(self) -> str:
        return os.path.join(self.sidecar_dir(create=False), STATE_FILE_NAME)

    def sidecar_dir(self, *, create: bool) -> str:
        """Beside the real auth.json if writable, else a per-user directory keyed by its path.

        Every process sharing a login must pick the same directory, so the
        choice depends only on the real path and on whether it is writable.
        """
        if self._sidecars is None:
            real_dir = os.path.dirname(os.path.realpath(self.auth_file))
            if os.access(real_dir, os.W_OK):
                self._sidecars = real_dir
            else:
                import platformdirs  # deferred: only a read-only directory needs it

                state = platformdirs.user_state_dir("codexauth")
                self._sidecars = os.path.join(state, self.key())
        if create:
            _makedirs_private(self._sidecars)
        return self._sidecars

    def key(self) -> str:
        """The real auth.json's path, digested: names this login's per-user directories."""
        return _fingerprint(os.path.realpath(self.auth_file))


# The refresh lock ############################################################


# _thread's locks, not threading's: threading is an import the warm path need not pay.
_thread_locks: dict[str, _thread.LockType] = {}
_thread_locks_guard = _thread.allocate_lock()
# Lock files this process has open; a forked child closes its copies (see
# _after_fork_in_child).  The guard spans each open-lock-register and
# unregister-close, and fork() waits for it, so no descriptor slips past.
_held_files: set[int] = set()
_held_files_guard = _thread.allocate_lock()
# path -> a lock its watching thread releases once the holder lets go (_ReleaseWatch).
_watchers: dict[str, _thread.LockType] = {}


def _thread_lock(path: str) -> _thread.LockType:
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, _thread.allocate_lock())


def _after_fork_in_child() -> None:
    """A child of fork() holds none of its parent's locks.

    flock() belongs to the open file, which the child shares: keeping the
    descriptors open would keep the parent's lock held for as long as the
    child lives.  Closing the child's copies (never unlocking them) leaves the
    parent's lock as it was; the thread locks, held by threads the child does
    not have, start afresh.
    """
    global _thread_locks_guard, _held_files_guard
    for fd in list(_held_files):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_files.clear()
    _watchers.clear()  # their threads were not forked
    _thread_locks.clear()
    _thread_locks_guard = _thread.allocate_lock()
    _held_files_guard = _thread.allocate_lock()  # held by the forking thread: a new one


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _held_files_guard.acquire(),
        after_in_parent=lambda: _held_files_guard.release(),
        after_in_child=_after_fork_in_child,
    )


def _try_lock(fd: int, path: str) -> bool:
    """Take the OS's exclusive lock on `fd` without blocking; False if another holds it.

    On POSIX this is flock(2), exactly what portalocker calls there (and what
    the Codex CLI takes on auth.lock); calling it directly spares every
    process of a herd portalocker's ~30 ms import, which starved the one
    process doing the refresh.  Elsewhere portalocker does it.
    """
    try:
        if os.name == "posix":
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
        import portalocker  # deferred: only a refresh locks

        try:
            portalocker.lock(
                os.fdopen(os.dup(fd), "r+b"),
                portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
            )
        except portalocker.AlreadyLocked:
            return False
        return True
    except OSError as exc:  # e.g. ENOLCK on a filesystem without locks
        raise AuthFileError(path, f"cannot lock: {exc.strerror or exc}") from None


# Called once with `holder` when a lock wait has lasted WAIT_NOTICE_AFTER seconds; the CLI
# sets it to tell a person at a terminal why nothing happens.  None: silent (the library).
_wait_notice: Callable[[str], object] | None = None
WAIT_NOTICE_AFTER = 1.0


def _wait_for(
    take: Callable[[], bool],
    done_elsewhere: Callable[[], bool],
    timeout: float,
    holder: str,
    pause: Callable[[float], object] = time.sleep,
    longest: float = LOCK_POLL_MAX,
    shortest: float = LOCK_POLL_MIN,
) -> bool:
    """Try `take()` until it succeeds (True) or `done_elsewhere()` does (False), polling
    finely so that waiters wake together; LockTimeoutError, naming `holder`, after `timeout`.

    `pause(seconds)` waits between tries: a store that can wake its waiters (Redis
    pub/sub) returns early, and then polls seldom (`shortest` = `longest`)."""
    deadline = time.monotonic() + timeout
    notice_at = time.monotonic() + WAIT_NOTICE_AFTER
    delay = shortest
    while True:
        if take():
            return True
        if done_elsewhere():
            return False
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"{REFRESH_FAILED} gave up after {timeout:.3g} s waiting for {holder}"
            )
        if _wait_notice is not None and time.monotonic() >= notice_at:
            notice_at = float("inf")  # once per wait
            _wait_notice(holder)
        pause(delay)
        delay = min(delay * 2, longest)


def _same_file(fd: int, path: str) -> bool:
    """Whether `path` still names the file open as `fd` (not deleted, not renamed over)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


class _RefreshLock:
    """Exclusive across threads, processes, and every path to one auth.json.

    Two OS locks, always in this order: Codex's ``$CODEX_HOME/auth.lock``
    (when it can be made there), then the real auth.json itself (POSIX).  A
    lock counts only while its path still names the file locked: a deleted
    auth.lock, or an auth.json renamed over by a peer, is locked again.  The
    OS drops both when the holder dies, even by kill -9, so there is never a
    stale lock to clean up; auth.lock itself is never deleted.
    """

    def __init__(self, home_lock: str | None, real_file: str, owner: os.stat_result | None):
        self.paths = [p for p in (home_lock, real_file) if p]
        self._creates = {home_lock} if home_lock else set()
        self._owner = owner
        self.key = real_file or str(home_lock)
        self._threads = _thread_lock(self.key)
        self._fds: list[int] = []
        self._held = False

    def acquire(
        self, timeout: float, done_elsewhere: Callable[[], bool], store: Store | None = None
    ) -> bool:
        """Take the lock; False if `done_elsewhere()` turns true while waiting: woken by
        the holder's release, or by `store`'s wake-ups where it has them."""
        holder = f"another process to finish refreshing (it holds {self.paths[0]})"
        if store is not None:
            pause, wake = store.pause, store.wake_interval
            return _wait_for(self._try_once, done_elsewhere, timeout, holder, pause, *wake)
        pause = _ReleaseWatch(self.paths, self._threads).pause
        return _wait_for(self._try_once, done_elsewhere, timeout, holder, pause)

    def _try_once(self) -> bool:
        if not self._threads.acquire(blocking=False):
            return False
        try:
            with _held_files_guard:
                locked = self._try_all()
        except BaseException:
            self._threads.release()
            raise
        if not locked:
            self._threads.release()
            return False
        self._held = True
        return True

    def _try_all(self) -> bool:
        for path in self.paths:
            fd = self._open(path)
            if fd is None:
                continue  # auth.json is gone: nothing left to guard it
            _held_files.add(fd)
            try:
                locked = _try_lock(fd, path) and _same_file(fd, path)
            except BaseException:
                _held_files.discard(fd)
                os.close(fd)
                self._close_all()
                raise
            if not locked:
                _held_files.discard(fd)
                os.close(fd)
                self._close_all()
                return False
            self._fds.append(fd)
        return True

    def _open(self, path: str) -> int | None:
        creates = path in self._creates
        flags = (os.O_RDWR | os.O_CREAT | _O_NOFOLLOW) if creates else os.O_RDONLY
        try:
            fd = _open_regular(path, flags)
        except FileNotFoundError:
            if creates:
                raise AuthFileError(path, "cannot open lock: its directory is gone") from None
            return None
        except OSError as exc:
            raise AuthFileError(path, f"cannot open lock: {exc.strerror or exc}") from None
        if creates:
            _give_to_owner_of(fd, self._owner)
        return fd

    def _close_all(self) -> None:
        for fd in self._fds:
            _held_files.discard(fd)
            os.close(fd)  # closing drops the OS lock
        self._fds = []

    def release(self) -> None:
        if self._held:
            self._held = False
            # The thread lock first: a thread the close wakes (_ReleaseWatch) finds it free.
            self._threads.release()
            with _held_files_guard:
                self._close_all()


class _ReleaseWatch:
    """Pauses in a lock wait that end the moment the holder lets go.

    A shared flock() waits in the kernel while another open file holds the lock
    exclusively, and the kernel grants it to every such waiter at once on release:
    a herd waiting for one refresh spends no CPU looking (63 pollers took a third
    of two cores from the one refreshing), and wakes together.  flock() has no
    timeout, so a thread blocks in it, one per file per process, and holds the
    shared lock only from its grant to its close.  A holder in this process is
    waited for on its thread lock.  Where no holder is found (one in another kernel,
    or one that let go a moment ago), a pause is a sleep.
    """

    def __init__(self, paths: list[str], threads: _thread.LockType) -> None:
        # The real auth.json first: every codexauth holder locks it (auth.lock, not always).
        self._paths = paths[::-1]
        self._threads = threads
        self._woken: _thread.LockType | None = None
        self._pid = os.getpid()

    def pause(self, seconds: float) -> None:
        """Until the holder lets go, or LOCK_WAKE_POLL; `seconds` where none is found."""
        if self._pid != os.getpid():  # a fork's child: the watching thread stayed behind
            self._woken, self._pid = None, os.getpid()
        if self._woken is None:
            self._woken = _watch_release(self._paths)
        if self._woken is None:
            if not self._threads.locked():
                time.sleep(seconds)  # no holder found: as polling always did
            elif self._threads.acquire(timeout=seconds):  # a thread of ours, taking it
                self._threads.release()
        elif self._woken.acquire(timeout=max(seconds, LOCK_WAKE_POLL)):
            self._woken.release()  # left released: every waiter on it wakes
            self._woken = None  # the next pause watches the next holder


def _watch_release(paths: list[str]) -> _thread.LockType | None:
    """The watch on the first of `paths` another holds, started if need be; None when
    none is held (or off POSIX)."""
    if os.name != "posix":
        return None
    import fcntl

    for path in paths:
        with _held_files_guard:  # fork() waits: a child closes every fd registered
            if path in _watchers:
                return _watchers[path]
            try:
                fd = _open_regular(path, os.O_RDONLY | _O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                woken = _watchers[path] = _thread.allocate_lock()
                woken.acquire()
                _held_files.add(fd)
                _thread.start_new_thread(_wait_for_release, (path, fd, woken))
                return woken
            except OSError:
                pass
            os.close(fd)  # not held: closing drops our shared lock
    return None


def _wait_for_release(path: str, fd: int, woken: _thread.LockType) -> None:
    """The watching thread: block until the holder lets go, then let go at once."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        pass
    finally:
        with _held_files_guard:
            if _watchers.get(path) is woken:
                del _watchers[path]
            _held_files.discard(fd)
            os.close(fd)
        woken.release()


# Refresh client ##############################################################
# One POST for the token and the revoke endpoints, so that the URL rule, the CA
# file, the proxy rule, the deadline and "no secret in an error" are written once.

# When the deadline passes while bytes wait unread on the socket, the reader is
# busy rather than blocked: the watchdog looks again this much later.
_WATCHDOG_RECHECK = 0.05


class _PostError(Exception):
    """A POST got no complete answer; the message is one line and names no secret."""


class _RevokeError(CodexAuthError):
    """The revoke request failed; logout deletes auth.json anyway."""


def _ca_bundle() -> str | bool:
    """Which CA file verifies TLS; verification itself is never turned off.

    A variable naming a missing file is bad input, refused before any request:
    requests would skip it for http and fail with a traceback for https.
    """
    for name in ("CODEX_CA_CERTIFICATE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value:
            if not os.path.exists(value):
                raise CodexAuthError(f"{name} names {value!r}, which does not exist")
            return value
    return True


def _client_id() -> str:
    """CLIENT_ID, or the override Codex honours for refresh and revoke alike
    (codex-rs/login/src/auth/manager.rs `oauth_client_id`; checked with the 0.171 CLI)."""
    override = os.environ.get(CLIENT_ID_OVERRIDE_ENV_VAR, "")
    return override if override.strip() else CLIENT_ID


def _proxies_for(url: str) -> dict[str, Any] | None:
    """No proxy for a loopback URL; elsewhere requests' own rules (HTTPS_PROXY, NO_PROXY...).

    A token bound for this machine must not travel through a proxy.  requests
    lets an explicit None beat both the environment and a session's own proxies,
    then drops the key, so the request goes direct.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _is_loopback_host(host):
        return None
    keys = (parts.scheme, "all", f"{parts.scheme}://{host}", f"all://{host}")
    return dict.fromkeys(keys)  # every value None: "no proxy"


def _response_socket(response: requests.Response) -> Any:
    """The socket a streamed response reads from, with or without keep-alive.

    After a `Connection: close` (or HTTP/1.0) answer, http.client drops the
    connection's reference to the socket; the response's own reader still holds
    it.  Checked with urllib3 1.26.20 (requests 2.25.1), 2.2.3 and 2.8.0.
    """
    raw = response.raw
    # urllib3 >= 2.3 keeps the socket's bound shutdown method for HTTPResponse.shutdown().
    sock = getattr(getattr(raw, "_sock_shutdown", None), "__self__", None)
    if sock is None:  # older urllib3: http.client's HTTPResponse.fp is socket.makefile()
        reader = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    if sock is None:  # keep-alive: the connection still has it
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
    return sock


def _readable(sock: Any) -> bool:
    """Whether bytes (or the end) wait unread on `sock`, without blocking."""
    import select  # deferred: only a refresh that overruns its deadline needs it

    try:
        if hasattr(select, "poll"):  # select() cannot take descriptors past FD_SETSIZE
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError, TypeError):  # closed meanwhile, or no socket at all
        return False


class _Watchdog:
    """At the deadline, ends a response read that is blocked waiting for the server.

    Per-read timeouts cannot bound a server that drips bytes, so a thread shuts
    the socket down, which ends any read still waiting on it.  A read that is
    not blocked is left alone: bytes already waiting (say, after the process was
    stopped while the answer arrived) are the answer, not a hang.
    """

    def __init__(self, response: requests.Response, deadline: float) -> None:
        import threading  # deferred: only a request starts a thread

        self._response = response
        self._sock = _response_socket(response)
        self._deadline = deadline
        self._lock = threading.Lock()
        self._done = False
        self._fired = False
        self._wake = threading.Event()
        thread = threading.Thread(target=self._run, name="codexauth-watchdog", daemon=True)
        thread.start()

    def _run(self) -> None:
        while not self._wake.wait(max(self._deadline - time.monotonic(), 0.0)):
            with self._lock:
                if self._done:
                    return
                if _readable(self._sock):
                    self._deadline = time.monotonic() + _WATCHDOG_RECHECK
                    continue
                self._fired = True
            self._abort()
            return

    def _abort(self) -> None:
        shutdown = getattr(self._response.raw, "shutdown", None)  # urllib3 >= 2.3
        try:
            shutdown()  # type: ignore[misc]  # AttributeError/TypeError when it is absent
            return
        except Exception:  # absent, or already released: use the socket
            pass
        with contextlib.suppress(OSError, AttributeError):
            self._sock.shutdown(2)  # socket.SHUT_RDWR, without importing socket here

    def stop(self) -> bool:
        """Stand down; True if the deadline cut the read short."""
        with self._lock:
            self._done = True
            self._wake.set()
            return self._fired


def _body_complete(raw: Any) -> bool:
    """Whether urllib3 saw the body end as framed, not merely the connection end."""
    if getattr(raw, "chunked", False):
        return True  # a cut chunked body raises while reading
    return getattr(raw, "length_remaining", None) == 0


def _post_json(
    url: str, payload: dict[str, str], timeout: float, session: requests.Session | None
) -> tuple[int, bytes]:
    """POST `payload` as JSON; the status and body, or _PostError.

    `timeout` bounds connecting, each wait for the server, and reading the body
    once the headers are in.  Response headers get only the per-read timeout:
    before post() returns there is no socket to shut, and abandoning a request
    still in flight would free the lock for a peer to reuse the refresh token
    while this one might yet be spent.  A server that trickles its headers can
    so hold a refresh past `timeout`; the README and --help say so.

    No exception from requests is chained or kept: they hold the request, and
    so the token, in `.request.body`.
    """
    import requests  # deferred: costs ~100 ms to import and only a refresh needs it

    _check_refresh_url(url)
    verify = _ca_bundle()
    deadline = time.monotonic() + timeout
    post = session.post if session is not None else requests.post
    failure = None
    try:
        response = post(
            url,
            json=payload,
            headers={"Accept": "application/json"},
            timeout=(timeout, timeout),
            stream=True,
            verify=verify,
            allow_redirects=False,  # a redirect must not carry the token elsewhere
            proxies=_proxies_for(url),
        )
    except Exception as exc:  # requests' errors, and whatever urllib3 or ssl let through
        failure = _describe_failure(exc)
    if failure is not None:  # raised here, outside `except`, so nothing is chained
        raise _PostError(failure)
    watchdog = _Watchdog(response, deadline)
    body = bytearray()
    try:
        for chunk in response.iter_content(8192):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                failure = "response too large"
                break
    except Exception as exc:  # a cut read fails in many ways; the type is named
        failure = _describe_failure(exc)
    finally:
        cut = watchdog.stop()
        response.close()
    if cut and (failure is not None or not _body_complete(response.raw)):
        raise _PostError(f"no complete answer within {timeout:g} s")
    if failure is not None:
        raise _PostError(failure)
    return response.status_code, bytes(body)


def _describe_failure(exc: BaseException) -> str:
    """One line for a failed request: what happened and the exception's type, nothing else."""
    import requests  # already imported by the caller

    if isinstance(exc, requests.Timeout):
        return f"timed out ({type(exc).__name__})"
    return f"could not reach the server ({type(exc).__name__})"


def _post_refresh(
    url: str,
    refresh_token: str,
    timeout: float,
    session: requests.Session | None,
    *,
    reason: str = "proactive_expiry",
) -> dict[str, str]:
    """One POST to the token endpoint; the new fields, or a classified RefreshTokenError.

    The body is the Codex 0.171 CLI's, field for field (seen on the wire from its
    released binary).  `refresh_reason` is "proactive_expiry" for a token that
    is expired or due, "unauthorized_recovery" after an API answered 401, and
    "forced" for a refresh asked for outright.
    """
    payload = {
        "client_id": _client_id(),
        "grant_type": "refresh_token",
        "refresh_reason": reason,
        "refresh_token": refresh_token,
    }
    try:
        status, body = _post_json(url, payload, timeout, session)
    except _PostError as exc:
        raise TransientRefreshError(f"{REFRESH_FAILED} {exc}") from None
    if 200 <= status < 300:
        return _parse_token_response(body)
    raise _classify_refresh_failure(status, body)


def _require_packages(what: str, names: tuple[str, ...]) -> None:
    """One line naming every package of `names` that is not installed, as a CodexAuthError.

    A vendored copy imports its dependencies only when a path needs them: checked here,
    all at once and before anything is sent, it says what to install instead of failing
    with a traceback at the first import, possibly after the refresh token was spent.
    Nothing is imported (find_spec only looks), and only off the warm path.
    """
    missing = [name for name in names if name not in sys.modules]
    if missing:
        from importlib.util import find_spec

        missing = [name for name in missing if find_spec(name) is None]
    if missing:
        raise CodexAuthError(
            f"{what} needs {' and '.join(missing)}, not installed here: "
            f"python -m pip install {' '.join(missing)}"
        )


def _refresh_packages() -> tuple[str, ...]:
    """What a refresh imports beyond the standard library (README: Vendoring)."""
    # requests for the POST; platformdirs for the outbox's runtime directory;
    # portalocker for the lock where there is no flock.
    if os.name == "posix":
        return ("requests", "platformdirs")
    return ("requests", "portalocker", "platformdirs")


def _refresh_url() -> str:
    """Where refreshes go: CODEX_REFRESH_TOKEN_URL_OVERRIDE, else Codex's endpoint; checked."""
    _require_packages("a refresh", _refresh_packages())  # the refresh path starts here
    url = os.environ.get(REFRESH_TOKEN_URL_OVERRIDE_ENV_VAR) or REFRESH_TOKEN_URL
    _check_refresh_url(url)
    return url


def _revoke_url() -> str:
    """CODEX_REVOKE_TOKEN_URL_OVERRIDE, else the refresh override's host with path
    /oauth/revoke, else REVOKE_TOKEN_URL (codex-rs/login/src/auth/revoke.rs)."""
    from urllib.parse import urlsplit, urlunsplit

    override = os.environ.get(REVOKE_TOKEN_URL_OVERRIDE_ENV_VAR)
    if override:
        return override
    refresh = os.environ.get(REFRESH_TOKEN_URL_OVERRIDE_ENV_VAR)
    if refresh:
        try:
            parts = urlsplit(refresh)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme and parts.netloc:
            return urlunsplit((parts.scheme, parts.netloc, "/oauth/revoke", "", parts.fragment))
    return REVOKE_TOKEN_URL


def _revocable_token(auth: AuthDotJson) -> tuple[str, str] | None:
    """(token, token_type_hint) that `codex logout` revokes: the refresh token, else the
    access token, of a ChatGPT login only (codex-rs/login/src/auth/revoke.rs)."""
    try:
        mode = auth.mode
    except UnsupportedAuthModeError:
        return None  # not a login Codex revokes either
    if mode is not AuthMode.CHATGPT or auth.tokens is None:
        return None
    if auth.tokens.refresh_token:
        return auth.tokens.refresh_token, "refresh_token"
    if auth.tokens.access_token:
        return auth.tokens.access_token, "access_token"
    return None


def _post_revoke(
    url: str, token: str, hint: str, timeout: float, session: requests.Session | None
) -> None:
    """Revoke `token` as `codex logout` does; _RevokeError names the problem in one line.

    The body is Codex's: the token, its type, and the client id for a refresh
    token only (revoke.rs `RevokeTokenKind`; checked with the 0.171 CLI).
    """
    payload = {"token": token, "token_type_hint": hint}
    if hint == "refresh_token":
        payload["client_id"] = _client_id()
    try:
        status, body = _post_json(url, payload, timeout, session)
    except _PostError as exc:
        raise _RevokeError(f"could not revoke the token: {exc}") from None
    if not 200 <= status < 300:
        code = _refresh_error_code(body)
        detail = f" ({code})" if code else ""
        raise _RevokeError(f"could not revoke the token: HTTP {status}{detail}")


# CodexAuth ###################################################################


def _not_logged_in(
    where: str, detail: str = "no login in", hint: str = "Run `codex login`."
) -> NotLoggedInError:
    return NotLoggedInError(f"Not logged in: {detail} {where}. {hint}")


def _account(tokens: TokenData) -> str | None:
    return tokens.account_id or tokens.id_token.chatgpt_account_id


def _merge_tokens(tokens: TokenData, fields: Mapping[str, str]) -> TokenData:
    """The tokens after a refresh answer: each field it gave replaces ours, the rest stays."""
    return TokenData(
        parse_id_token(fields["id_token"]) if "id_token" in fields else tokens.id_token,
        fields.get("access_token", tokens.access_token),
        fields.get("refresh_token", tokens.refresh_token),
        tokens.account_id,
        tokens.extra,
    )


def _clock_skew(access_token: str, now: float) -> float:
    """How far the local clock runs ahead of the issuer's, from a token issued just now."""
    iat = (_jwt_claims(access_token) or {}).get("iat")
    if not _finite(iat):
        return 0.0
    skew = now - float(iat)  # type: ignore[arg-type]  # _finite checked the type
    return skew if abs(skew) > CLOCK_SKEW_TOLERANCE else 0.0


@contextlib.contextmanager
def _interrupts_deferred() -> Generator[None, None, None]:
    """Let a write that must finish, finish: a Ctrl-C meanwhile is raised after it.

    Only for Python's own SIGINT handling in the main thread; a program that
    installed its own handler keeps it.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[object] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class CodexAuth:
    """The login in one CODEX_HOME: fresh tokens, refreshed at most once across processes.

    `store` is where the login lives: "file" (auth.json, the default), a Redis
    URL (one login for many machines; `namespace` picks which), or a Store;
    unset, $CODEXAUTH_STORE and $CODEXAUTH_NAMESPACE decide.  `timeout` bounds
    the refresh request; `lock_timeout` bounds the wait for a peer's refresh.
    `session` (a requests.Session) and `now` (epoch seconds) are for tests and
    custom transports.
    """

    def __init__(
        self,
        codex_home: StrPath | None = None,
        *,
        store: str | Store | None = None,
        namespace: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        session: requests.Session | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0 or not lock_timeout > 0:
            raise ValueError("timeout and lock_timeout must be positive")
        self.codex_home = _home(codex_home)
        self.store = _store_for(store, self.codex_home, namespace=namespace, timeout=timeout)
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self._session = session
        self._now = now
        self._snapshot: _Snapshot | None = None  # what this object last read or handed out
        self._outbox_due = False  # an outbox waited beside the store when it was last read

    @classmethod
    def from_auth_storage(
        cls, codex_home: StrPath | None = None, **options: Any
    ) -> CodexAuth | None:
        """A CodexAuth for `codex_home`, or None when its store holds no login."""
        auth = cls(codex_home, **options)
        return auth if auth._load(force=True) is not None else None

    def __repr__(self) -> str:
        return f"CodexAuth(codex_home={self.codex_home!r})"

    # Reading.

    def _load(self, *, force: bool = False) -> _Snapshot | None:
        snapshot = self.store.read(force=force)
        if snapshot is not self._snapshot or force:
            # A new read: is a refreshed login waiting to be stored?  (One stat().)
            self._outbox_due = snapshot is not None and self.store.outbox.nearby()
        self._snapshot = snapshot
        return snapshot

    def _require(self) -> _Snapshot:
        snapshot = self._load()
        if snapshot is None and self.store.outbox.nearby():
            # Settled before "not logged in": a logout drops it; an emptied store
            # (Redis restarted without persistence) is refilled from it.
            with self.store.locked(self.lock_timeout):
                self._read_settled()
            snapshot = self._load(force=True)
        if snapshot is None or self._mode(snapshot) is None:
            raise _not_logged_in(self.store.location, hint=self.store.login_hint)
        return snapshot

    def _mode(self, snapshot: _Snapshot) -> AuthMode | None:
        try:
            return snapshot.auth.mode
        except UnsupportedAuthModeError as exc:
            raise UnsupportedAuthModeError(self.store.location, exc.auth_mode) from None

    def _require_tokens(self) -> tuple[_Snapshot, TokenData]:
        snapshot = self._require()
        if self._mode(snapshot) is not AuthMode.CHATGPT or snapshot.auth.tokens is None:
            raise _not_logged_in(
                self.store.location, "with ChatGPT: an API key, not tokens, is in"
            )
        return snapshot, snapshot.auth.tokens

    def _freshness(self, snapshot: _Snapshot) -> _Freshness:
        now = self._now()
        freshness = _freshness(snapshot.access_exp, snapshot.last_refresh, now)
        if freshness is not _Freshness.FRESH:
            skew = self.store.clock_skew()  # re-read: a clock put right is seen at once
            if skew:
                freshness = _freshness(snapshot.access_exp, snapshot.last_refresh, now - skew)
        return freshness

    def get_current_auth_json(self) -> AuthDotJson | None:
        """The login as stored now, without refreshing; None when there is none."""
        snapshot = self._load()
        if snapshot is not None:
            self._mode(snapshot)  # a login of a kind we cannot serve says so, naming the store
        return None if snapshot is None else snapshot.auth

    @property
    def mode(self) -> AuthMode:
        """API_KEY or CHATGPT, as the store says now."""
        mode = self._mode(self._require())
        assert mode is not None  # _require checked
        return mode

    def get_token_data(self) -> TokenData:
        """The ChatGPT tokens as stored now (no refresh)."""
        return self._require_tokens()[1]

    def get_account_id(self) -> str | None:
        """The ChatGPT account (workspace) id; None in API-key mode."""
        tokens = self._require().auth.tokens
        return None if tokens is None else _account(tokens)

    def get_account_email(self) -> str | None:
        tokens = self._require().auth.tokens
        return None if tokens is None else tokens.id_token.email

    def get_plan_type(self) -> str | None:
        tokens = self._require().auth.tokens
        return None if tokens is None else tokens.id_token.chatgpt_plan_type

    def needs_refresh(self) -> bool:
        """Whether get_token() would refresh first (False in API-key mode)."""
        snapshot = self._require()
        if self._mode(snapshot) is AuthMode.API_KEY:
            return False
        return self._freshness(snapshot) is not _Freshness.FRESH

    def access_token_expiry(self) -> datetime | None:
        """When the stored access token expires, if it says."""
        from datetime import datetime, timezone

        exp = self._require().access_exp
        return None if exp is None else datetime.fromtimestamp(exp, timezone.utc)

    # Tokens.

    def get_token(self) -> str:
        """The API key, or a fresh access token (refreshing first when stale)."""
        return self._credentials()[0]

    def _credentials(self) -> tuple[str, str | None]:
        """The token to send and its ChatGPT account id, from one snapshot."""
        snapshot = self._require()
        if self._outbox_due:
            with contextlib.suppress(LockTimeoutError):  # a peer is at it: it settles it
                snapshot = self._settled()
        auth = snapshot.auth
        if self._mode(snapshot) is AuthMode.API_KEY:
            assert auth.openai_api_key is not None  # the mode rule says so
            return auth.openai_api_key, None
        tokens = auth.tokens
        assert tokens is not None  # the mode rule: ChatGPT mode has tokens
        freshness = self._freshness(snapshot)
        if freshness is _Freshness.FRESH:
            return tokens.access_token, _account(tokens)
        try:
            # A token with time to spare is not worth queueing behind a peer's refresh.
            new = self._refresh(snapshot, wait=freshness is not _Freshness.ADVISORY)
        except (RefreshTokenError, AuthFileError) as exc:
            if not freshness.still_valid:
                raise
            # As Codex does with a failed proactive refresh (codex-rs/login/src/auth/
            # manager.rs): log it and keep using the token, which works a while yet.
            level = _DEBUG if isinstance(exc, LockTimeoutError) else _WARNING
            _log(level, "refresh not done, using the still-valid access token: %s", exc)
            return tokens.access_token, _account(tokens)
        return new.access_token, _account(new)

    def _settled(self) -> _Snapshot:
        """The login once this machine's outbox is settled (it waited beside the store)."""
        with self.store.locked(self.lock_timeout):
            snapshot, _ = self._read_settled()
        self._snapshot, self._outbox_due = snapshot, False
        if snapshot is None or self._mode(snapshot) is None:
            raise _not_logged_in(self.store.location, hint=self.store.login_hint)
        return snapshot

    def refresh_token(self) -> str:
        """Refresh now, unless a peer already refreshed the login this object last read.

        As Codex's guarded reload (codex-rs/login/src/auth/manager.rs): tokens
        written since then are adopted without a request; another account (or
        none) found instead raises PermanentRefreshError.  An API-key login
        has nothing to refresh: its key is returned.
        """
        held = self._snapshot if self._snapshot is not None else self._require()
        mode = self._mode(held)
        if mode is AuthMode.API_KEY:
            assert held.auth.openai_api_key is not None
            return held.auth.openai_api_key
        if mode is None or held.auth.tokens is None:
            raise _not_logged_in(self.store.location, hint=self.store.login_hint)
        return self._refresh(held, reason="forced").access_token

    def ensure_valid(self, seconds: float) -> AuthDotJson:
        """The login, refreshed first (single-flight) if its token has under `seconds` left."""
        snapshot = self._require()
        if self._outbox_due:
            snapshot = self._settled()
        if self._mode(snapshot) is AuthMode.CHATGPT:
            exp = snapshot.access_exp
            if exp is None:  # the 8-day rule is all there is to go by
                stale = not self._freshness(snapshot).still_valid
            else:
                stale = exp - (self._now() - self.store.clock_skew()) < seconds
            if stale:
                self._refresh(snapshot)
        assert self._snapshot is not None
        return self._snapshot.auth

    def recover_unauthorized(self, rejected_token: str) -> str | None:
        """After an API answered 401 to `rejected_token`: a newer token to retry with, or None.

        Adopts a token a peer wrote for the same account; otherwise forces a
        single-flight refresh.  None when there is nothing better to try.
        """
        before = self._snapshot.auth.tokens if self._snapshot is not None else None
        snapshot = self._load(force=True)
        if snapshot is None or self._mode(snapshot) is not AuthMode.CHATGPT:
            return None
        tokens = snapshot.auth.tokens
        assert tokens is not None
        if before is not None and _account(before) != _account(tokens):
            return None  # a different login now: its token is not ours to retry with
        if tokens.access_token != rejected_token:
            _log(_DEBUG, "401 recovery: adopted a token a peer wrote")
            return tokens.access_token
        try:
            return self._refresh(snapshot, reason="unauthorized_recovery").access_token
        except RefreshTokenError as exc:
            _log(_DEBUG, "401 recovery: refresh failed: %s", exc)
            raise

    # The single-flight protocol.

    def _refresh(
        self, start: _Snapshot, *, reason: str = "proactive_expiry", wait: bool = True
    ) -> TokenData:
        """read -> decide -> (lock -> read -> decide -> POST -> outbox -> commit) -> unlock.

        `start` is the snapshot the caller holds: tokens written since, for the
        same account, are adopted without a request.  Every decision is
        _decide() over one fresh read; every wait ends in another read.  Without
        `wait`, a peer's refresh in progress raises LockTimeoutError at once.
        """
        assert start.auth.tokens is not None
        begin = start.auth.tokens
        url = _refresh_url()
        deadline = time.monotonic() + (self.lock_timeout if wait else 0.0)
        # The whole lock_timeout for the first lock wait (a read's few ms are not worth
        # "gave up after 0.488 s"), what is left of it for a later one.
        patience = self.lock_timeout if wait else 0.0
        while True:
            decision = self._decide(begin, self._read())
            action = decision[1]
            # POST and DEAD act under the lock; so does dropping an outbox a logout or a
            # switch made stale, before "not yours" is said.
            if action in (_Action.POST, _Action.DEAD) or (
                action is _Action.OTHER and self.store.outbox.nearby()
            ):
                done, locked = self._locked_step(begin, reason, url, patience)
                patience = max(deadline - time.monotonic(), 0.0)
                if done is not None:
                    return done
                if locked is None:
                    continue  # decided elsewhere, or answered "reused": read again
                decision = locked
            snapshot, action, until, error = decision
            if action is _Action.ADOPT:
                assert snapshot is not None and snapshot.auth.tokens is not None
                return snapshot.auth.tokens
            if action is _Action.WAIT:
                self._await_peer(begin, until, deadline)
                continue
            assert error is not None  # FAIL, OTHER, DEAD
            _log(_DEBUG, "refresh not done: %s", error)
            raise error

    def _locked_step(
        self, begin: TokenData, reason: str, url: str, timeout: float
    ) -> tuple[TokenData | None, _Decision | None]:
        """Take the lock, read and settle, decide again; POST, or record a dead login.

        (tokens, None): refreshed.  (None, None): read again (a peer's outcome ended
        the lock wait, or the answer was "reused").  (None, decision): act on it.
        """

        def decided_elsewhere() -> bool:
            # While the holder works: its result, a failure, or a wait to join.
            return self._decide(begin, self._read(force=False))[1] not in (
                _Action.POST,
                _Action.DEAD,
            )

        waited = time.monotonic()
        lock = self.store.lock(timeout, decided_elsewhere)
        if lock is None:
            _log(_DEBUG, "refresh adopted from a peer after %.0f ms", _ms_since(waited))
            return None, None
        try:
            _log(_DEBUG, "refresh lock taken after %.0f ms", _ms_since(waited))
            decision = self._decide(begin, self._read_settled())
            snapshot, action = decision[:2]
            if action is _Action.ADOPT:
                _log(_DEBUG, "refresh skipped: a peer already refreshed")
            elif action is _Action.POST:
                assert snapshot is not None  # _decide said POST: a login is there
                return self._post_and_commit(snapshot, reason, url), None
            elif action is _Action.DEAD:
                assert snapshot is not None and snapshot.auth.tokens is not None
                spent = snapshot.auth.tokens.refresh_token
                self.store.record(spent, reason=RefreshTokenFailedReason.EXHAUSTED)
            return None, decision
        finally:
            lock.release()

    def _decide(self, begin: TokenData, read: tuple[_Snapshot | None, _SharedState]) -> _Decision:
        """_decide() over one read, with the snapshot it was made on."""
        snapshot, state = read
        current = _chatgpt_tokens(snapshot)
        if snapshot is not None:
            self._snapshot = snapshot
            self._mode(snapshot)  # a mode we cannot serve is named, not taken for a logout
        usable = current is not None and self._freshness(snapshot).still_valid  # type: ignore[arg-type]  # not None with current
        action, until, error = _decide(begin, current, usable, state, self._now())
        return snapshot, action, until, error

    def _read(
        self, *, force: bool = True, everywhere: bool = False
    ) -> tuple[_Snapshot | None, _SharedState]:
        """One read of the login and its shared state, this machine's outbox laid over it
        while the store still holds the token it replaces (a read never writes).  The
        outbox is looked for beside the store, or `everywhere` (the runtime directory)."""
        snapshot, state = self.store.read_with_state(force=force)
        if everywhere or self.store.outbox.nearby():
            record = self.store.outbox.load()
            if record is not None and _settle(record, snapshot):
                snapshot = _Snapshot(record.auth, replaces=record.spent)
        return snapshot, state

    def _read_settled(self) -> tuple[_Snapshot | None, _SharedState]:
        """Under the lock: the login and its shared state in one read, this machine's outbox
        settled first (committed while the store holds the token it replaces, else dropped)."""
        snapshot, state = self.store.read_with_state()
        record = self.store.outbox.load()
        if record is None:
            return snapshot, state
        if not _settle(record, snapshot) and not (snapshot is None and self.store.lost):
            _log(_DEBUG, "dropped an outbox the store has moved past (a later login, or none)")
            self.store.outbox.clear(record)
            return snapshot, state
        return self._commit(record, snapshot), state

    def _commit(self, record: _OutboxRecord, stored: _Snapshot | None) -> _Snapshot | None:
        """Store an outbox record; the login in force after it (the record's own while the
        store cannot take it: the next run stores it)."""
        try:
            written, found = self.store.commit(record.spent, record.account, record.auth)
        except CodexAuthError as exc:
            where = self.store.outbox.where or "this process's memory only (lost when it ends)"
            _log(
                _WARNING,
                "could not store the refreshed login in %s (%s); it waits in %s, and the next "
                "run stores it",
                self.store.location,
                exc,
                where,
            )
            return _Snapshot(record.auth, replaces=record.spent)
        self.store.outbox.clear(record)
        if written:
            _log(_DEBUG, "stored the refreshed login in %s", self.store.location)
            try:
                return self.store.read(force=True)
            except CodexAuthError:
                return _Snapshot(record.auth)  # stored; only the look back failed
        _log(_WARNING, "the login in %s changed meanwhile; keeping that one", self.store.location)
        return found if found is not None else stored

    def _post_and_commit(self, snapshot: _Snapshot, reason: str, url: str) -> TokenData | None:
        """Under the lock: POST the stored refresh token; the new tokens, durable in the
        outbox before anything else, then committed.  None when the answer was "reused"."""
        old = snapshot.auth
        tokens = old.tokens
        assert tokens is not None
        refresh_token = tokens.refresh_token
        spent = snapshot.replaces or _fingerprint(refresh_token)  # what the store holds
        self.store.check_writable()
        self.store.outbox.prepare()  # all but the write itself, before the answer exists
        self.store.begin_request(spent, self.timeout)
        _log(_DEBUG, "refresh started: POST %s", url)
        try:
            fields = _post_refresh(url, refresh_token, self.timeout, self._session, reason=reason)
        except PermanentRefreshError as exc:
            _log(_DEBUG, "refresh failed for good: %s", exc.reason.name)
            if exc.reason is RefreshTokenFailedReason.EXHAUSTED:
                # Spent by someone else, maybe a peer that takes no lock (the Codex CLI),
                # whose write may still come: a verdict only after REUSE_WINDOW.
                self.store.record(refresh_token, peer_until=self._now() + REUSE_WINDOW)
                return None
            self.store.record(refresh_token, reason=exc.reason)
            raise
        except TransientRefreshError as exc:
            _log(_DEBUG, "refresh failed, transient: %s", exc)
            self.store.record(refresh_token, retry_after=self._now() + TRANSIENT_BACKOFF)
            raise
        now = self._now()
        refreshed = _merge_tokens(tokens, fields)
        new = AuthDotJson(old.openai_api_key, refreshed, None, old.extra)
        new._last_refresh = round(now * _US)
        # A new token's `iat` tells how far this machine's clock is off (kept below).
        skew = _clock_skew(refreshed.access_token, now) if "access_token" in fields else None
        # Never a success that leaves no working token (a 2xx without one): the
        # refresh counts as not done, though a rotated refresh token is still kept.
        known_skew = self.store.clock_skew() if skew is None else skew
        usable = _freshness(_jwt_expiry(refreshed.access_token), None, now - known_skew)
        if not usable.still_valid:
            new._last_refresh = old._last_refresh
        record = _OutboxRecord(spent, _account(tokens), new)
        with _interrupts_deferred():
            self.store.outbox.put(record)  # first: the answer is the only copy until then
            _log(_DEBUG, "refresh succeeded; storing it in %s", self.store.location)
            self._snapshot = self._commit(record, None)
        in_force = _chatgpt_tokens(self._snapshot)
        if in_force is None or _account(in_force) != _account(tokens):
            # A logout or a switch landed during the request: it won, and these tokens
            # belong to a login that is gone.
            raise PermanentRefreshError(RefreshTokenFailedReason.OTHER, ACCOUNT_CHANGED_MESSAGE)
        if skew is not None and skew != self.store.clock_skew():
            self.store.record_clock_skew(skew)
        if not usable.still_valid:
            raise TransientRefreshError(
                f"{REFRESH_FAILED} the token endpoint answered without a usable access token"
            )
        return refreshed

    def _await_peer(self, begin: TokenData, until: float, deadline: float) -> None:
        """Wait, holding no lock so that a peer's write can land, until a fresh read decides
        otherwise (its login landed, a failure was recorded) or `until` (epoch) passes; the
        caller then reads again.  TransientRefreshError if our own deadline comes first:
        the token was spent and its result is still to come."""
        end = time.monotonic() + max(until - self._now(), 0.0)
        while time.monotonic() < end:
            if time.monotonic() >= deadline:
                raise TransientRefreshError(
                    f"{REFRESH_FAILED} another program spent the refresh token and its result "
                    "has not arrived yet; try again in a few seconds"
                )
            self.store.pause(min(self.store.poll_interval, max(end - time.monotonic(), 0.0)))
            if self._decide(begin, self._read(force=False))[1] is not _Action.WAIT:
                return

    # Logging out, like `codex logout`.

    revoke_error: str | None = None  # why the last logout() revoked nothing, if it tried

    def _revoke(self, url: str) -> None:
        """The revoke half of logout(), of the login in force (an outbox's, while the store
        holds the token it replaced); failures become `revoke_error` and a warning."""
        try:
            snapshot, _ = self._read(everywhere=True)
            found = None if snapshot is None else _revocable_token(snapshot.auth)
            if found is not None:
                token, hint = found
                _post_revoke(url, token, hint, min(self.timeout, REVOKE_TIMEOUT), self._session)
        except (_RevokeError, AuthFileError) as exc:
            self.revoke_error = (
                str(exc)
                if isinstance(exc, _RevokeError)
                else f"could not revoke the token: cannot read it ({exc})"
            )
            _log(_WARNING, "%s; deleting %s anyway", self.revoke_error, self.store.location)

    def logout(self, *, revoke: bool = True) -> bool:
        """Revoke the login's token at the server, then delete it from the store; True if
        there was one.

        Like `codex logout` (codex-rs/login/src/auth/manager.rs `logout_with_revoke`):
        the refresh token is revoked, else the access token; an API key is not.  A
        revoke that fails (network, timeout, an error status) still deletes the login:
        `revoke_error` then says why, and a warning is logged.  It runs under the
        refresh lock, so no peer is mid-refresh.  `revoke=False` only deletes.
        """
        self.revoke_error = None
        url = _revoke_url()
        if revoke:  # bad input fails before the lock, leaving the store as it was
            _check_refresh_url(url, "revoke")
            _ca_bundle()
        try:
            present = self.store.read(force=True) is not None
        except AuthFileError:
            present = True  # a broken login is still one to delete
        if not present and not self.store.outbox.nearby():
            return False  # nothing to revoke or delete: no lock file made either
        with self.store.locked(self.lock_timeout):
            if revoke:
                self._revoke(url)
            removed = self.store.delete()
            record = self.store.outbox.load()
            if record is not None:
                self.store.outbox.clear(record)  # a logout wins over a refresh not yet stored
        self._snapshot = None
        return removed


def _ms_since(start: float) -> float:
    return (time.monotonic() - start) * 1000


_shared: dict[str, CodexAuth] = {}


def get_token(codex_home: StrPath | None = None) -> str:
    """The API key, or a fresh access token, for `codex_home` (default: find_codex_home())."""
    home = _home(codex_home)
    auth = _shared.get(home)
    if auth is None:
        auth = _shared.setdefault(home, CodexAuth(home))
    return auth.get_token()


# Public functions ############################################################


def load_auth_dot_json(codex_home: StrPath) -> AuthDotJson | None:
    """auth.json from `codex_home`, or None when there is none (a torn write is finished)."""
    snapshot = FileStore(codex_home).read()
    return None if snapshot is None else snapshot.auth


def save_auth(codex_home: StrPath, auth: AuthDotJson) -> None:
    """Write `auth` to auth.json durably, mode 0600, keeping its unknown keys."""
    store = FileStore(codex_home)
    _makedirs_private(store.codex_home)
    with store.locked(DEFAULT_LOCK_TIMEOUT):
        store.save(auth)


def logout(codex_home: StrPath | None = None, *, revoke: bool = True) -> bool:
    """Revoke the token, then delete auth.json, like ``codex logout``; True if there was one.

    See CodexAuth.logout; ``revoke=False`` only deletes the file.
    """
    return CodexAuth(codex_home).logout(revoke=revoke)


def login_with_api_key(codex_home: StrPath, api_key: str) -> None:
    """Store an API key as the login, replacing any ChatGPT tokens."""
    api_key = api_key.strip()
    if not api_key or any(c.isspace() for c in api_key):
        raise CodexAuthError("the API key is empty or contains white space")
    save_auth(codex_home, AuthDotJson(openai_api_key=api_key))


# Adapters ####################################################################


class RequestsAuth:
    """Bearer auth for requests, with one Codex-style recovery after a 401.

    Works as ``requests.get(url, auth=RequestsAuth())``: requests accepts any
    callable, so this need not subclass ``requests.auth.AuthBase`` (which would
    import requests along with this module).
    """

    def __init__(self, codex_home: StrPath | None = None, **options: Any) -> None:
        self.codex = CodexAuth(codex_home, **options)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = _set_auth_headers(self.codex, r.headers)
        origin = _origin(r.url or "")
        replayable, body_position = _replay_position(r.body)
        retried = False

        def on_response(response: requests.Response, **kwargs: Any) -> requests.Response:
            # Redirect hops run this hook too: a 401 from another origin is not about
            # our token, and the request there must never be given one.
            # Only one retry: the resent copy carries this hook too (requests runs no
            # hooks on it today; the flag keeps a future version from looping).
            nonlocal retried
            sent = response.request
            if response.is_redirect and _redirect_origin(response) != origin:
                # requests strips only Authorization on such a hop; the account id
                # stays ours too.  The next hop's request is a copy of `sent`.
                sent.headers.pop("ChatGPT-Account-Id", None)
            if retried or not _rejected(
                response.status_code, sent.url, sent.headers, origin, token
            ):
                return response
            retried = True
            # A body that cannot be sent again (a generator, a pipe) gets its 401 back
            # as is: a refresh it could not use would be spent for nothing.
            if not replayable or self.codex.recover_unauthorized(token) is None:
                return response
            return self._resend(response, body_position, **kwargs)

        r.register_hook("response", on_response)  # type: ignore[no-untyped-call]  # untyped in requests
        return r

    def _resend(
        self, response: requests.Response, body_position: int | None, **kwargs: Any
    ) -> requests.Response:
        """Send the request once more with the new token, as HTTPDigestAuth does."""
        from requests.cookies import extract_cookies_to_jar

        request = response.request
        if body_position is not None:
            request.body.seek(body_position)  # type: ignore[union-attr]  # _replay_position checked
        response.content  # noqa: B018  # drain the body so the connection is reused
        response.close()
        retry = request.copy()
        jar = retry._cookies  # type: ignore[attr-defined]  # private in requests' stubs
        extract_cookies_to_jar(jar, request, response.raw)  # type: ignore[no-untyped-call]  # untyped in requests
        retry.prepare_cookies(jar)
        _set_auth_headers(self.codex, retry.headers)
        second: requests.Response = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second


def _replay_position(body: object) -> tuple[bool, int | None]:
    """Whether a requests body can be sent twice, and where a file body starts.

    In-memory bodies can; a file only if it is seekable and tell() works.  A
    generator or a pipe can be read once only: nothing to rewind, and no tell()
    before the first send, where a pipe's raises ESPIPE.
    """
    if body is None or isinstance(body, (bytes, bytearray, memoryview, str)):
        return True, None
    seekable = getattr(body, "seekable", None)
    tell = getattr(body, "tell", None)
    if callable(seekable) and callable(tell) and callable(getattr(body, "seek", None)):
        with contextlib.suppress(OSError, ValueError):  # ValueError: a closed file
            if seekable():
                return True, int(tell())
    return False, None


def _redirect_origin(response: requests.Response) -> tuple[str, str, int | None]:
    """The origin a requests redirect response sends the client to."""
    from urllib.parse import urljoin  # deferred: only adapters follow redirects

    return _origin(urljoin(response.url, response.headers.get("location", "")))


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the default port filled in: what a token is bound to."""
    from urllib.parse import urlsplit  # deferred: only adapters compare origins

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port out of range: compares equal to nothing real
        port = -1
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, parts.hostname or "", port


def _rejected(
    status: int, url: object, headers: Any, origin: tuple[str, str, int | None], token: str
) -> bool:
    """Whether a response is the origin refusing `token`: only then can a new token help.

    A 401 from elsewhere (a redirect to another host), or to a request that no
    longer carried the token (stripped on a redirect), says nothing about it.
    """
    return (
        status == 401
        and _origin(str(url or "")) == origin
        and headers.get("Authorization") == f"Bearer {token}"
    )


def _set_auth_headers(codex: CodexAuth, headers: Any) -> str:
    """Authorization, plus ChatGPT-Account-Id in ChatGPT mode; returns the token sent."""
    token, account = codex._credentials()  # one login: never a token with another's account
    headers["Authorization"] = f"Bearer {token}"
    if account:
        headers["ChatGPT-Account-Id"] = account
    return token


_httpx_auth_class: type | None = None


def HttpxAuth(codex_home: StrPath | None = None, **options: Any) -> httpx.Auth:  # noqa: N802  # used like a class
    """Bearer auth for httpx (sync and async), with one Codex-style recovery after a 401.

    A factory rather than a class so that httpx stays optional: the
    ``httpx.Auth`` subclass is built on first use.
    """
    global _httpx_auth_class
    if _httpx_auth_class is None:
        _httpx_auth_class = _build_httpx_auth_class()
    return _httpx_auth_class(CodexAuth(codex_home, **options))  # type: ignore[no-any-return]  # built at run time


def _build_httpx_auth_class() -> type:
    try:
        import httpx  # deferred: an optional dependency
    except ImportError as exc:
        raise ImportError("codexauth.HttpxAuth needs httpx: python -m pip install httpx") from exc

    def rejected(
        response: httpx.Response, origin: tuple[str, str, int | None], token: str
    ) -> bool:
        # With follow_redirects, `response` ends the chain: its request may have
        # gone to another origin (httpx strips Authorization there).
        sent = response.request
        return _rejected(response.status_code, sent.url, sent.headers, origin, token)

    class _HttpxAuth(httpx.Auth):
        requires_request_body = True  # the retry re-sends the body

        def __init__(self, codex: CodexAuth) -> None:
            self.codex = codex

        def sync_auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            token = _set_auth_headers(self.codex, request.headers)
            origin = _origin(str(request.url))
            response = yield request
            if rejected(response, origin, token):
                retry_token = self.codex.recover_unauthorized(token)
                if retry_token is not None:
                    _set_auth_headers(self.codex, request.headers)
                    yield request

        async def async_auth_flow(
            self, request: httpx.Request
        ) -> AsyncGenerator[httpx.Request, httpx.Response]:
            import anyio.to_thread  # httpx's own dependency: keeps refreshes off the event loop

            if self.codex.needs_refresh():
                token = await anyio.to_thread.run_sync(
                    _set_auth_headers, self.codex, request.headers
                )
            else:
                token = _set_auth_headers(self.codex, request.headers)
            origin = _origin(str(request.url))
            response = yield request
            if rejected(response, origin, token):
                retry_token = await anyio.to_thread.run_sync(
                    self.codex.recover_unauthorized, token
                )
                if retry_token is not None:
                    _set_auth_headers(self.codex, request.headers)
                    yield request

    return _HttpxAuth


# Optional stores #############################################################
# Everything below until the command line serves a store other than auth.json:
# choosing one (config.toml's setting, $CODEXAUTH_STORE), Codex's keyring entry,
# a Redis store shared by many machines, and push/pull between Redis and
# auth.json.  Each imports its library inside itself; a vendored copy used with
# auth.json alone never runs any of it.


# Optional stores: choosing the store #########################################


CONFIG_FILE_NAME = "config.toml"
_CODEX_STORES = ("file", "keyring", "auto", "ephemeral")


def _store_for(
    spec: str | Store | None,
    codex_home: StrPath | None,
    *,
    namespace: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Store:
    """The store `spec` names: a Store, "file", "keyring", "auto", or a Redis URL.

    Unset, CODEXAUTH_STORE decides, else Codex's own setting in config.toml
    (file by default); CODEXAUTH_NAMESPACE picks the login in a Redis store.
    """
    if isinstance(spec, Store):
        return spec
    home = _home(codex_home)
    spec = spec or os.environ.get(STORE_ENV_VAR)
    if spec is None:
        return _store_codex_uses(home)
    if spec in ("file", "keyring", "auto"):
        return _store_codex_uses(home, spec)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        namespace = namespace or os.environ.get(NAMESPACE_ENV_VAR) or DEFAULT_NAMESPACE
        return RedisStore(spec, codex_home, namespace=namespace, timeout=timeout)
    shown = _redact_url(spec) if "://" in spec else spec
    raise CodexAuthError(
        f"{STORE_ENV_VAR} must be file, keyring, auto, or a redis://, rediss:// or unix:// URL, "
        f"not {shown!r}"
    )


def _store_codex_uses(codex_home: str, choice: str | None = None) -> Store:
    """The store Codex uses for `codex_home`: `choice` (file, keyring, auto), else what
    config.toml says, as Codex decides (codex-rs/login/src/auth/storage.rs)."""
    secrets, config = False, os.path.join(codex_home, CONFIG_FILE_NAME)
    if choice is None:
        choice, secrets, config = _read_codex_store_setting(codex_home)
    if choice == "ephemeral":
        raise _ephemeral(config)
    if choice in ("keyring", "auto") and secrets:
        raise _secrets_unsupported(config)
    if choice == "keyring":
        return KeyringStore(codex_home)
    if choice == "auto":  # the keyring if it holds the login; otherwise, or on error, the file
        keyring = KeyringStore(codex_home)
        with contextlib.suppress(CodexAuthError):
            if keyring.read() is not None:
                return keyring
    return FileStore(codex_home)


def _read_codex_store_setting(codex_home: str) -> tuple[str, bool, str]:
    """(cli_auth_credentials_store, [features] secret_auth_storage, config path) from
    config.toml; ("file", False, path) when it says nothing about them.

    The bytes are looked at first, so the TOML parser is imported only for a
    config that names one of the two settings: a warm start stays cheap.
    """
    path = os.path.join(codex_home, CONFIG_FILE_NAME)
    # Followed if a symlink, as Codex reads it (dotfiles managers link it).  Anything
    # but a missing file or a regular one is refused, as Codex refuses it: a FIFO must
    # not hang us, and a directory is no config.
    try:
        with os.fdopen(_open_regular(path, os.O_RDONLY), "rb") as f:
            data = f.read(MAX_AUTH_FILE_BYTES)
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CodexAuthError(f"{path}: cannot read Codex's config: {reason}") from None
    if not data or (
        b"cli_auth_credentials_store" not in data and b"secret_auth_storage" not in data
    ):
        return "file", False, path
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover  # the `tomli` dependency, before 3.11
        _require_packages(f"reading {path}", ("tomli", *_refresh_packages()))
        import tomli as tomllib
    try:
        config = tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodexAuthError(f"{path}: not valid TOML ({str(exc).splitlines()[0][:80]})") from None
    store = config.get("cli_auth_credentials_store", "file")
    if store not in _CODEX_STORES:
        raise CodexAuthError(
            f"{path}: cli_auth_credentials_store must be one of {', '.join(_CODEX_STORES)}, "
            f"not {store!r}"
        )
    features = config.get("features")
    secrets = isinstance(features, dict) and features.get("secret_auth_storage") is True
    return store, secrets, path


def _secrets_unsupported(config: str) -> CodexAuthError:
    return CodexAuthError(
        f"Codex keeps this login encrypted (secret_auth_storage in {config}), which codexauth "
        'cannot read yet: set cli_auth_credentials_store = "file" and secret_auth_storage = '
        "false there, then run `codex login`"
    )


def _ephemeral(config: str) -> NotLoggedInError:
    return NotLoggedInError(
        f"Not logged in here: Codex keeps this login only in the memory of the running Codex "
        f'(cli_auth_credentials_store = "ephemeral" in {config}), out of any other '
        'program\'s reach; to share it, set it to "file" or "keyring" and sign in again'
    )


# Optional stores: the keyring ################################################
# Codex's other credential stores (`cli_auth_credentials_store` in config.toml):
# the OS keyring, `auto`, `ephemeral`, and the encrypted secrets file.  The
# keyring libraries are imported only here, when such a store is configured.

# Codex's keyring entry: this service, and an account named after CODEX_HOME
# (codex-rs/login/src/auth/storage.rs `compute_store_key`).
KEYRING_SERVICE = "Codex Auth"
# What keyring-rs 3.6.3 (the Codex CLI 0.171's) writes on Linux, so that an item
# created here is the one Codex searches for (its src/secret_service.rs).
_CODEX_KEYRING_TARGET = "default"
_CODEX_KEYRING_LABEL = "{account}@Codex Auth:default (keyring v3.6.3)"


def codex_keyring_account(codex_home: StrPath) -> str:
    """Codex's keyring account for `codex_home`: "cli|" and 16 hex digits of the SHA-256
    of its canonical path (symlinks resolved; the path as given if that fails)."""
    import hashlib  # deferred, as in _fingerprint

    given = os.path.abspath(os.path.expanduser(os.fspath(codex_home)))
    canonical = os.path.realpath(given) if os.path.exists(given) else given
    # Rust's to_string_lossy: bytes that are not UTF-8 become U+FFFD.
    text = os.fsencode(canonical).decode("utf-8", errors="replace")
    return "cli|" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class KeyringStore(Store):
    """The login in the OS keyring, in the very entry the Codex CLI reads and writes.

    The entry holds auth.json's document as compact JSON.  On Linux it is a
    Secret Service item with keyring-rs's attributes, found as keyring-rs finds
    it and updated in place: the `keyring` package's set_password would add a
    second item that Codex never reads.  Elsewhere the `keyring` package reads
    and writes the entry (not run here: see README).  Refreshes still take
    auth.lock in CODEX_HOME, which the Codex CLI takes too.
    """

    poll_interval = 0.1  # each look is a D-Bus round trip

    def __init__(self, codex_home: StrPath | None = None) -> None:
        self.local = FileStore(codex_home)  # the lock, the shared state and the outbox
        self.account = codex_keyring_account(self.local.codex_home)
        self.outbox = _Outbox(self.local, "codexauth-outbox-keyring.json")
        self.location = f"the keyring ({KEYRING_SERVICE!r}, {self.account!r})"
        self._snapshot: _Snapshot | None = None

    # The backend: Secret Service on Linux, the `keyring` package elsewhere.

    def _get(self) -> str | None:
        if _secret_service_platform():
            with self._secret_service() as items:
                return None if not items else self._item_text(items)
        text: str | None = self._keyring(lambda k: k.get_password(KEYRING_SERVICE, self.account))
        return text

    def _set(self, text: str) -> None:
        if _secret_service_platform():
            with self._secret_service(create=text) as items:
                if items:
                    self._unlocked(items[0]).set_secret(text.encode("utf-8"), "text/plain")
            return
        self._keyring(lambda k: k.set_password(KEYRING_SERVICE, self.account, text))

    def _remove(self) -> bool:
        if _secret_service_platform():
            with self._secret_service() as items:
                if items:
                    self._unlocked(items[0]).delete()
                return bool(items)

        def delete(keyring: Any) -> bool:
            try:
                keyring.delete_password(KEYRING_SERVICE, self.account)
            except keyring.errors.PasswordDeleteError:
                return False
            return True

        return bool(self._keyring(delete))

    @contextlib.contextmanager
    def _secret_service(self, create: str | None = None) -> Generator[list[Any], None, None]:
        """Codex's items for this account, as keyring-rs 3.6.3 finds them (its
        map_matching_items): by target, service and user in every collection, else
        by service and user in the default one; exactly one may match.  With
        `create`, a missing item is made with Codex's attributes and label."""
        try:
            import secretstorage  # deferred: only a keyring store on Linux needs it
            from jeepney.io.blocking import (  # type: ignore[import-untyped]  # no stubs
                open_dbus_connection,
            )
        except ImportError:
            raise CodexAuthError(
                f"{self.location} needs secretstorage and jeepney: "
                "python -m pip install secretstorage jeepney"
            ) from None
        try:
            connection = open_dbus_connection(bus=_session_bus_address())
        except (OSError, ValueError, KeyError) as exc:
            raise CodexAuthError(
                f"{self.location} is unreachable: no D-Bus session bus ({_one_line(exc)}); "
                "the Secret Service (gnome-keyring, KeePassXC) runs in a desktop session"
            ) from None
        try:
            secretstorage.util.add_match_rules(connection)  # as secretstorage.dbus_init
            codex = {"service": KEYRING_SERVICE, "username": self.account}
            items = list(
                secretstorage.search_items(connection, {"target": _CODEX_KEYRING_TARGET, **codex})
            )
            if not items:
                items = list(secretstorage.get_default_collection(connection).search_items(codex))
            if len(items) > 1:
                raise CodexAuthError(
                    f"{self.location} is matched by {len(items)} keyring items; the Codex CLI "
                    "reads none of them: delete all but Codex's own (seahorse shows them)"
                )
            if not items and create is not None:
                collection = secretstorage.get_default_collection(connection)
                self._unlocked(collection).create_item(
                    _CODEX_KEYRING_LABEL.format(account=self.account),
                    {"application": "rust-keyring", "target": _CODEX_KEYRING_TARGET, **codex},
                    create.encode("utf-8"),
                    replace=False,
                    content_type="text/plain",
                )
            yield items
        except secretstorage.exceptions.SecretServiceNotAvailableException as exc:
            raise CodexAuthError(
                f"{self.location} is unreachable: no Secret Service on the session bus "
                f"({_one_line(exc)})"
            ) from None
        except secretstorage.exceptions.LockedException:
            raise CodexAuthError(
                f"{self.location} is locked: unlock the keyring (sign in to the desktop session, "
                "or unlock it in seahorse) and try again"
            ) from None
        finally:
            connection.close()

    def _unlocked(self, thing: Any) -> Any:
        """An item or collection, unlocked if a prompt can do it (a desktop session)."""
        if thing.is_locked():
            import secretstorage

            dismissed = thing.unlock()  # True when the user dismissed the prompt
            if dismissed or thing.is_locked():
                raise secretstorage.exceptions.LockedException("locked")
        return thing

    def _item_text(self, items: list[Any]) -> str:
        data = self._unlocked(items[0]).get_secret()
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise AuthFileError(self.location, "the keyring entry is not UTF-8 text") from None

    def _keyring(self, action: Callable[[Any], Any]) -> Any:
        try:
            import keyring  # deferred: only a keyring store needs it
            import keyring.errors
        except ImportError:
            raise CodexAuthError(
                f"{self.location} needs keyring: python -m pip install keyring"
            ) from None
        try:
            return action(keyring)
        except keyring.errors.KeyringLocked:
            raise CodexAuthError(f"{self.location} is locked: unlock the keyring") from None
        except keyring.errors.KeyringError as exc:
            raise CodexAuthError(
                f"{self.location} is unreachable ({type(exc).__name__}: {_one_line(exc)})"
            ) from None

    # The Store interface.

    def read(self, *, force: bool = False) -> _Snapshot | None:
        if self._snapshot is not None and not force:
            return self._snapshot  # from memory while fresh: a keyring read is a round trip
        text = self._get()
        if text is None:
            self._snapshot = None
            return None
        try:
            auth = _parse_auth_bytes(text.encode("utf-8"))
        except ValueError as exc:
            raise AuthFileError(self.location, str(exc)) from None
        self._snapshot = _Snapshot(auth, _fingerprint(text), trusted=True)
        return self._snapshot

    def read_with_state(self, *, force: bool = True) -> tuple[_Snapshot | None, _SharedState]:
        # Always a round trip: a waiter must see a lockless peer's write, and nothing
        # cheaper tells whether the entry changed (a file has stat()).
        return self.read(force=True), self.local.local_state()

    def lock(self, timeout: float, done_elsewhere: Callable[[], bool]) -> _RefreshLock | None:
        return self.local.lock(timeout, done_elsewhere)

    def save(self, auth: AuthDotJson) -> None:
        # Compact, as Codex writes it (serde_json::to_string).
        self._set(json.dumps(_auth_to_json(auth), separators=(",", ":")))
        self._snapshot = None

    def delete(self) -> bool:
        self._snapshot = None
        return self._remove()

    def _save_state(self, state: _SharedState) -> None:
        self.local._save_state(state)

    def describe(self) -> dict[str, Any]:
        return {
            "store": "keyring",
            "keyring_service": KEYRING_SERVICE,
            "keyring_account": self.account,
            "lock_file": self.local.lock_location(),
        }


def _secret_service_platform() -> bool:
    """Whether keyring-rs (and so the Codex CLI) keeps the login in the Secret Service."""
    return sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))


def _session_bus_address() -> str:
    """The D-Bus session bus, found as the Codex CLI (zbus) finds it: jeepney alone
    does not look at $XDG_RUNTIME_DIR/bus."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return "unix:path=" + os.path.join(runtime, "bus")
    raise KeyError("DBUS_SESSION_BUS_ADDRESS")


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


# Optional stores: Redis ######################################################
# One login for many machines.  `import redis` happens only here, when a Redis
# store is configured: the file store's warm path never pays for it.

# The login hash's fields: `doc` (auth.json), `rt_sha256` and `account` (what a
# commit compares), `state` (what the fleet tells itself, about `rt_sha256`'s
# token), `version` (a counter for `status`; never compared), `by_*` (who wrote),
# and `logged_out` (a tombstone: a logout, unlike a restart or an eviction,
# must never be undone by a machine's outbox).

# Store.commit on Redis: compares the stored refresh token's fingerprint and account.
_REDIS_COMMIT = """
-- KEYS[1] = the login hash; ARGV: spent fingerprint ('' = save whatever is there),
-- account, auth.json, its refresh token's fingerprint, its account, host, pid
-- -> 1 written, 0 another login or a logout is there, 2 refilled an emptied store
local result = 1
if ARGV[1] ~= '' then
  if redis.call('HGET', KEYS[1], 'doc') then
    if redis.call('HGET', KEYS[1], 'rt_sha256') ~= ARGV[1]
        or redis.call('HGET', KEYS[1], 'account') ~= ARGV[2] or ARGV[2] == '' then
      return 0
    end
  elseif redis.call('HGET', KEYS[1], 'logged_out') then
    return 0
  else
    result = 2
  end
end
-- HDEL first: an ACL that refuses it must refuse before anything is written.
redis.call('HDEL', KEYS[1], 'state', 'logged_out')
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') + 1
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'version', version, 'doc', ARGV[3], 'rt_sha256', ARGV[4],
           'account', ARGV[5], 'by_host', ARGV[6], 'by_pid', ARGV[7], 'by_at', now[1])
return result
"""
# Store.record on Redis: the state is about one token, and written only while it is stored.
_REDIS_RECORD = """
-- KEYS[1] = the login hash; ARGV: fingerprint, state -> 1 written, 0 not stored any more
if redis.call('HGET', KEYS[1], 'rt_sha256') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
return 1
"""
# RedisStore.begin_request: announce the flight and make the lock outlast it, in one
# step fenced by the lock's owner and the stored token: a lapsed holder can do neither.
_REDIS_ANNOUNCE = """
-- KEYS[1] = the login hash, KEYS[2] = the lock; ARGV: owner, fingerprint, state, ttl ms
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'rt_sha256') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# A logout: the login goes, a tombstone stays (see above).
_REDIS_LOGOUT = """
local had = redis.call('HGET', KEYS[1], 'doc')
redis.call('DEL', KEYS[1])
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'logged_out', now[1])
if had then return 1 end
return 0
"""
# A commit after a request that Redis does not answer is tried again this often.
_REDIS_COMMIT_RETRY = 0.1


def _redact_url(url: str) -> str:
    """A store URL fit for messages: no password, whole or in part, anywhere.

    Not urllib's parser: a password holding '/' or '#' (base64 has '/') ends its
    netloc early and leaves the rest of the password in the path.  Everything
    up to the last '@' is the user part, and only the user name before its
    first ':' is kept; a `password` query option is dropped.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    userinfo, at, rest = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] if at else ""
    if any(c in user for c in "/?#"):
        user = ""  # the user part is not what it seems: show none of it
    head, _, query = rest.partition("?")
    kept = [o for o in query.split("&") if o and o.split("=", 1)[0].lower() != "password"]
    shown = f"{scheme}://{user + '@' if user else ''}{head}"
    return shown + (f"?{'&'.join(kept)}" if kept else "")


def _check_namespace(namespace: str) -> str:
    """A namespace can neither break out of the `codexauth:` key prefix nor its hash tag."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", namespace):
        raise CodexAuthError(
            f"{NAMESPACE_ENV_VAR} must be 1-64 letters, digits, '.', '_' or '-', not {namespace!r}"
        )
    return namespace


class RedisStore(Store):
    """The login in a Redis hash, shared by many machines: one refresh per fleet.

    Keys: ``codexauth:{NAMESPACE}:login`` (auth.json, a version, who wrote it,
    the shared state) and ``codexauth:{NAMESPACE}:lock`` (redis-py's Lock: a
    random owner token and a TTL).  The lock is taken after a per-machine file
    lock, so one process per machine talks to it.  Its TTL covers the request
    (see begin_request); the commit is a compare-and-set on the version.
    """

    def __init__(
        self,
        url: str,
        codex_home: StrPath | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.namespace = _check_namespace(namespace)
        base = f"codexauth:{{{self.namespace}}}"  # a hash tag: one Redis Cluster slot
        self.key, self.lock_key = f"{base}:login", f"{base}:lock"
        self.location = f"{_redact_url(url)} (namespace {self.namespace})"
        self.login_hint = "Run `codex login` on one machine, then `codexauth push` there."
        self.local = FileStore(codex_home)  # this machine's lock, outbox and clock offset
        self.outbox = _Outbox(
            self.local, f"codexauth-outbox-redis-{_fingerprint(self.location)}.json"
        )
        self._io_timeout = min(timeout, REDIS_IO_TIMEOUT)
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._snapshot: _Snapshot | None = None
        self._fields: dict[bytes, bytes] = {}
        self.lost = False  # the last read found the hash emptied, with no tombstone
        self.wake_channel = f"{base}:wake"
        self._pubsub: Any = None  # subscribed to wake_channel once this process waits
        self._held: Any = None  # the fleet lock while this process holds it
        self._owner_token = b""  # the fleet lock's owner token, while held
        self._flight_end = 0.0  # monotonic: until when peers wait for our request's answer

    def _redis(self) -> Any:
        if self._client is None:
            try:
                import redis  # deferred: costs ~90 ms and only a Redis store needs it
                from redis.backoff import NoBackoff
                from redis.retry import Retry
            except ImportError:
                raise CodexAuthError(
                    f"{self.location} needs redis-py: python -m pip install 'redis>=4.4'"
                ) from None
            # Both timeouts, and no retries: redis-py's defaults differ by version,
            # from blocking forever to ten retries with backoff.
            options: dict[str, Any] = {
                "socket_timeout": self._io_timeout,
                "socket_connect_timeout": self._io_timeout,
                "retry": Retry(NoBackoff(), 0),
                "health_check_interval": 0,
            }
            try:
                self._client = redis.Redis.from_url(self.url, **options)
            except (ValueError, TypeError, IndexError):
                # redis-py's message quotes the URL's parts, a password's among them.
                raise CodexAuthError(
                    f"the login store {self.location} has a URL redis-py cannot read: check "
                    "its host, port and options; a password with '/', '@', ':', '?' or '#' "
                    "must be percent-encoded"
                ) from None
            for name, script in (
                ("commit", _REDIS_COMMIT),
                ("record", _REDIS_RECORD),
                ("announce", _REDIS_ANNOUNCE),
                ("logout", _REDIS_LOGOUT),
            ):
                self._scripts[name] = self._client.register_script(script)
        return self._client

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self._redis()
        return self._call(lambda r: self._scripts[name](keys=keys, args=args))

    def _call(self, action: Callable[[Any], Any]) -> Any:
        """Run `action(client)`; Redis's failures become ours, naming the store, no secret."""
        client = self._redis()
        import redis.exceptions as errors

        try:
            return action(client)
        except errors.AuthenticationError:
            # A ConnectionError to redis-py, but no retry can help: the URL is wrong.
            raise CodexAuthError(
                f"the login store {self.location} refused the user name or password in its URL"
            ) from None
        except (errors.ConnectionError, errors.TimeoutError, errors.ReadOnlyError) as exc:
            failure = f"the login store {self.location} is unreachable ({type(exc).__name__})"
            raise StoreUnreachableError(failure) from None
        except errors.NoPermissionError:
            raise self._acl_error() from None
        except errors.RedisError as exc:
            refused = ("NOPERM", "can't run this command", "no permissions to run")
            if any(words in str(exc) for words in refused):  # the ACL refused a script's command
                raise self._acl_error() from None
            raise StoreUnreachableError(
                f"the login store {self.location} failed ({type(exc).__name__})"
            ) from None

    # Waking waiters: whoever changes the login publishes; waiters listen, and look
    # anyway every poll_interval (a lost message, an ACL without pub/sub).

    poll_interval = REDIS_WAKE_POLL
    wake_interval = (REDIS_WAKE_POLL, REDIS_WAKE_POLL)

    def _publish(self) -> None:
        with contextlib.suppress(CodexAuthError):
            self._call(lambda r: r.publish(self.wake_channel, b"1"))

    def pause(self, seconds: float) -> None:
        self._subscribe()
        if self._pubsub is False:
            time.sleep(seconds)
            return
        try:
            self._call(lambda r: self._pubsub.get_message(timeout=seconds))
        except CodexAuthError:
            time.sleep(seconds)

    def _subscribe(self) -> None:
        """Listen for wake-ups from here on (before the first look, so none is missed)."""
        if self._pubsub is None:
            try:
                pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
                self._call(lambda r: pubsub.subscribe(self.wake_channel))
                self._pubsub = pubsub
            except CodexAuthError:
                self._pubsub = False  # no pub/sub here: poll

    def _acl_error(self) -> CodexAuthError:
        return CodexAuthError(
            f"the login store {self.location} refused a command: its ACL user needs the "
            "commands README's 'Many machines' section lists"
        )

    # Reading: from memory while this process holds a snapshot, else one round trip.

    def read(self, *, force: bool = False) -> _Snapshot | None:
        if self._snapshot is not None and not force:
            return self._snapshot
        return self.read_with_state()[0]

    def read_with_state(self, *, force: bool = True) -> tuple[_Snapshot | None, _SharedState]:
        """The login, its fleet state and any announced flight: one HGETALL."""
        fields: dict[bytes, bytes] = self._call(lambda r: r.hgetall(self.key))
        self._fields = fields
        state = _SharedState.from_json(fields.get(b"state"))
        doc = fields.get(b"doc")
        self.lost = doc is None and b"logged_out" not in fields
        if doc is None:
            self._snapshot = None
            return None, state
        try:
            auth = _parse_auth_bytes(doc)
        except ValueError as exc:
            raise AuthFileError(self.location, str(exc)) from None
        self._snapshot = _Snapshot(auth, int(fields.get(b"version", b"0")), trusted=True)
        return self._snapshot, state

    # The lock: this machine's file lock, then the fleet's.

    def lock(self, timeout: float, done_elsewhere: Callable[[], bool]) -> _FleetLock | None:
        deadline = time.monotonic() + timeout
        local = self._local_lock()
        self._subscribe()
        if not local.acquire(timeout, done_elsewhere, self):
            return None
        taken: list[Any] = []

        def take() -> bool:
            taken.append(self._try_fleet_lock())
            return taken[-1] is not None

        holder = f"another machine to finish refreshing ({self.location})"
        try:
            left = max(deadline - time.monotonic(), 0.0)
            if _wait_for(take, done_elsewhere, left, holder, self.pause, *self.wake_interval):
                self._held = taken[-1]
                return _FleetLock(local, taken[-1], self)
        except BaseException:
            local.release()
            raise
        local.release()
        return None

    def _try_fleet_lock(self) -> Any:
        """The fleet lock, newly taken for this attempt in this thread; None if held elsewhere."""
        # A new Lock each time: redis-py keeps the owner token thread-local.
        fleet = self._redis().lock(self.lock_key, timeout=REDIS_LOCK_IDLE_TTL)
        token = os.urandom(16).hex()  # not redis-py's uuid1: no MAC address, no clock
        if not self._call(lambda r: fleet.acquire(blocking=False, token=token)):
            return None
        self._owner_token = token.encode()
        return fleet

    def _local_lock(self) -> _RefreshLock:
        directory = self.local.sidecar_dir(create=True)
        name = f".codexauth-fleet-{_fingerprint(self.location)}.lock"
        return _RefreshLock(os.path.join(directory, name), "", self.local.owner())

    def begin_request(self, stored: str, seconds: float) -> None:
        """Announce the request and make the lock outlast it, in one step fenced by our
        ownership of the lock and the stored token: a holder whose lock lapsed sends nothing."""
        flight = seconds + REDIS_LOCK_MARGIN + REDIS_FLIGHT_GRACE
        fingerprint = stored
        state = _SharedState(fingerprint, sent_until=time.time() + flight).to_json()
        ttl = int((seconds + REDIS_LOCK_MARGIN) * 1000)
        args = [self._owner_token, fingerprint, state, ttl]
        if not self._script("announce", [self.key, self.lock_key], args):
            raise LockTimeoutError(
                f"{REFRESH_FAILED} lost the fleet lock before the request "
                f"({self.location}); nothing was sent"
            )
        self._flight_end = time.monotonic() + flight

    def _release(self, fleet: Any) -> None:
        from redis.exceptions import LockError

        self._held, self._flight_end, self._owner_token = None, 0.0, b""
        # Lapsed while we were paused: our commit stood on the stored token, not the lock.
        with contextlib.suppress(LockError, StoreUnreachableError, CodexAuthError):
            self._call(lambda r: fleet.release())

    # Writing: one script compares the stored token and writes, in one step.

    def commit(
        self, spent: str, account: str | None, new: AuthDotJson
    ) -> tuple[bool, _Snapshot | None]:
        """While peers wait for our request's answer, a Redis that does not answer is
        tried again, so that a restart does not make them spend the token again."""
        end, self._flight_end = self._flight_end, 0.0
        while True:
            try:
                done = self._write(spent, account or "", new)
            except StoreUnreachableError:
                if time.monotonic() + _REDIS_COMMIT_RETRY >= end:
                    raise
                time.sleep(_REDIS_COMMIT_RETRY)
                continue
            if done == 2:
                _log(
                    _WARNING,
                    "%s was empty (restarted without persistence, or evicted): stored this "
                    "machine's refreshed login in it again",
                    self.location,
                )
            if done:
                return True, None
            return False, self.read(force=True)

    def save(self, auth: AuthDotJson) -> None:
        self._write("", "", auth)

    def _write(self, spent: str, account: str, auth: AuthDotJson) -> int:
        import socket  # deferred: only a commit names its host

        tokens = auth.tokens
        fingerprint = "" if tokens is None else _fingerprint(tokens.refresh_token)
        its_account = (None if tokens is None else _account(tokens)) or ""
        args: list[object] = [spent, account, _serialize_auth(auth), fingerprint, its_account]
        args += [socket.gethostname(), os.getpid()]
        done = int(self._script("commit", [self.key], args))
        self._snapshot = None  # the next read sees what is there now
        if done:
            self._publish()
        return done

    def delete(self) -> bool:
        self._snapshot = None
        removed = bool(self._script("logout", [self.key], []))
        self._publish()
        return removed

    def record(self, refresh_token: str, **facts: Any) -> None:
        state = _SharedState(_fingerprint(refresh_token), **facts)
        try:
            self._script("record", [self.key], [state.fingerprint, state.to_json()])
        except CodexAuthError as exc:
            _log(_WARNING, "could not tell peers: %s", exc)
            return
        self._publish()

    def describe(self) -> dict[str, Any]:
        if not self._fields:
            with contextlib.suppress(CodexAuthError):
                self.read(force=True)
        info: dict[str, Any] = {"store": _redact_url(self.url), "namespace": self.namespace}
        host, pid, at = (self._fields.get(k) for k in (b"by_host", b"by_pid", b"by_at"))
        if host and pid and at:
            when = _moment(int(at) * _US)
            info["last_refreshed_by"] = f"{host.decode('utf-8', 'replace')} pid {pid.decode()}"
            info["last_refreshed_at"] = _format_rfc3339(when)
        warnings = self._durability_warnings()
        if warnings:
            info["warnings"] = warnings
        return info

    def _durability_warnings(self) -> list[str]:
        """What in the server's settings can lose the login, where the ACL lets us look."""

        def setting(name: str) -> str | None:
            try:
                found: dict[str, str] = self._call(lambda r: r.config_get(name))
            except CodexAuthError:
                return None  # CONFIG is not for every ACL user: say nothing
            value = found.get(name)
            return None if value is None else str(value)

        warnings = []
        policy = setting("maxmemory-policy")
        if policy is not None and policy.startswith("allkeys-"):
            warnings.append(
                f"maxmemory-policy is {policy}: Redis may evict the login under memory "
                "pressure (use noeviction, or a volatile-* policy: the login has no TTL)"
            )
        if setting("appendonly") == "no":
            warnings.append(
                "appendonly is no: a restart may lose the last refresh (only the machine "
                "that made it can store it again); enable AOF"
            )
        return warnings


class _FleetLock:
    """This machine's file lock and the fleet's Redis lock, released in reverse order."""

    def __init__(self, local: _RefreshLock, fleet: Any, store: RedisStore) -> None:
        self._local, self._fleet, self._store = local, fleet, store

    def release(self) -> None:
        try:
            self._store._release(self._fleet)
        finally:
            self._local.release()


# Optional stores: push and pull ##############################################


def _cmd_push(auth: CodexAuth, args: Any) -> int:
    fleet, local = _fleet_and_local(auth, "push")
    snapshot = local.read(force=True)
    if snapshot is None or snapshot.auth.mode is None:
        raise _not_logged_in(local.location)
    ours = snapshot.auth
    last = _fleet_marks(local).get(fleet.location)
    with fleet.locked(auth.lock_timeout):
        held = fleet.read(force=True)
        theirs = None if held is None else held.auth
        if theirs == ours:
            print(f"{_printable(fleet.location)} holds this login already.")
            return EXIT_OK
        if theirs is not None and not args.force and not _may_replace(theirs, ours, last):
            raise CodexAuthError(
                f"refusing to push: {fleet.location} holds another or a newer login than the "
                "one this machine last pulled or pushed (`codexauth pull` takes it; "
                "`push --force` replaces it)"
            )
        fleet.save(ours)
    _mark_fleet(local, fleet, ours)
    print(f"Pushed the login in {_printable(local.location)} to {_printable(fleet.location)}.")
    return EXIT_OK


def _cmd_pull(auth: CodexAuth, args: Any) -> int:
    fleet, local = _fleet_and_local(auth, "pull")
    if not args.force and _pushed_a_local_refresh(auth, fleet, local):
        return EXIT_OK
    login = auth.ensure_valid(args.min_valid)
    _makedirs_private(local.codex_home)
    with local.locked(auth.lock_timeout):
        local.save(login)
    _mark_fleet(local, fleet, login)
    expiry = auth.access_token_expiry() if login.mode is AuthMode.CHATGPT else None
    when = f"; the access token expires at {_format_rfc3339(expiry)}" if expiry else ""
    print(f"Pulled the login from {_printable(fleet.location)} into {local.location}{when}.")
    return EXIT_OK


def _pushed_a_local_refresh(auth: CodexAuth, fleet: Store, local: FileStore) -> bool:
    """pull's guard: auth.json here must not have changed since this machine last pulled
    or pushed, or pulling would put back what it replaced (a token the local Codex CLI
    spent).  A later login of the same account, over the one the store still holds, is
    pushed instead (True); anything else is refused."""
    try:
        mine = local.read(force=True)
    except AuthFileError:
        mine = None  # a broken file is not a login to keep
    last = _fleet_marks(local).get(fleet.location)
    ours = None if mine is None else mine.auth
    if ours is None or ours.tokens is None or _fingerprint(ours.tokens.refresh_token) == last:
        return False  # nothing here, an API key, or what this machine last pulled or pushed
    with fleet.locked(auth.lock_timeout):
        held = fleet.read(force=True)
        theirs = None if held is None else held.auth
        if theirs == ours:
            return False
        if theirs is None or not _may_replace(theirs, ours, last):
            raise CodexAuthError(
                f"refusing to pull: {local.location} changed since this machine last pulled "
                f"or pushed, and {fleet.location} does not hold what it replaced "
                "(`codexauth push` sends it to the store; `pull --force` replaces it)"
            )
        fleet.save(ours)
    _mark_fleet(local, fleet, ours)
    print(
        f"{_printable(local.location)} holds a later login than {_printable(fleet.location)} "
        "(the Codex CLI here refreshed it): pushed it instead of pulling."
    )
    return True


def _fleet_and_local(auth: CodexAuth, command: str) -> tuple[Store, FileStore]:
    if isinstance(auth.store, FileStore):
        raise CodexAuthError(
            f"`{command}` copies a login between auth.json and a shared store: name one with "
            f"--store or ${STORE_ENV_VAR} (a redis://, rediss:// or unix:// URL)"
        )
    return auth.store, FileStore(auth.codex_home)


def _may_replace(theirs: AuthDotJson, ours: AuthDotJson, last: str | None) -> bool:
    """The store holds what this machine last pulled or pushed, for the same account: the
    Codex CLI here has refreshed since, and its tokens are the newer ones."""
    if theirs.tokens is None or ours.tokens is None or last is None:
        return False
    same_account = _account(theirs.tokens) == _account(ours.tokens)
    return same_account and _fingerprint(theirs.tokens.refresh_token) == last


def _fleet_marks(local: FileStore) -> dict[str, str]:
    """Per store: the refresh token (a digest) this machine last pulled or pushed."""
    data = _read_sidecar(os.path.join(local.sidecar_dir(create=False), FLEET_FILE_NAME))
    try:
        marks = json.loads(data or b"{}")
    except ValueError:
        return {}
    return (
        {k: v for k, v in marks.items() if isinstance(v, str)} if isinstance(marks, dict) else {}
    )


def _mark_fleet(local: FileStore, fleet: Store, login: AuthDotJson) -> None:
    if login.tokens is None:
        return
    marks = _fleet_marks(local)
    marks[fleet.location] = _fingerprint(login.tokens.refresh_token)
    path = os.path.join(local.sidecar_dir(create=True), FLEET_FILE_NAME)
    _write_sidecar(path, json.dumps(marks).encode("utf-8"), local.owner())


# CLI #########################################################################

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_LOGGED_IN = 3
EXIT_PERMANENT = 4
EXIT_TRANSIENT = 5
# What each exit code means, for --help (README has the same table).
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_ERROR: "error",
    EXIT_USAGE: "usage",
    EXIT_NOT_LOGGED_IN: "not logged in",
    EXIT_PERMANENT: "sign in again (permanent)",
    EXIT_TRANSIENT: "try again (transient)",
}

# What the CLI accepts: `login --api-key`'s line, and `demo -n`'s process count.
MAX_API_KEY_BYTES = 4096
MAX_DEMO_PROCESSES = 256


def _exit_code(exc: CodexAuthError) -> int:
    """The exit-code table, in one place."""
    if isinstance(exc, NotLoggedInError):
        return EXIT_NOT_LOGGED_IN
    if isinstance(exc, PermanentRefreshError):
        return EXIT_PERMANENT
    if isinstance(exc, TransientRefreshError):
        return EXIT_TRANSIENT
    return EXIT_ERROR


def _status(auth: CodexAuth) -> dict[str, Any]:
    """What `codexauth status` reports; never a token, only fingerprints."""
    info: dict[str, Any] = {
        "logged_in": False,
        "mode": None,
        "email": None,
        "plan": None,
        "account_id": None,
        "access_token_expires_at": None,
        "access_token_fingerprint": None,
        "last_refresh": None,
        "refresh_due": None,
        "auth_file": os.path.join(auth.codex_home, AUTH_FILE_NAME),
        "lock_file": None,
        **auth.store.describe(),
    }
    data = auth.get_current_auth_json()
    if data is None or data.mode is None:
        return info
    info.update(logged_in=True, mode=data.mode.value, refresh_due=auth.needs_refresh())
    if data.last_refresh is not None:
        info["last_refresh"] = _format_rfc3339(data.last_refresh)
    if data.tokens is not None:
        tokens = data.tokens
        expiry = auth.access_token_expiry()
        info.update(
            email=tokens.id_token.email,
            plan=tokens.id_token.chatgpt_plan_type,
            account_id=_account(tokens),
            access_token_expires_at=expiry and _format_rfc3339(expiry),
            access_token_fingerprint=_fingerprint(tokens.access_token)[:8],
        )
    return info


def _print_status(info: dict[str, Any], store: Store) -> None:
    if not info["logged_in"]:
        print(_printable(str(_not_logged_in(store.location, hint=store.login_hint))))
        for warning in info.get("warnings", []):  # why a store may be empty
            print(f"{'Warning:':<19}{_printable(warning)}")
        return
    labels = [
        ("mode", "Mode"),
        ("email", "Email"),
        ("plan", "Plan"),
        ("account_id", "Account"),
        ("access_token_expires_at", "Token expires"),
        ("access_token_fingerprint", "Token fingerprint"),
        ("last_refresh", "Last refresh"),
        ("refresh_due", "Refresh due"),
        ("store", "Store"),
        ("keyring_service", "Keyring service"),
        ("keyring_account", "Keyring account"),
        ("namespace", "Namespace"),
        ("last_refreshed_by", "Refreshed by"),
        ("last_refreshed_at", "Refreshed at"),
        ("auth_file", "auth.json"),
        ("lock_file", "Lock file"),
    ]
    for key, label in labels:
        value = info.get(key)
        if value is None or (key == "store" and value == "file"):  # auth.json says it
            continue
        shown = ("yes" if value else "no") if isinstance(value, bool) else _printable(value)
        if key in ("access_token_expires_at", "last_refresh", "last_refreshed_at"):
            shown = f"{value} ({_relative(_parse_rfc3339(value) / _US - time.time())})"
        print(f"{label + ':':<19}{shown}")
    for warning in info.get("warnings", []):
        print(f"{'Warning:':<19}{_printable(warning)}")


def _printable(text: str) -> str:
    """`text` with each unprintable character escaped as Python would (``\\x1b``, ``\\n``).

    The id_token's claims and the paths are not ours: a newline, an ANSI escape,
    a bidi override or a lone surrogate in them must not forge or garble output.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _relative(seconds: float) -> str:
    """'in 4 min' or '2 h ago', for people reading a timestamp."""
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if span >= size:
            amount = f"{span // size:.0f} {unit}"
            break
    else:
        amount = f"{span:.0f} s"
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"


_GLOBAL_DEFAULTS: dict[str, Any] = {
    "codex_home": None,
    "store": None,
    "namespace": None,
    "timeout": DEFAULT_TIMEOUT,
    "lock_timeout": DEFAULT_LOCK_TIMEOUT,
    "verbose": False,
    "quiet": False,
}


def _add_global_options(parser: Any, defaults: bool) -> None:
    """The options every command takes, before the command or after it.

    After it (`codexauth token --codex-home X`) they default to SUPPRESS, so that a
    subcommand sets only what was given there.  Each parser gets its own copies: argparse
    shares a parent's action objects, and set_defaults() on one would leak into the other.
    """
    import argparse

    parser.argument_default = None if defaults else argparse.SUPPRESS
    parser.add_argument(
        "--codex-home",
        metavar="PATH",
        help="directory holding auth.json (default: $CODEX_HOME or ~/.codex)",
    )
    parser.add_argument(
        "--store",
        type=_store_option,
        metavar="URL",
        help="where the login lives: file (auth.json), keyring, auto, or a redis://, "
        "rediss:// or unix:// URL shared by many machines (default: "
        f"${STORE_ENV_VAR}, else what Codex's config.toml says, else file)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NAME",
        help=f"which login in a Redis store (default: ${NAMESPACE_ENV_VAR}, else "
        f"{DEFAULT_NAMESPACE!r})",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"limit for connecting, each wait for the server, and the response body "
        f"(default {DEFAULT_TIMEOUT:g}); response headers that trickle in can take longer",
    )
    parser.add_argument(
        "--lock-timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"limit for waiting on another process's refresh (default {DEFAULT_LOCK_TIMEOUT:g})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug log to stderr (no tokens)"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no notice on a terminal while waiting for another process's refresh",
    )
    parser.argument_default = None  # the command's own options keep their defaults
    if defaults:
        parser.set_defaults(**_GLOBAL_DEFAULTS)  # shared with main()'s fast path


def _build_parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="codexauth",
        description="Use the Codex CLI's ChatGPT login (auth.json) safely from scripts.",
        epilog="Exit codes: " + ", ".join(f"{c} {m}" for c, m in EXIT_CODES.items()) + ".",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        """A subcommand whose own --help opens with its line in the command list."""
        sub = commands.add_parser(name, help=summary, description=summary)
        _add_global_options(sub, defaults=False)
        return sub

    token = command("token", "print a fresh bearer token (refreshing if due)")
    token.add_argument("--json", action="store_true", help="token, mode and expiry as JSON")
    command("header", 'print "Authorization: Bearer ..." for curl -H')
    command("refresh", "refresh now (waits for, or adopts, a peer's refresh)")
    status = command("status", "who is logged in, plan, expiry (no tokens)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    logout = command("logout", "revoke the token and delete auth.json, like `codex logout`")
    logout.add_argument(
        "--keep-token", action="store_true", help="only delete auth.json; revoke nothing"
    )
    push = command("push", "copy the login in auth.json into the shared store (Redis)")
    push.add_argument(
        "--force", action="store_true", help="replace whatever login the store holds"
    )
    pull = command("pull", "write the shared store's login into auth.json, for the Codex CLI")
    pull.add_argument(
        "--force",
        action="store_true",
        help="replace auth.json even if it changed since this machine last pulled or pushed",
    )
    pull.add_argument(
        "--min-valid",
        type=_seconds,
        default=REFRESH_WINDOW,
        metavar="SECONDS",
        help="refresh first (once for the fleet) if the access token has less than this left "
        f"(default {REFRESH_WINDOW:g})",
    )
    login = command("login", "store an API key read from stdin")
    login.add_argument(
        "--api-key", action="store_true", required=True, help="read the key from stdin"
    )
    demo = command("demo", "race N processes on an expired login against a local endpoint")
    demo.add_argument(
        "-n",
        "--processes",
        type=_process_count,
        default=16,
        metavar="N",
        help=f"how many processes (1 to {MAX_DEMO_PROCESSES}, default 16)",
    )
    return parser


def _seconds(text: str) -> float:
    """argparse type for a positive number of seconds (bad input is a usage error)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _store_option(text: str) -> str:
    """argparse type for --store, so that a bad one is a usage error (exit 2); the same
    rule as _store_for's, which checks $CODEXAUTH_STORE (exit 1, naming the variable)."""
    import argparse

    schemes = ("redis://", "rediss://", "unix://")
    if text in ("file", "keyring", "auto") or text.startswith(schemes):
        return text
    shown = _redact_url(text) if "://" in text else text
    raise argparse.ArgumentTypeError(
        f"expected file, keyring, auto, or a redis://, rediss:// or unix:// URL, not {shown!r}"
    )


def _process_count(text: str) -> int:
    """argparse type for demo's process count (bad input is a usage error)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_DEMO_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"expected 1 to {MAX_DEMO_PROCESSES} processes, got {text!r}"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    """The `codexauth` command; returns the exit code."""
    try:
        try:
            return _main(argv)
        finally:
            # Flushed here, not at exit: there a reader gone away (`codexauth token |
            # head -c0`) would print "Exception ignored ... BrokenPipeError", exit 120.
            if sys.stdout is not None:  # None under pythonw
                sys.stdout.flush()
    except BrokenPipeError:
        # Quietly, as the Python docs' note on SIGPIPE advises: output goes to
        # devnull so that the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["token"]:
        # Scripts call this in loops; building the parser costs more than the rest.
        args: Any = types.SimpleNamespace(command="token", json=False, **_GLOBAL_DEFAULTS)
    else:
        args = _build_parser().parse_args(argv)
    if args.verbose:
        _log_verbosely()
    try:
        return _run(args)
    except CodexAuthError as exc:
        print(f"codexauth: {_printable(str(exc))}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        return 130


class _OneLine:
    """A dependency's log record as one line, without what its arguments may carry; our
    own records are left to our handler."""

    def filter(self, record: Any) -> bool:
        if record.name == "codexauth" or record.name.startswith("codexauth."):
            return False
        first = (str(record.msg).splitlines() or [""])[0][:160]
        record.msg, record.args = f"({record.name}) {first}", None
        return True


def _log_verbosely() -> None:
    """--verbose: codexauth's own lines, and a dependency's warnings only as one line of
    its message's text (redis-py's can span lines and name its connection).  Once per
    process: main() may run many times in one."""
    import logging

    root, own = logging.getLogger(), logging.getLogger("codexauth")
    if any(isinstance(f, _OneLine) for h in root.handlers for f in h.filters):
        return
    ours = logging.StreamHandler(sys.stderr)
    ours.setFormatter(logging.Formatter("codexauth: %(message)s"))
    own.setLevel(logging.DEBUG)
    own.addHandler(ours)
    theirs = logging.StreamHandler(sys.stderr)
    theirs.setFormatter(logging.Formatter("codexauth: %(message)s"))
    theirs.addFilter(_OneLine())
    root.addHandler(theirs)
    root.setLevel(logging.WARNING)


def _run(args: Any) -> int:
    global _wait_notice
    if args.command == "demo":
        return _demo(args.processes)
    auth = CodexAuth(
        args.codex_home,
        store=args.store,
        namespace=args.namespace,
        timeout=args.timeout,
        lock_timeout=args.lock_timeout,
    )
    if args.quiet or sys.stderr is None or not sys.stderr.isatty():
        return _COMMANDS[args.command](auth, args)
    _wait_notice = _notice_to_terminal(auth)
    try:
        return _COMMANDS[args.command](auth, args)
    finally:
        _wait_notice = None


def _notice_to_terminal(auth: CodexAuth) -> Callable[[str], None]:
    """The one line a person at a terminal sees while another process refreshes."""

    def notice(holder: str) -> None:
        who = ""
        if isinstance(auth.store, FileStore):
            pid = _flock_holder(auth.store.lock_location())
            if pid is not None:
                who = f": pid {pid}{_process_name(pid)}"
        print(
            f"codexauth: waiting up to {auth.lock_timeout:g} s for {_printable(holder)}{who}",
            file=sys.stderr,
            flush=True,
        )

    return notice


def _flock_holder(path: str) -> int | None:
    """The pid holding an flock on `path`, from Linux's /proc/locks; None if not known.

    A lock taken by a process in another PID namespace (a container) shows no pid.
    """
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters show "->" first.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            with contextlib.suppress(ValueError):
                pid = int(fields[4])
                return pid if pid > 0 else None
    return None


def _process_name(pid: int) -> str:
    """' (name)' of process `pid` where Linux tells it, else ''."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f" ({_printable(f.read().strip())})"
    except OSError:
        return ""


def _cmd_token(auth: CodexAuth, args: Any) -> int:
    token = auth.get_token()
    if not args.json:
        print(token)
        return EXIT_OK
    mode = auth.mode
    expiry = auth.access_token_expiry() if mode is AuthMode.CHATGPT else None
    doc = {"token": token, "mode": mode.value, "expires_at": expiry and _format_rfc3339(expiry)}
    print(json.dumps(doc))
    return EXIT_OK


def _cmd_header(auth: CodexAuth, args: Any) -> int:
    print(f"Authorization: Bearer {auth.get_token()}")
    return EXIT_OK


def _cmd_refresh(auth: CodexAuth, args: Any) -> int:
    auth.refresh_token()
    if auth.mode is AuthMode.API_KEY:
        print("Nothing to refresh: the login is an API key.")
        return EXIT_OK
    expiry = auth.access_token_expiry()
    when = f" The access token expires at {_format_rfc3339(expiry)}." if expiry else ""
    print(f"Refreshed.{when}")
    return EXIT_OK


def _cmd_status(auth: CodexAuth, args: Any) -> int:
    info = _status(auth)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_status(info, auth.store)
    return EXIT_OK if info["logged_in"] else EXIT_NOT_LOGGED_IN


def _cmd_logout(auth: CodexAuth, args: Any) -> int:
    if not args.verbose:  # the one-line warning below says it; no second copy from logging
        import logging

        logging.getLogger("codexauth").addHandler(logging.NullHandler())
    removed = auth.logout(revoke=not args.keep_token)
    if auth.revoke_error is not None:
        print(f"codexauth: warning: {auth.revoke_error}", file=sys.stderr)
    print("Logged out." if removed else "Not logged in.")
    return EXIT_OK


def _cmd_login(auth: CodexAuth, args: Any) -> int:
    login_with_api_key(auth.codex_home, _read_api_key())
    print(f"Stored the API key in {os.path.join(auth.codex_home, AUTH_FILE_NAME)}.")
    return EXIT_OK


_COMMANDS: dict[str, Callable[[CodexAuth, Any], int]] = {
    "token": _cmd_token,
    "header": _cmd_header,
    "refresh": _cmd_refresh,
    "status": _cmd_status,
    "logout": _cmd_logout,
    "login": _cmd_login,
    "push": _cmd_push,
    "pull": _cmd_pull,
}


def _read_api_key() -> str:
    """The first line of stdin, which must be printable ASCII without spaces.

    Read as bytes: decoding would turn invalid UTF-8 into lone surrogates (or
    fail with a traceback) instead of a clear error.
    """
    stdin: IO[bytes] | None = getattr(sys.stdin, "buffer", None)  # None: stdin closed
    if stdin is None:
        raise CodexAuthError("no standard input to read the API key from")
    line = stdin.readline(MAX_API_KEY_BYTES + 2)
    key = line[:-1] if line.endswith(b"\n") else line
    key = key[:-1] if key.endswith(b"\r") else key
    if not key:
        raise CodexAuthError("no API key on standard input")
    if len(key) > MAX_API_KEY_BYTES or not all(0x21 <= byte <= 0x7E for byte in key):
        raise CodexAuthError(
            "the API key must be one line of printable ASCII, with no spaces or control "
            f"characters (at most {MAX_API_KEY_BYTES} bytes)"
        )
    return key.decode("ascii")


def _demo(processes: int) -> int:
    """Show the guarantee: N processes, one expired login, one refresh request."""
    import subprocess
    import tempfile
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts: list[str] = []
    valid = {"demo-refresh-0"}
    import threading  # deferred: only the demo serves

    guard = threading.Lock()

    class Endpoint(BaseHTTPRequestHandler):
        """A loopback token endpoint that rotates refresh tokens like the real one."""

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with guard:
                posts.append("post")
                old = body.get("refresh_token")
                if old in valid:
                    valid.discard(old)
                    new = f"demo-refresh-{len(posts)}"
                    valid.add(new)
                    exp = int(time.time()) + 3600
                    status = 200
                    reply: dict[str, Any] = {
                        "access_token": _demo_jwt({"exp": exp, "n": len(posts)}),
                        "refresh_token": new,
                    }
                else:
                    status, reply = 401, {"error": {"code": "refresh_token_reused"}}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as home:
            expired = TokenData(
                parse_id_token(_demo_jwt({"email": "demo@example.com"})),
                _demo_jwt({"exp": int(time.time()) - 60}),
                "demo-refresh-0",
                "demo-account",
            )
            save_auth(
                home, AuthDotJson(tokens=expired, last_refresh=_moment(round(time.time() * _US)))
            )
            env = dict(os.environ, CODEX_HOME=home)
            env[REFRESH_TOKEN_URL_OVERRIDE_ENV_VAR] = (
                f"http://127.0.0.1:{server.server_port}/oauth/token"
            )
            command = [sys.executable, os.path.abspath(__file__), "token"]
            print(f"Starting {processes} processes at once on one expired login...")
            started = time.monotonic()
            children = [
                subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(processes)
            ]
            results = [child.communicate(timeout=120) for child in children]
            elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    tokens = {out.strip() for out, _ in results}
    failed = sum(child.returncode != 0 for child in children)
    print(f"  processes:         {processes} ({failed} failed)")
    print(f"  refresh requests:  {len(posts)}")
    print(f"  distinct tokens:   {len(tokens)}")
    print(f"  wall time:         {elapsed:.2f} s")
    ok = failed == 0 and len(posts) == 1 and len(tokens) == 1
    print("OK: one refresh, every process got the same new token." if ok else "FAILED")
    return EXIT_OK if ok else EXIT_ERROR


def _demo_jwt(claims: dict[str, Any]) -> str:
    def encode(value: object) -> str:
        import base64  # the demo's own tokens; nothing else encodes

        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{encode({'alg': 'none', 'typ': 'JWT'})}.{encode(claims)}.c2ln"


def _program() -> int:
    """The `codexauth` program (console script, `-m`, a vendored copy run as a script):
    main(), with nothing else in the process to serve."""
    code = main()
    # The interpreter's last collection walks every object alive, this module's
    # thousands too: a millisecond or more of a warm `codexauth token`, for memory
    # the exit returns anyway.  Only the program may do this: main() may run in a
    # caller's process, whose garbage is theirs.
    import gc

    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(_program())
