"""Use the Codex CLI's ChatGPT login from Python, safely when many processes run at once.

The Codex CLI keeps its login in ``$CODEX_HOME/auth.json`` (default ``~/.codex``).
Its refresh tokens are single-use: two processes refreshing with the same one
kill the login.  This module refreshes at most once across any number of
processes sharing the file, never corrupts it, and reads a fresh token for the
price of one ``stat()``::

    import codexauth, requests
    token = codexauth.get_token()          # an API key, or a fresh access token
    requests.get(url, auth=codexauth.RequestsAuth())

Dependencies (``requests``, ``portalocker``, ``platformdirs``) are imported only
when a refresh, a lock or an adapter needs them.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import errno
import json
import os
import sys
import threading
import time
import types
from datetime import datetime, timezone

# Not `from typing import TYPE_CHECKING`: importing typing costs start-up time.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import AsyncGenerator, Callable, Generator, Mapping
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
    "HttpxAuth",
    "IdTokenInfo",
    "LockTimeoutError",
    "NotLoggedInError",
    "PermanentRefreshError",
    "RefreshTokenError",
    "RefreshTokenFailedReason",
    "RequestsAuth",
    "TokenData",
    "TransientRefreshError",
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
# After `refresh_token_reused`, how long to watch auth.json for a peer that
# refreshes without our lock (the Codex CLI) to write its new tokens.
REUSE_GRACE = 1.0

# The Codex CLI rewrites auth.json by truncate-then-write; a reader that finds
# half a file retries for this long before calling it corrupt.
TORN_READ_WINDOW = 0.05
# A stat() result is trusted to stand for unchanged content only once the
# file's ctime is older than this: timestamps tick coarsely, and two writes in
# one tick would otherwise look alike.
RACY_STAT_WINDOW = 1.0

# Lock waits poll this finely (portalocker's default is 0.25 s), so that
# waiters wake together once a peer's refresh lands.
LOCK_POLL_MIN = 0.001
LOCK_POLL_MAX = 0.01

# Caps on what we read: auth.json is ~4 KiB, a token response smaller still.
MAX_AUTH_FILE_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 1 << 20

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_LOGGED_IN = 3
EXIT_PERMANENT = 4
EXIT_TRANSIENT = 5


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

    def __init__(self, reason: RefreshTokenFailedReason) -> None:
        self.reason = reason
        super().__init__(PERMANENT_MESSAGES[reason])

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling into a worker pool's parent
        return (type(self), (self.reason,))

    def failed_reason(self) -> RefreshTokenFailedReason | None:
        return self.reason


class TransientRefreshError(RefreshTokenError):
    """The refresh did not happen this time; safe to try again later."""


class LockTimeoutError(TransientRefreshError):
    """Gave up waiting for another process's refresh to finish."""


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
    _secret: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable value objects are unhashable

    def __repr__(self) -> str:
        fields = []
        for name, value in zip(self.__slots__, self._values()):
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

    __slots__ = ("openai_api_key", "tokens", "last_refresh", "extra")
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
        self.last_refresh = last_refresh
        self.extra = {} if extra is None else extra

    @property
    def mode(self) -> AuthMode | None:
        """API_KEY when a key is set, CHATGPT with tokens, None when logged out."""
        if self.openai_api_key is not None:
            return AuthMode.API_KEY
        return AuthMode.CHATGPT if self.tokens is not None else None


# Parsing #####################################################################
# Pure functions: bytes and numbers in, values or one exception out.


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


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


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim in seconds since the epoch, or None."""
    exp = (_jwt_claims(token) or {}).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    # NaN and values past year 5000 are no expiry we can act on.
    return float(exp) if exp == exp and abs(exp) < 1e11 else None


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


def _parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp with 0-9 fractional digits and any offset, as UTC."""
    if len(text) < 20 or text[10] not in "Tt ":
        raise ValueError("not an RFC 3339 timestamp")
    base, rest = text[:19], text[19:]
    fraction = ""
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789")) - 1
        fraction, rest = rest[1 : 1 + digits], rest[1 + digits :]
        if not 1 <= len(fraction) <= 9:
            raise ValueError("bad fractional seconds")
    if rest in ("Z", "z"):
        offset = "+00:00"
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset = rest
    else:
        raise ValueError("missing or bad UTC offset")
    # fromisoformat takes at most microseconds; nanoseconds are truncated.
    micros = f".{fraction[:6]:0<6}" if fraction else ""
    parsed = datetime.fromisoformat(f"{base[:10]}T{base[11:]}{micros}{offset}")
    return parsed.astimezone(timezone.utc)


def _format_rfc3339(moment: datetime) -> str:
    """UTC with microseconds and a `Z`, the form Codex writes."""
    # isoformat, not strftime: glibc's %Y does not zero-pad years before 1000.
    utc = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _expect_str(value: object, field: str, *, nullable: bool) -> str | None:
    if isinstance(value, str) or (nullable and value is None):
        return value
    wanted = "a string or null" if nullable else "a string"
    raise ValueError(f"{field} must be {wanted}, not {type(value).__name__}")


def _parse_tokens(raw: object) -> TokenData:
    if not isinstance(raw, dict):
        raise ValueError(f"tokens must be an object, not {type(raw).__name__}")
    known = ("id_token", "access_token", "refresh_token")
    for key in known:
        if key not in raw:
            raise ValueError(f"tokens.{key} is missing")
    values = {key: _expect_str(raw[key], f"tokens.{key}", nullable=False) for key in known}
    return TokenData(
        id_token=parse_id_token(values["id_token"] or ""),
        access_token=values["access_token"] or "",
        refresh_token=values["refresh_token"] or "",
        account_id=_expect_str(raw.get("account_id"), "tokens.account_id", nullable=True),
        extra={k: v for k, v in raw.items() if k not in (*known, "account_id")},
    )


def _auth_from_json(data: Any) -> AuthDotJson:
    """Build the model from parsed JSON; ValueError names the wrong field."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    api_key = _expect_str(data.get("OPENAI_API_KEY"), "OPENAI_API_KEY", nullable=True)
    raw_tokens = data.get("tokens")
    tokens = None if raw_tokens is None else _parse_tokens(raw_tokens)
    raw_refresh = _expect_str(data.get("last_refresh"), "last_refresh", nullable=True)
    try:
        last_refresh = None if raw_refresh is None else _parse_rfc3339(raw_refresh)
    except (ValueError, OverflowError):
        raise ValueError("last_refresh is not an RFC 3339 timestamp") from None
    extra = {
        k: v for k, v in data.items() if k not in ("OPENAI_API_KEY", "tokens", "last_refresh")
    }
    return AuthDotJson(api_key, tokens, last_refresh, extra)


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
    """Where an access token stands against the refresh rule."""

    FRESH = "fresh"  # use it
    EXPIRING = "expiring"  # still valid, inside the refresh window: refresh, fall back to it
    EXPIRED = "expired"  # past `exp`: must refresh
    OVERDUE = "overdue"  # no `exp`, last refresh over 8 days ago: must refresh


def _freshness(access_exp: float | None, last_refresh: float | None, now: float) -> _Freshness:
    """The staleness rule, in one place."""
    if access_exp is not None:
        if access_exp <= now:
            return _Freshness.EXPIRED
        return _Freshness.EXPIRING if access_exp - now <= REFRESH_WINDOW else _Freshness.FRESH
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
    return TransientRefreshError(f"Failed to refresh token: HTTP {status}{detail}")


def _parse_token_response(body: bytes) -> dict[str, str]:
    """The fields of a 2xx token response; each is optional but must be a string."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise TransientRefreshError("Failed to refresh token: the response is not a JSON object")
    fields = {}
    for key in ("id_token", "access_token", "refresh_token"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise TransientRefreshError(f"Failed to refresh token: bad {key} in the response")
        fields[key] = value
    return fields


def _fingerprint(secret: str) -> str:
    """A short one-way digest, to tell tokens apart without showing them."""
    import hashlib  # deferred: loading OpenSSL is slow and only refresh paths need it

    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


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


# File store ##################################################################


def find_codex_home() -> str:
    """$CODEX_HOME, else ~/.codex (the directory need not exist)."""
    home = os.environ.get("CODEX_HOME")
    return os.path.abspath(os.path.expanduser(home or os.path.join("~", ".codex")))


def _home(codex_home: StrPath | None) -> str:
    return find_codex_home() if codex_home is None else os.path.abspath(os.fspath(codex_home))


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_auth_file(path: str) -> tuple[AuthDotJson, os.stat_result] | None:
    """Read and parse auth.json, riding out a peer's truncate-then-write; None if absent."""
    deadline = time.monotonic() + TORN_READ_WINDOW
    delay = 0.001
    while True:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(MAX_AUTH_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuthFileError(path, f"cannot read: {exc.strerror or exc}") from exc
        try:
            return _parse_auth_bytes(data), st
        except _TornReadError as exc:
            if time.monotonic() >= deadline:
                raise AuthFileError(path, str(exc)) from None
        except ValueError as exc:
            raise AuthFileError(path, str(exc)) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def load_auth_dot_json(codex_home: StrPath) -> AuthDotJson | None:
    """auth.json from `codex_home`, or None when there is none."""
    result = _read_auth_file(os.path.join(_home(codex_home), AUTH_FILE_NAME))
    return None if result is None else result[0]


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


def _fsync_dir(directory: str) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_in_place(path: str, data: bytes) -> None:
    """Overwrite a file that cannot be replaced (a bind-mounted single file)."""
    fd = os.open(path, os.O_WRONLY | _O_CLOEXEC | _O_BINARY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    """Atomically replace `path` (through a symlink, which stays a link) with `data`, mode 0600.

    The temp file is created 0600 with O_EXCL|O_NOFOLLOW in the target's directory,
    fsynced, then renamed over the target.  Where rename cannot work (EBUSY/EXDEV:
    a file bind-mounted on its own) the target is overwritten in place and the
    complete temp copy is kept until that write is safely on disk.
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.urandom(6).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        if not os.access(target, os.W_OK):
            raise AuthFileError(path, f"cannot write: {exc.strerror or exc}") from exc
        _write_in_place(target, data)  # the directory is read-only, the file is not
        return
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
                raise
            _write_in_place(target, data)
        else:
            tmp = ""
            _fsync_dir(directory)
    except OSError as exc:
        raise AuthFileError(path, f"cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _ensure_home(codex_home: str) -> None:
    """Create CODEX_HOME owner-only, as Codex does."""
    try:
        os.makedirs(codex_home, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise AuthFileError(codex_home, f"cannot create directory: {exc.strerror or exc}") from exc


def save_auth(codex_home: StrPath, auth: AuthDotJson) -> None:
    """Write `auth` to auth.json atomically, mode 0600, keeping its unknown keys."""
    home = _home(codex_home)
    _ensure_home(home)
    _write_file(os.path.join(home, AUTH_FILE_NAME), _serialize_auth(auth))


def logout(codex_home: StrPath, *, revoke: bool = True) -> bool:
    """Revoke the token, then delete auth.json, like ``codex logout``; True if there was one.

    See CodexAuth.logout; ``revoke=False`` only deletes the file.
    """
    return CodexAuth(codex_home).logout(revoke=revoke)


def _remove_auth_file(path: str) -> bool:
    """Delete auth.json; True if there was one."""
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise AuthFileError(path, f"cannot delete: {exc.strerror or exc}") from exc
    return True


def login_with_api_key(codex_home: StrPath, api_key: str) -> None:
    """Store an API key as the login, replacing any ChatGPT tokens."""
    api_key = api_key.strip()
    if not api_key or any(c.isspace() for c in api_key):
        raise CodexAuthError("the API key is empty or contains white space")
    save_auth(codex_home, AuthDotJson(openai_api_key=api_key))


class _FailureState:
    """The last refresh failure, shared between processes in a sidecar file."""

    __slots__ = ("fingerprint", "reason", "retry_after")

    def __init__(
        self, fingerprint: str, reason: RefreshTokenFailedReason | None, retry_after: float
    ) -> None:
        self.fingerprint = fingerprint  # of the refresh token that failed
        self.reason = reason  # None for a transient failure
        self.retry_after = retry_after  # epoch seconds; transient failures only

    def error_for(self, refresh_token: str, now: float) -> RefreshTokenError | None:
        """The error to raise, without a request, for `refresh_token` now."""
        if self.fingerprint != _fingerprint(refresh_token):
            return None
        if self.reason is not None:
            return PermanentRefreshError(self.reason)
        if now < self.retry_after:
            return TransientRefreshError(
                "Failed to refresh token: a refresh just failed; "
                f"try again in {self.retry_after - now:.1f} s"
            )
        return None


def _read_state(path: str) -> _FailureState | None:
    """The sidecar state; anything unreadable counts as none."""
    # O_NONBLOCK: a FIFO planted at the path must not hang us.
    flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY | getattr(os, "O_NONBLOCK", 0)
    try:
        with os.fdopen(os.open(path, flags), "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    try:
        raw = json.loads(data)
        reason = raw["reason"]
        return _FailureState(
            str(raw["refresh_token_sha256"]),
            None if reason is None else RefreshTokenFailedReason[reason],
            float(raw["retry_after"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _known_failure(path: str, refresh_token: str, now: float) -> RefreshTokenError | None:
    """The error recorded for `refresh_token` that still holds now, if any."""
    state = _read_state(path)
    return None if state is None else state.error_for(refresh_token, now)


def _record_failure(path: str, refresh_token: str, error: RefreshTokenError, now: float) -> None:
    """Remember a failure for peers; best effort, so the real error is what callers see."""
    reason = error.failed_reason()
    record = {
        "refresh_token_sha256": _fingerprint(refresh_token),
        "reason": None if reason is None else reason.name,
        "retry_after": now + TRANSIENT_BACKOFF if reason is None else 0.0,
    }
    try:
        _write_file_no_follow(path, json.dumps(record).encode("utf-8"))
    except (OSError, AuthFileError) as exc:
        _log(_WARNING, "could not record the refresh failure in %s: %s", path, exc)


def _write_file_no_follow(path: str, data: bytes) -> None:
    """Sidecars are ours: replace a planted symlink rather than write through it."""
    if os.path.islink(path):
        os.unlink(path)
    _write_file(path, data)


# Lock ########################################################################

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, threading.Lock())


def _try_lock(f: IO[bytes], path: str) -> bool:
    """Take the OS's exclusive lock on `f` without blocking; False if another holds it.

    On POSIX this is flock(2), exactly what portalocker calls there; calling it
    directly spares every process of a herd portalocker's ~30 ms import, which
    starved the one process doing the refresh.  Elsewhere portalocker does it.
    """
    try:
        if os.name == "posix":
            import fcntl

            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
        import portalocker  # deferred: only a refresh locks

        try:
            portalocker.lock(
                f, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
            )
        except portalocker.AlreadyLocked:
            return False
        return True
    except OSError as exc:  # e.g. ENOLCK on a filesystem without locks
        raise AuthFileError(path, f"cannot lock: {exc.strerror or exc}") from exc


class _RefreshLock:
    """Exclusive across threads and processes, via an OS lock on a sidecar file.

    The OS drops the lock when its holder dies, even by kill -9, so there is
    never a stale lock to clean up; the file itself is never deleted.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = _thread_lock(path)
        self._file: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        flags = os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise AuthFileError(self.path, f"cannot open lock: {exc.strerror or exc}") from exc
        return os.fdopen(fd, "r+b")

    def acquire(self, timeout: float, done_elsewhere: Callable[[], bool]) -> bool:
        """Take the lock; False if `done_elsewhere()` turns true while waiting."""
        deadline = time.monotonic() + timeout
        delay = LOCK_POLL_MIN
        f = self._open()
        try:
            while True:
                if self._threads.acquire(blocking=False):
                    try:
                        locked = _try_lock(f, self.path)
                    except BaseException:
                        self._threads.release()
                        raise
                    if locked:
                        self._file, f = f, None  # type: ignore[assignment]  # ownership moves
                        return True
                    self._threads.release()
                if done_elsewhere():
                    return False
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"Failed to refresh token: gave up after {timeout:g} s waiting for "
                        f"another process to finish refreshing (lock: {self.path})"
                    )
                time.sleep(delay)
                delay = min(delay * 2, LOCK_POLL_MAX)
        finally:
            if f is not None:
                f.close()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the OS lock
            self._file = None
            self._threads.release()


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
        raise TransientRefreshError(f"Failed to refresh token: {exc}") from None
    if 200 <= status < 300:
        return _parse_token_response(body)
    raise _classify_refresh_failure(status, body)


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
    stored_mode = auth.extra.get("auth_mode")  # Codex's field; this model keeps it in extra
    if isinstance(stored_mode, str):
        mode = stored_mode
    else:
        mode = AuthMode.API_KEY.value if auth.openai_api_key is not None else "chatgpt"
    if mode != AuthMode.CHATGPT.value or auth.tokens is None:
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


def _log(level: int, msg: str, *args: object) -> None:
    """Log to the "codexauth" logger without importing logging on the warm path.

    Until something imports logging, no handler can exist to hear debug lines;
    warnings (level >= 30) import it, so the last-resort handler shows them.
    """
    if level >= 30 or "logging" in sys.modules:
        import logging

        logging.getLogger("codexauth").log(level, msg, *args)


_DEBUG, _INFO, _WARNING = 10, 20, 30


class _Snapshot:
    """auth.json as last read, with what the warm path needs precomputed."""

    __slots__ = ("auth", "key", "trusted", "access_exp", "last_refresh")

    def __init__(self, auth: AuthDotJson, st: os.stat_result) -> None:
        self.auth = auth
        self.key = _stat_key(st)
        # The racy-timestamp rule: see RACY_STAT_WINDOW.
        self.trusted = time.time_ns() - st.st_ctime_ns > RACY_STAT_WINDOW * 1e9
        tokens = auth.tokens
        self.access_exp = None if tokens is None else _jwt_expiry(tokens.access_token)
        self.last_refresh = None if auth.last_refresh is None else auth.last_refresh.timestamp()


class CodexAuth:
    """The login in one CODEX_HOME: fresh tokens, refreshed at most once across processes.

    `timeout` bounds the refresh request; `lock_timeout` bounds the wait for a
    peer's refresh.  `session` (a requests.Session) and `now` (epoch seconds)
    are for tests and custom transports.
    """

    def __init__(
        self,
        codex_home: StrPath | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        session: requests.Session | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0 or not lock_timeout > 0:
            raise ValueError("timeout and lock_timeout must be positive")
        self.codex_home = _home(codex_home)
        self.auth_file = os.path.join(self.codex_home, AUTH_FILE_NAME)
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self._session = session
        self._now = now
        self._snapshot: _Snapshot | None = None
        self._sidecar_dir: str | None = None

    @classmethod
    def from_auth_storage(
        cls, codex_home: StrPath | None = None, **options: Any
    ) -> CodexAuth | None:
        """A CodexAuth for `codex_home`, or None when it has no auth.json."""
        auth = cls(codex_home, **options)
        return auth if auth._load(force=True) is not None else None

    def __repr__(self) -> str:
        return f"CodexAuth(codex_home={self.codex_home!r})"

    # Reading: one stat() while the file is unchanged.

    def _load(self, *, force: bool = False) -> _Snapshot | None:
        snapshot = self._snapshot
        if snapshot is not None and snapshot.trusted and not force:
            try:
                if _stat_key(os.stat(self.auth_file)) == snapshot.key:
                    return snapshot
            except OSError:
                pass
        result = _read_auth_file(self.auth_file)
        self._snapshot = None if result is None else _Snapshot(*result)
        return self._snapshot

    def _require(self) -> _Snapshot:
        snapshot = self._load()
        if snapshot is None or snapshot.auth.mode is None:
            raise NotLoggedInError(
                f"Not logged in: no login in {self.auth_file}. Run `codex login`."
            )
        return snapshot

    def _require_tokens(self) -> tuple[_Snapshot, TokenData]:
        snapshot = self._require()
        if snapshot.auth.mode is AuthMode.API_KEY or snapshot.auth.tokens is None:
            raise NotLoggedInError(
                f"Not logged in with ChatGPT: {self.auth_file} holds an API key"
            )
        return snapshot, snapshot.auth.tokens

    def _freshness(self, snapshot: _Snapshot) -> _Freshness:
        return _freshness(snapshot.access_exp, snapshot.last_refresh, self._now())

    @property
    def mode(self) -> AuthMode:
        """API_KEY or CHATGPT, as auth.json says now."""
        mode = self._require().auth.mode
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
        if snapshot.auth.mode is AuthMode.API_KEY:
            return False
        return self._freshness(snapshot) is not _Freshness.FRESH

    def access_token_expiry(self) -> datetime | None:
        """When the stored access token expires, if it says."""
        exp = self._require().access_exp
        return None if exp is None else datetime.fromtimestamp(exp, timezone.utc)

    def get_token(self) -> str:
        """The API key, or a fresh access token (refreshing first when stale)."""
        snapshot = self._require()
        auth = snapshot.auth
        if auth.openai_api_key is not None:
            return auth.openai_api_key
        assert auth.tokens is not None  # _require: a mode without a key has tokens
        freshness = self._freshness(snapshot)
        if freshness is _Freshness.FRESH:
            return auth.tokens.access_token
        # A token with time to spare is not worth queueing behind a peer's refresh.
        left = (snapshot.access_exp or 0.0) - self._now()
        wait = freshness is not _Freshness.EXPIRING or left <= NO_WAIT_MARGIN
        try:
            return self._refresh(auth.tokens, force=False, wait=wait)
        except TransientRefreshError as exc:
            if freshness is not _Freshness.EXPIRING:
                raise
            # Proactive refresh failed or is busy elsewhere, but the token still works.
            level = _DEBUG if isinstance(exc, LockTimeoutError) else _WARNING
            _log(level, "refresh not done, using the still-valid access token: %s", exc)
            return auth.tokens.access_token

    def refresh_token(self) -> str:
        """Refresh now (single-flight: adopts a peer's refresh); the new access token."""
        return self._refresh(self._require_tokens()[1], force=True)

    def recover_unauthorized(self, rejected_token: str) -> str | None:
        """After an API answered 401 to `rejected_token`: a newer token to retry with, or None.

        Adopts a token a peer wrote for the same account; otherwise forces a
        single-flight refresh.  None when there is nothing better to try.
        """
        before = self._snapshot.auth.tokens if self._snapshot is not None else None
        snapshot = self._load(force=True)
        if snapshot is None or snapshot.auth.mode is not AuthMode.CHATGPT:
            return None
        tokens = snapshot.auth.tokens
        assert tokens is not None
        if before is not None and _account(before) != _account(tokens):
            return None  # a different login now: its token is not ours to retry with
        if tokens.access_token != rejected_token:
            _log(_DEBUG, "401 recovery: adopted a token a peer wrote")
            return tokens.access_token
        try:
            return self._refresh(tokens, force=True)
        except RefreshTokenError as exc:
            _log(_DEBUG, "401 recovery: refresh failed: %s", exc)
            raise

    # The single-flight protocol.

    def _refresh(self, start: TokenData, *, force: bool, wait: bool = True) -> str:
        """stale -> lock -> re-read -> adopt or POST -> write -> unlock.

        `start` is the snapshot the caller found stale.  Any token written
        since (its refresh token differs) is adopted without a request.
        Without `wait`, a lock held by a peer raises LockTimeoutError at once.
        """
        url = os.environ.get(REFRESH_TOKEN_URL_OVERRIDE_ENV_VAR) or REFRESH_TOKEN_URL
        _check_refresh_url(url)
        sidecar = self._sidecar(create=True)
        state_path = os.path.join(sidecar, STATE_FILE_NAME)
        # Fail fast, with no lock and no request, where a peer's attempt already failed.
        error = _known_failure(state_path, start.refresh_token, self._now())
        if error is not None:
            _log(_DEBUG, "refresh skipped: a peer's attempt failed: %s", error)
            raise error

        adopted: list[str] = []

        def peer_refreshed() -> bool:
            token = self._peer_token(start.refresh_token, force)
            if token is not None:
                adopted.append(token)
                return True
            failure = _known_failure(state_path, start.refresh_token, self._now())
            if failure is not None:
                raise failure  # the refresh we waited for failed: share its outcome
            return False

        lock = _RefreshLock(os.path.join(sidecar, LOCK_FILE_NAME))
        waited = time.monotonic()
        if not lock.acquire(self.lock_timeout if wait else 0.0, peer_refreshed):
            _log(_DEBUG, "refresh adopted from a peer after %.0f ms", _ms_since(waited))
            return adopted[0]
        try:
            _log(_DEBUG, "refresh lock taken after %.0f ms", _ms_since(waited))
            return self._refresh_locked(start.refresh_token, force, url, state_path)
        finally:
            lock.release()

    def _peer_token(self, stale_refresh_token: str, force: bool) -> str | None:
        """A token a peer wrote since `stale_refresh_token`, if it is good to use."""
        snapshot = self._load()
        tokens = snapshot.auth.tokens if snapshot is not None else None
        if tokens is None or tokens.refresh_token == stale_refresh_token:
            return None
        assert snapshot is not None
        usable = self._freshness(snapshot) in (_Freshness.FRESH, _Freshness.EXPIRING)
        return tokens.access_token if force or usable else None

    def _refresh_locked(self, stale: str, force: bool, url: str, state_path: str) -> str:
        snapshot = self._load(force=True)
        if snapshot is None or snapshot.auth.tokens is None:
            raise NotLoggedInError(f"Not logged in: {self.auth_file} has no ChatGPT tokens now.")
        token = self._peer_token(stale, force)
        if token is not None:
            _log(_DEBUG, "refresh skipped: a peer already refreshed")
            return token
        tokens = snapshot.auth.tokens
        refresh_token = tokens.refresh_token  # differs from `stale` if a peer wrote stale tokens
        error = _known_failure(state_path, refresh_token, self._now())
        if error is not None:
            _log(_DEBUG, "refresh skipped: %s", error)
            raise error
        self._check_writable()
        _log(_DEBUG, "refresh started: POST %s", url)
        try:
            fields = _post_refresh(url, refresh_token, self.timeout, self._session)
        except PermanentRefreshError as exc:
            _log(_DEBUG, "refresh failed for good: %s", exc.reason.name)
            if exc.reason is RefreshTokenFailedReason.EXHAUSTED:
                token = self._await_lockless_peer(refresh_token)
                if token is not None:
                    return token
            _record_failure(state_path, refresh_token, exc, self._now())
            raise
        except TransientRefreshError as exc:
            _log(_DEBUG, "refresh failed, transient: %s", exc)
            _record_failure(state_path, refresh_token, exc, self._now())
            raise
        _log(_DEBUG, "refresh succeeded; writing %s", self.auth_file)
        return self._store_refreshed(refresh_token, fields)

    def _await_lockless_peer(self, used_refresh_token: str) -> str | None:
        """After `refresh_token_reused`: a peer without our lock may be about to write."""
        deadline = time.monotonic() + REUSE_GRACE
        while True:
            token = self._peer_token(used_refresh_token, force=True)
            if token is not None:
                _log(_DEBUG, "refresh token was reused by a peer; adopted its tokens")
                return token
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def _store_refreshed(self, used_refresh_token: str, fields: dict[str, str]) -> str:
        """Merge the new tokens into auth.json as it is now, keeping every other field."""
        snapshot = self._load(force=True)
        tokens = snapshot.auth.tokens if snapshot is not None else None
        if snapshot is None or tokens is None or tokens.refresh_token != used_refresh_token:
            # A lockless peer logged in anew while we refreshed: its login stays in
            # the file; this call still returns the token it was just given.
            _log(_WARNING, "auth.json changed during the refresh; keeping the newer login")
            return fields.get("access_token") or self.get_token()
        refreshed = TokenData(
            parse_id_token(fields["id_token"]) if "id_token" in fields else tokens.id_token,
            fields.get("access_token", tokens.access_token),
            fields.get("refresh_token", tokens.refresh_token),
            tokens.account_id,
            tokens.extra,
        )
        old = snapshot.auth
        now = datetime.fromtimestamp(self._now(), timezone.utc)
        _write_file(
            self.auth_file,
            _serialize_auth(AuthDotJson(old.openai_api_key, refreshed, now, old.extra)),
        )
        self._load(force=True)
        return refreshed.access_token

    # Logging out, like `codex logout`.

    revoke_error: str | None = None  # why the last logout() revoked nothing, if it tried

    def _revoke(self, url: str) -> None:
        """The revoke half of logout(); failures become `revoke_error` and a warning."""
        try:
            snapshot = self._load(force=True)
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
            _log(_WARNING, "%s; deleting %s anyway", self.revoke_error, self.auth_file)

    def logout(self, *, revoke: bool = True) -> bool:
        """Revoke the login's token at the server, then delete auth.json; True if there was one.

        Like `codex logout` (codex-rs/login/src/auth/manager.rs `logout_with_revoke`):
        the refresh token is revoked, else the access token; an API key is not.  A
        revoke that fails (network, timeout, an error status) still deletes the file:
        `revoke_error` then says why, and a warning is logged.  It runs under the
        refresh lock, so no peer is mid-refresh.  `revoke=False` only deletes.
        """
        self.revoke_error = None
        url = _revoke_url()
        if revoke:  # bad input fails before the lock, leaving auth.json as it was
            _check_refresh_url(url, "revoke")
            _ca_bundle()
        lock = _RefreshLock(os.path.join(self._sidecar(create=True), LOCK_FILE_NAME))
        lock.acquire(self.lock_timeout, lambda: False)
        try:
            if revoke:
                self._revoke(url)
            removed = _remove_auth_file(self.auth_file)
        finally:
            lock.release()
        self._snapshot = None
        return removed

    # Where the sidecars live.

    def _sidecar(self, *, create: bool) -> str:
        """Where auth.lock and the failure state live (see _sidecar_dir_for)."""
        if self._sidecar_dir is None:
            self._sidecar_dir = _sidecar_dir_for(self.codex_home, self.auth_file)
        if create and self._sidecar_dir != self.codex_home:
            try:
                os.makedirs(self._sidecar_dir, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise AuthFileError(self._sidecar_dir, f"cannot create: {exc.strerror}") from exc
        return self._sidecar_dir

    def _check_writable(self) -> None:
        """Refuse to spend a single-use refresh token whose successor could not be stored."""
        target = os.path.realpath(self.auth_file)
        if os.access(os.path.dirname(target), os.W_OK) or os.access(target, os.W_OK):
            return
        raise AuthFileError(
            self.auth_file,
            "the access token needs a refresh but auth.json is read-only here; "
            "refresh it where it is writable (run `codex`), or mount it read-write",
        )


def _sidecar_dir_for(codex_home: str, auth_file: str) -> str:
    """CODEX_HOME if writable, else a per-user directory keyed by the real auth.json path.

    Every process sharing a login must pick the same directory, so the choice
    depends only on the paths and on whether this user may write CODEX_HOME.
    """
    if os.access(codex_home, os.W_OK):
        return codex_home
    import hashlib  # deferred, as in _fingerprint

    import platformdirs  # deferred: only a read-only CODEX_HOME needs it

    real = os.path.realpath(auth_file)
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(platformdirs.user_state_dir("codexauth"), key)


def _account(tokens: TokenData) -> str | None:
    return tokens.account_id or tokens.id_token.chatgpt_account_id


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
        tell = getattr(r.body, "tell", None)
        body_position = tell() if tell is not None else None
        retried = False

        def on_response(response: requests.Response, **kwargs: Any) -> requests.Response:
            # Only one retry: the resent copy carries this hook too (requests runs no
            # hooks on it today; the flag keeps a future version from looping).
            nonlocal retried
            if response.status_code != 401 or retried:
                return response
            retried = True
            if self.codex.recover_unauthorized(token) is None:
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
            request.body.seek(body_position)  # type: ignore[union-attr]  # tell() worked
        response.content  # noqa: B018  # drain the body so the connection is reused
        response.close()
        retry = request.copy()
        extract_cookies_to_jar(retry._cookies, request, response.raw)  # type: ignore[attr-defined,no-untyped-call]
        retry.prepare_cookies(retry._cookies)  # type: ignore[attr-defined]
        _set_auth_headers(self.codex, retry.headers)
        second: requests.Response = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second


def _set_auth_headers(codex: CodexAuth, headers: Any) -> str:
    """Authorization, plus ChatGPT-Account-Id in ChatGPT mode; returns the token sent."""
    token = codex.get_token()
    headers["Authorization"] = f"Bearer {token}"
    if codex.mode is AuthMode.CHATGPT:
        account = codex.get_account_id()
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
    return _httpx_auth_class(CodexAuth(codex_home, **options))  # type: ignore[no-any-return]


def _build_httpx_auth_class() -> type:
    try:
        import httpx  # deferred: an optional dependency
    except ImportError as exc:
        raise ImportError("codexauth.HttpxAuth needs httpx: pip install httpx") from exc

    class _HttpxAuth(httpx.Auth):
        requires_request_body = True  # the retry re-sends the body

        def __init__(self, codex: CodexAuth) -> None:
            self.codex = codex

        def sync_auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            token = _set_auth_headers(self.codex, request.headers)
            response = yield request
            if response.status_code == 401:
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
            response = yield request
            if response.status_code == 401:
                retry_token = await anyio.to_thread.run_sync(
                    self.codex.recover_unauthorized, token
                )
                if retry_token is not None:
                    _set_auth_headers(self.codex, request.headers)
                    yield request

    return _HttpxAuth


# CLI #########################################################################


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
        "auth_file": auth.auth_file,
        "lock_file": os.path.join(auth._sidecar(create=False), LOCK_FILE_NAME),
    }
    snapshot = auth._load()
    if snapshot is None or snapshot.auth.mode is None:
        return info
    data = snapshot.auth
    assert data.mode is not None
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


def _print_status(info: dict[str, Any]) -> None:
    if not info["logged_in"]:
        print(f"Not logged in (no login in {info['auth_file']}). Run `codex login`.")
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
        ("auth_file", "auth.json"),
        ("lock_file", "Lock file"),
    ]
    for key, label in labels:
        value = info[key]
        if value is None:
            continue
        shown = ("yes" if value else "no") if isinstance(value, bool) else value
        if key in ("access_token_expires_at", "last_refresh"):
            shown = f"{value} ({_relative(_parse_rfc3339(value).timestamp() - time.time())})"
        print(f"{label + ':':<19}{shown}")


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
    "timeout": DEFAULT_TIMEOUT,
    "lock_timeout": DEFAULT_LOCK_TIMEOUT,
    "verbose": False,
}


def _build_parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="codexauth",
        description="Use the Codex CLI's ChatGPT login (auth.json) safely from scripts.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not logged in, "
        "4 sign in again (permanent), 5 try again (transient).",
    )
    parser.set_defaults(**_GLOBAL_DEFAULTS)  # shared with main()'s fast path
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--codex-home",
        metavar="PATH",
        help="directory holding auth.json (default: $CODEX_HOME or ~/.codex)",
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        """A subcommand whose own --help opens with its line in the command list."""
        return commands.add_parser(name, help=summary, description=summary)

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
    login = command("login", "store an API key read from stdin")
    login.add_argument(
        "--api-key", action="store_true", required=True, help="read the key from stdin"
    )
    demo = command("demo", "race N processes on an expired login against a local endpoint")
    demo.add_argument("-n", "--processes", type=int, default=16, metavar="N")
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


def main(argv: list[str] | None = None) -> int:
    """The `codexauth` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["token"]:
        # Scripts call this in loops; building the parser costs more than the rest.
        args: Any = types.SimpleNamespace(command="token", json=False, **_GLOBAL_DEFAULTS)
    else:
        args = _build_parser().parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(
            level=logging.DEBUG, format="codexauth: %(message)s", stream=sys.stderr
        )
    try:
        return _run(args)
    except CodexAuthError as exc:
        print(f"codexauth: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`codexauth token | head -c0`): exit quietly, and
        # keep the interpreter's final flush from printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _run(args: Any) -> int:
    if args.command == "demo":
        return _demo(args.processes)
    auth = CodexAuth(
        args.codex_home,
        timeout=args.timeout,
        lock_timeout=args.lock_timeout,
    )
    if args.command == "token" and not args.json:
        print(auth.get_token())
    elif args.command == "token":
        token = auth.get_token()
        expiry = auth.access_token_expiry() if auth.mode is AuthMode.CHATGPT else None
        print(
            json.dumps(
                {
                    "token": token,
                    "mode": auth.mode.value,
                    "expires_at": expiry and _format_rfc3339(expiry),
                }
            )
        )
    elif args.command == "header":
        print(f"Authorization: Bearer {auth.get_token()}")
    elif args.command == "refresh":
        auth.refresh_token()
        expiry = auth.access_token_expiry()
        print(
            "Refreshed."
            + (f" The access token expires at {_format_rfc3339(expiry)}." if expiry else "")
        )
    elif args.command == "status":
        info = _status(auth)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_status(info)
        return EXIT_OK if info["logged_in"] else EXIT_NOT_LOGGED_IN
    elif args.command == "logout":
        if not args.verbose:  # the one-line warning below says it; no second copy from logging
            import logging

            logging.getLogger("codexauth").addHandler(logging.NullHandler())
        removed = auth.logout(revoke=not args.keep_token)
        if auth.revoke_error is not None:
            print(f"codexauth: warning: {auth.revoke_error}", file=sys.stderr)
        print("Logged out." if removed else "Not logged in.")
    elif args.command == "login":
        login_with_api_key(auth.codex_home, sys.stdin.readline())
        print(f"Stored the API key in {auth.auth_file}.")
    return EXIT_OK


def _demo(processes: int) -> int:
    """Show the guarantee: N processes, one expired login, one refresh request."""
    import subprocess
    import tempfile
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if not 1 <= processes <= 256:
        raise CodexAuthError("--processes must be between 1 and 256")
    posts: list[str] = []
    valid = {"demo-refresh-0"}
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
            save_auth(home, AuthDotJson(tokens=expired, last_refresh=datetime.now(timezone.utc)))
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
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{encode({'alg': 'none', 'typ': 'JWT'})}.{encode(claims)}.c2ln"


if __name__ == "__main__":
    sys.exit(main())
