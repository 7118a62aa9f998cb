"""Refreshing in one process against the real loopback TokenServer.

First the three cases of the Codex CLI's ``auth_refresh.rs``, ported as they are; then the
request, the response, error classification, timeouts and caps, the refresh URL and TLS,
staleness through get_token(), the failure memory shared through the sidecar, peers that
refresh without our lock (the Codex CLI), threads, and 401 recovery.

Races between processes live in test_concurrency.py. Tokens are compared through fp()
and file contents through digest(), so a failing assertion never prints a secret.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import stat
import threading
import time
import types
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import children.codex_like_peer as codex_peer
import pytest
from support import (
    ACCOUNT_CHANGED_MESSAGE,
    EXHAUSTED_MESSAGE,
    EXPIRED_MESSAGE,
    OTHER_MESSAGE,
    REVOKED_MESSAGE,
    UNREACHABLE_TOKEN_URL,
    RawServer,
    TokenServer,
    access_token,
    digest,
    fp,
    id_token,
    make_jwt,
    rfc3339,
    stored,
    write_auth_json,
)

import codexauth
from codexauth import (
    AuthDotJson,
    CodexAuth,
    CodexAuthError,
    PermanentRefreshError,
    RefreshTokenError,
    RefreshTokenFailedReason,
    TransientRefreshError,
)

OVERRIDE = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"
STATE_FILE = "codexauth-state.json"
GUARD = 20.0  # hang guard for anything that could block; never a timing assertion


def load(codex_home: Path) -> AuthDotJson:
    auth = codexauth.load_auth_dot_json(codex_home)
    assert auth is not None and auth.tokens is not None
    return auth


def secrets_of(path: Path) -> list[str]:
    """Every token string in an auth.json."""
    tokens = json.loads(path.read_bytes())["tokens"]
    return [tokens[key] for key in ("access_token", "refresh_token", "id_token")]


def leaked(text: str | bytes, secrets: list[str]) -> list[str | None]:
    """Fingerprints of the secrets found in `text` (asserted empty; never the secrets)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [fp(secret) for secret in secrets if secret in text]


def call_bounded(fn: Callable[[], Any], timeout: float = GUARD) -> dict[str, Any]:
    """Run `fn` in a thread so a hang fails the test instead of blocking the suite."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    return outcome


# The Codex CLI's auth_refresh.rs, ported #####################################

INITIAL_ACCESS_TOKEN = "initial-access-token"
INITIAL_REFRESH_TOKEN = "initial-refresh-token"


@pytest.fixture
def codex_ctx(codex_home: Path, token_server: TokenServer) -> Iterator[tuple[CodexAuth, datetime]]:
    """RefreshTokenTestContext: a login refreshed a day ago, loaded via from_auth_storage."""
    initial_last_refresh = datetime.now(timezone.utc) - timedelta(days=1)
    write_auth_json(
        codex_home,
        access=INITIAL_ACCESS_TOKEN,
        refresh=INITIAL_REFRESH_TOKEN,
        id_tok=make_jwt({"sub": "user-123"}),
        account_id="account-id",
        last_refresh=initial_last_refresh,
    )
    auth = CodexAuth.from_auth_storage(codex_home)
    assert auth is not None, "auth should load from storage"
    yield auth, load(codex_home).last_refresh or initial_last_refresh


def assert_initial_login_kept(
    codex_home: Path, initial_last_refresh: datetime, before: bytes
) -> None:
    """A failed refresh left codex_ctx's login in auth.json as it was, byte for byte."""
    stored = load(codex_home)
    assert stored.tokens is not None
    assert fp(stored.tokens.access_token) == fp(INITIAL_ACCESS_TOKEN)
    assert fp(stored.tokens.refresh_token) == fp(INITIAL_REFRESH_TOKEN)
    assert stored.last_refresh == initial_last_refresh
    assert digest((codex_home / "auth.json").read_bytes()) == digest(before)


def test_refresh_token_succeeds_updates_storage(
    codex_home: Path, token_server: TokenServer, codex_ctx: tuple[CodexAuth, datetime]
) -> None:
    auth, initial_last_refresh = codex_ctx
    token_server.fail_next(
        200, {"access_token": "new-access-token", "refresh_token": "new-refresh-token"}
    )

    access = auth.refresh_token()

    assert fp(access) == fp("new-access-token")
    stored = load(codex_home)
    assert stored.tokens is not None
    assert fp(stored.tokens.access_token) == fp("new-access-token")
    assert fp(stored.tokens.refresh_token) == fp("new-refresh-token")
    assert stored.last_refresh is not None
    assert stored.last_refresh > initial_last_refresh, "last_refresh should advance"
    assert fp(auth.get_token_data().access_token) == fp("new-access-token")
    assert token_server.post_count == 1


def test_refresh_token_returns_permanent_error_for_expired_refresh_token(
    codex_home: Path, token_server: TokenServer, codex_ctx: tuple[CodexAuth, datetime]
) -> None:
    auth, initial_last_refresh = codex_ctx
    before = (codex_home / "auth.json").read_bytes()
    token_server.fail_next(401, {"error": {"code": "refresh_token_expired"}})

    with pytest.raises(RefreshTokenError) as info:
        auth.refresh_token()

    assert info.value.failed_reason() is RefreshTokenFailedReason.EXPIRED
    assert isinstance(info.value, PermanentRefreshError)
    assert_initial_login_kept(codex_home, initial_last_refresh, before)
    assert token_server.post_count == 1


def test_refresh_token_returns_transient_error_on_server_failure(
    codex_home: Path, token_server: TokenServer, codex_ctx: tuple[CodexAuth, datetime]
) -> None:
    auth, initial_last_refresh = codex_ctx
    before = (codex_home / "auth.json").read_bytes()
    token_server.fail_next(500, {"error": "temporary-failure"})

    with pytest.raises(RefreshTokenError) as info:
        auth.refresh_token()

    assert isinstance(info.value, TransientRefreshError)
    assert info.value.failed_reason() is None
    assert_initial_login_kept(codex_home, initial_last_refresh, before)
    assert token_server.post_count == 1


# The request and the response ################################################


def test_request_body_is_exactly_what_codex_sends(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # The Codex 0.171 CLI's body, as its released binary sends it for an expired token.
    auth_json(refresh="rt-0", access_exp=time.time() - 60)

    CodexAuth(codex_home).get_token()

    assert token_server.post_count == 1
    (body,) = token_server.requests
    assert isinstance(body, dict)
    assert sorted(body) == ["client_id", "grant_type", "refresh_reason", "refresh_token"]
    assert fp(body["refresh_token"]) == fp("rt-0")
    assert {k: v for k, v in body.items() if k != "refresh_token"} == {
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
        "grant_type": "refresh_token",
        "refresh_reason": "proactive_expiry",
    }


@pytest.mark.parametrize("reason", ["forced", "unauthorized_recovery"])
def test_refresh_reason_is_sent_as_given(reason: str, token_server: TokenServer) -> None:
    codexauth._post_refresh(token_server.url, "rt-0", 5.0, None, reason=reason)

    (body,) = token_server.requests
    assert body["refresh_reason"] == reason


@pytest.mark.parametrize(
    ("override", "expected"),
    [("client-x", "client-x"), ("", codexauth.CLIENT_ID), ("   ", codexauth.CLIENT_ID)],
    ids=["set", "empty", "blank"],
)
def test_client_id_override_as_codex_reads_it(
    override: str,
    expected: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODEX_APP_SERVER_LOGIN_CLIENT_ID", override)
    auth_json(refresh="rt-0", access_exp=time.time() - 60)

    CodexAuth(codex_home).get_token()
    CodexAuth(codex_home).logout()

    (body,) = token_server.requests
    (revoke,) = token_server.revoke_requests
    assert body["client_id"] == expected
    assert revoke["client_id"] == expected


@pytest.mark.parametrize("omitted", ["id_token", "refresh_token", "access_token", "none"])
def test_each_response_field_is_optional(
    omitted: str, codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(account_id="acct-kept", extra_tokens={"future": 1}, extra_top={"x": [2]})
    old = json.loads(path.read_bytes())["tokens"]
    token_server.omit_fields = {omitted}
    now = float(int(time.time()) + 17)  # whole seconds: compared exactly below

    returned = CodexAuth(codex_home, now=lambda: now).refresh_token()

    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 1
    doc = json.loads(path.read_bytes())
    for key in ("id_token", "access_token", "refresh_token"):
        expected = old[key] if key == omitted else issued[key]
        assert fp(doc["tokens"][key]) == fp(expected), key
    assert fp(returned) == fp(doc["tokens"]["access_token"])
    assert doc["tokens"]["account_id"] == "acct-kept"
    assert doc["tokens"]["future"] == 1 and doc["x"] == [2]
    assert doc["last_refresh"] == rfc3339(datetime.fromtimestamp(now, timezone.utc))
    assert doc["last_refresh"].endswith("Z")


# Permanent failures ##########################################################

PERMANENT = [
    ("401-expired", 401, {"error": {"code": "refresh_token_expired"}}, "EXPIRED", EXPIRED_MESSAGE),
    ("400-reused", 400, {"error": {"code": "refresh_token_reused"}}, "EXHAUSTED",
     EXHAUSTED_MESSAGE),
    ("403-revoked-as-string", 403, {"error": "refresh_token_invalidated"}, "REVOKED",
     REVOKED_MESSAGE),
    ("500-top-code-upper", 500, {"code": "REFRESH_TOKEN_EXPIRED"}, "EXPIRED", EXPIRED_MESSAGE),
    ("401-unknown-code", 401, {"error": {"code": "invalid_grant"}}, "OTHER", OTHER_MESSAGE),
    ("401-no-code", 401, {"error": {"message": "nope"}}, "OTHER", OTHER_MESSAGE),
    ("401-not-json", 401, b"<html>Unauthorized</html>", "OTHER", OTHER_MESSAGE),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "reason", "message"),
    [case[1:] for case in PERMANENT],
    ids=[case[0] for case in PERMANENT],
)
def test_permanent_failures(
    status: int,
    body: Any,
    reason: str,
    message: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    short_reuse_window: float,
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    token_server.fail_next(status, body)

    with pytest.raises(PermanentRefreshError) as info:
        CodexAuth(codex_home).get_token()

    assert info.value.failed_reason() is RefreshTokenFailedReason[reason]
    assert str(info.value) == message
    assert digest(path.read_bytes()) == digest(before)
    assert token_server.post_count == 1
    # Remembered: the next reader fails the same way without a request.
    with pytest.raises(PermanentRefreshError) as again:
        CodexAuth(codex_home).get_token()
    assert again.value.failed_reason() is RefreshTokenFailedReason[reason]
    assert token_server.post_count == 1


# Transient failures ##########################################################

TRANSIENT = [
    ("500-temporary-failure", 500, {"error": "temporary-failure"}),
    ("400-unknown-code", 400, {"error": {"code": "invalid_request"}}),
    ("429-rate-limited", 429, {"error": {"code": "rate_limit_exceeded"}}),
    ("502-html", 502, b"<html>Bad Gateway</html>"),
    ("200-not-json", 200, b"<html>hello</html>"),
    ("200-empty-body", 200, b""),
    ("200-json-array", 200, b'[{"access_token": "a"}]'),
    ("200-json-string", 200, b'"access_token"'),
    ("200-access-token-number", 200, {"access_token": 12345}),
    ("200-access-token-empty", 200, {"access_token": ""}),
    ("200-refresh-token-list", 200, {"access_token": "a.b.c", "refresh_token": ["rt-9"]}),
    ("200-id-token-object", 200, {"access_token": "a.b.c", "id_token": {"jwt": "x"}}),
    ("201-not-json", 201, b"created"),
]


@pytest.mark.parametrize(
    ("status", "body"), [case[1:] for case in TRANSIENT], ids=[case[0] for case in TRANSIENT]
)
def test_transient_failures_leave_storage_unchanged(
    status: int,
    body: Any,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    secrets = secrets_of(path)
    token_server.fail_next(status, body)

    with pytest.raises(TransientRefreshError) as info:
        CodexAuth(codex_home).get_token()

    assert info.value.failed_reason() is None
    assert leaked(str(info.value), secrets) == []
    assert digest(path.read_bytes()) == digest(before)
    assert token_server.post_count == 1


def test_unreachable_endpoint_is_transient(
    codex_home: Path, auth_json: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERRIDE, UNREACHABLE_TOKEN_URL)
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()

    outcome = call_bounded(CodexAuth(codex_home, timeout=5).get_token)

    assert isinstance(outcome.get("error"), TransientRefreshError)
    assert digest(path.read_bytes()) == digest(before)


def test_hung_endpoint_times_out_and_frees_the_lock(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    import fcntl

    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    token_server.hang = True

    outcome = call_bounded(CodexAuth(codex_home, timeout=0.5).get_token)

    assert isinstance(outcome.get("error"), TransientRefreshError)
    assert digest(path.read_bytes()) == digest(before)
    assert token_server.post_count == 1
    # Nobody holds the lock: another open file description takes it at once.
    with open(codex_home / "auth.lock", "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # flock(2), as the Codex CLI takes it
        fcntl.flock(f, fcntl.LOCK_UN)
    # And the next refresh (past the shared backoff) goes through.
    token_server.hang = False
    later = CodexAuth(codex_home, lock_timeout=2, now=lambda: time.time() + 6)
    outcome = call_bounded(later.get_token)
    assert "error" not in outcome, repr(outcome.get("error"))
    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 2
    assert fp(outcome["value"]) == fp(issued["access_token"])
    assert fp(stored(codex_home)["refresh_token"]) == fp(issued["refresh_token"])


def test_oversized_response_is_transient(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    # Valid JSON with a well-typed token: only the size cap can refuse it.
    token_server.fail_next(200, {"access_token": "x" * (1 << 20), "refresh_token": "rt-big"})

    outcome = call_bounded(CodexAuth(codex_home, timeout=10).get_token)

    assert isinstance(outcome.get("error"), TransientRefreshError)
    assert digest(path.read_bytes()) == digest(before)


# Refresh URL and TLS #########################################################

REFUSED_URLS = [
    ("http-remote-host", "http://example.com/oauth/token"),
    ("http-private-address", "http://10.1.2.3/oauth/token"),
    ("http-loopback-lookalike", "http://127.0.0.1.example.com/oauth/token"),
    ("ftp-loopback", "ftp://127.0.0.1/oauth/token"),
]


@pytest.mark.parametrize(
    "url", [case[1] for case in REFUSED_URLS], ids=[case[0] for case in REFUSED_URLS]
)
def test_refresh_url_is_refused_before_any_request(
    url: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Should the check fail, the request goes to the loopback server through these
    # proxies rather than off this machine.
    proxy = f"http://127.0.0.1:{token_server.port}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(OVERRIDE, url)
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()

    with pytest.raises(CodexAuthError) as info:
        CodexAuth(codex_home, timeout=5).get_token()

    assert not isinstance(info.value, RefreshTokenError)
    assert "https" in str(info.value)
    assert token_server.post_count == 0
    assert digest(path.read_bytes()) == digest(before)
    assert not (codex_home / STATE_FILE).exists()


CA_VARS = ("CODEX_CA_CERTIFICATE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def https_token_server(
    codex_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TokenServer, Path]]:
    """A TokenServer behind TLS with a certificate from a throwaway CA; (server, CA file)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for var in CA_VARS:
        monkeypatch.delenv(var, raising=False)
    with TokenServer() as server:
        httpd = server._httpd
        assert httpd is not None
        accept = httpd.get_request

        # TokenServer speaks plain HTTP; wrapping each connection it accepts makes it a real
        # TLS endpoint without touching support.py. The handshake runs on the handler's
        # thread, so a client that rejects the certificate cannot stall the accept loop.
        def get_request() -> tuple[Any, Any]:
            sock, address = accept()
            tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            return tls, address

        httpd.get_request = get_request  # type: ignore[method-assign]
        httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        monkeypatch.setenv(OVERRIDE, f"https://127.0.0.1:{server.port}/oauth/token")
        yield server, ca_file


def test_tls_to_an_untrusted_certificate_fails_as_transient(
    codex_home: Path, auth_json: Callable[..., Path], https_token_server: tuple[TokenServer, Path]
) -> None:
    server, _ = https_token_server
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()

    outcome = call_bounded(CodexAuth(codex_home, timeout=5).get_token)

    assert isinstance(outcome.get("error"), TransientRefreshError)
    assert server.post_count == 0  # the refresh token never left the client
    assert digest(path.read_bytes()) == digest(before)


@pytest.mark.parametrize("var", ["CODEX_CA_CERTIFICATE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_tls_with_the_ca_from_the_environment(
    var: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    https_token_server: tuple[TokenServer, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, ca_file = https_token_server
    monkeypatch.setenv(var, str(ca_file))
    auth_json(access_exp=time.time() - 60)

    outcome = call_bounded(CodexAuth(codex_home, timeout=5).get_token)

    assert "error" not in outcome, repr(outcome.get("error"))
    issued = server.last_issued
    assert issued is not None
    assert server.post_count == 1
    assert fp(outcome["value"]) == fp(issued["access_token"])


# Proxies and redirects ########################################################

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class RecordingProxy(RawServer):
    """A loopback "proxy" that records each request's method and target host, then answers
    502. It keeps nothing else: a body that reached it would hold a token."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        method, target = [*line.split(" "), "", ""][:2]
        host = target.split(":")[0] if method == "CONNECT" else ""
        self.seen.append((method, host or urllib.parse.urlsplit(target).hostname))
        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    """A RecordingProxy set in every proxy variable, with no NO_PROXY."""
    recorder = RecordingProxy()
    for var in PROXY_VARS:
        monkeypatch.setenv(var, recorder.url)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    yield recorder
    recorder.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("own_session", [False, True], ids=["default", "session-with-proxies"])
def test_loopback_refresh_never_goes_through_a_proxy(
    host: str,
    own_session: bool,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    monkeypatch.setenv(OVERRIDE, f"http://{host}:{token_server.port}/oauth/token")
    auth_json(access_exp=time.time() - 60)
    session = None
    if own_session:
        session = requests.Session()
        session.proxies = {"http": proxy.url, "https": proxy.url}

    outcome = call_bounded(CodexAuth(codex_home, timeout=5, session=session).get_token)

    assert "error" not in outcome, repr(outcome.get("error"))
    assert proxy.seen == []
    assert token_server.post_count == 1


def test_https_refresh_elsewhere_still_honours_the_proxy(
    codex_home: Path,
    auth_json: Callable[..., Path],
    proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The proxy sees only the CONNECT (the token would travel inside TLS); ".invalid" never
    # resolves, and nothing leaves this machine.
    monkeypatch.setenv(OVERRIDE, "https://auth.codexauth-test.invalid/oauth/token")
    auth_json(access_exp=time.time() - 60)

    outcome = call_bounded(CodexAuth(codex_home, timeout=5).get_token)

    assert isinstance(outcome.get("error"), TransientRefreshError)
    assert proxy.seen == [("CONNECT", "auth.codexauth-test.invalid")]


def test_a_redirect_is_not_followed(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    with TokenServer() as elsewhere:  # would accept rt-0 and answer 200
        token_server.fail_next(307, b"", headers={"Location": elsewhere.url})

        outcome = call_bounded(CodexAuth(codex_home, timeout=5).get_token)

        assert elsewhere.post_count == 0
    error = outcome.get("error")
    assert isinstance(error, TransientRefreshError)
    assert "HTTP 307" in str(error)
    assert token_server.post_count == 1
    assert digest(path.read_bytes()) == digest(before)


# No token reachable from an error #############################################


def reachable(error: BaseException) -> list[Any]:
    """Every object `error` leads to through causes, contexts, args and attributes.

    Tracebacks are left out: while a refresh runs, its frames hold the token as a local,
    as any Python code's would. What must not hold it is the error itself and what it
    chains or carries, as a requests exception carries `.request.body`.
    """
    skip = (types.TracebackType, types.FrameType, types.ModuleType, type, types.FunctionType)
    found: list[Any] = []
    seen: set[int] = set()
    stack: list[Any] = [error]
    while stack and len(seen) < 50_000:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        found.append(obj)
        if isinstance(obj, (str, bytes, bytearray, int, float)):
            continue
        if isinstance(obj, BaseException):
            stack += [obj.__cause__, obj.__context__, *obj.args]
        if isinstance(obj, dict):
            stack += [*obj.keys(), *obj.values()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            stack += list(attributes.values())
    return found


def token_leaks(error: BaseException, secret: str) -> list[str]:
    """Where `secret` shows in what `error` reaches, by type name (never the secret)."""
    leaks = []
    for obj in reachable(error):
        text: Any = obj
        if isinstance(obj, BaseException):
            text = repr(obj) + str(obj)
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("latin-1")
        if isinstance(text, str) and secret in text:
            leaks.append(type(obj).__name__)
    return leaks


@pytest.mark.parametrize("failure", ["refused", "timeout", "bad-headers"])
def test_no_token_is_reachable_from_a_failed_refresh(
    failure: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "rt-secret-0123456789abcdef"
    token_server.issue(secret)
    auth_json(refresh=secret, access_exp=time.time() - 60)
    if failure == "refused":
        monkeypatch.setenv(OVERRIDE, UNREACHABLE_TOKEN_URL)
    elif failure == "timeout":
        token_server.hang = True
    else:
        # Two Content-Length values: urllib3 1.26 raises its own InvalidHeader for this.
        token_server.fail_next(200, {"access_token": "a.b.c"}, headers={"Content-Length": "999"})

    outcome = call_bounded(CodexAuth(codex_home, timeout=0.5).get_token)

    error = outcome.get("error")
    assert isinstance(error, TransientRefreshError)
    assert len(reachable(error)) > 1  # the walk did look past the error itself
    assert token_leaks(error, secret) == []


@pytest.mark.parametrize("failure", ["refused", "timeout"])
def test_no_token_is_reachable_from_a_failed_revoke(
    failure: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "rt-secret-0123456789abcdef"
    auth_json(refresh=secret)
    if failure == "refused":
        monkeypatch.setenv("CODEX_REVOKE_TOKEN_URL_OVERRIDE", "http://127.0.0.1:9/oauth/revoke")
    else:
        token_server.hang = True

    with pytest.raises(codexauth.CodexAuthError) as info:
        codexauth._post_revoke(codexauth._revoke_url(), secret, "refresh_token", 0.5, None)

    assert "could not revoke the token" in str(info.value)
    assert token_leaks(info.value, secret) == []


# Staleness through get_token() ###############################################

NOW = float(int(time.time()))
DAY = 24 * 3600.0

STALENESS = [
    # id, access exp (relative to NOW; None: no exp), last_refresh age in days, POSTs
    ("fresh-jwt", 3600.0, 1, 0),
    ("exp-in-6-min", 360.0, 1, 0),
    ("exp-in-4-min", 240.0, 1, 1),
    ("expired", -60.0, 1, 1),
    ("expired-long-ago-but-refreshed-just-now", -DAY, 0, 1),
    ("no-exp-last-refresh-9-days", None, 9, 1),
    ("no-exp-last-refresh-7-days", None, 7, 0),
    ("no-exp-no-last-refresh", None, None, 0),
]


@pytest.mark.parametrize(
    ("exp", "age_days", "posts"),
    [case[1:] for case in STALENESS],
    ids=[case[0] for case in STALENESS],
)
def test_get_token_refreshes_only_when_stale(
    exp: float | None,
    age_days: float | None,
    posts: int,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
) -> None:
    last_refresh = None
    if age_days is not None:
        last_refresh = datetime.fromtimestamp(NOW - age_days * DAY, timezone.utc)
    path = auth_json(access_exp=None if exp is None else NOW + exp, last_refresh=last_refresh)
    stored = json.loads(path.read_bytes())["tokens"]["access_token"]

    token = CodexAuth(codex_home, now=lambda: NOW).get_token()

    assert token_server.post_count == posts
    if posts:
        issued = token_server.last_issued
        assert issued is not None
        assert fp(token) == fp(issued["access_token"])
    else:
        assert fp(token) == fp(stored)


def test_api_key_mode_returns_the_key_and_never_refreshes(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(api_key="sk-test-key", access_exp=NOW - DAY)  # the tokens beside it are dead

    auth = CodexAuth(codex_home, now=lambda: NOW)

    assert fp(auth.get_token()) == fp("sk-test-key")
    assert auth.mode is codexauth.AuthMode.API_KEY
    assert token_server.post_count == 0


def test_expiring_token_survives_a_transient_failure_with_a_warning(
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="codexauth")
    path = auth_json(access_exp=time.time() + 120)
    before = path.read_bytes()
    secrets = secrets_of(path)
    stored = secrets[0]
    token_server.fail_next(500, {"error": "temporary-failure"})

    token = CodexAuth(codex_home).get_token()

    assert fp(token) == fp(stored)
    assert token_server.post_count == 1
    warnings = [
        r for r in caplog.records if r.name == "codexauth" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert leaked(caplog.text, secrets) == []
    assert digest(path.read_bytes()) == digest(before)
    # Inside the backoff another reader also gets the valid token, without a request.
    assert fp(CodexAuth(codex_home).get_token()) == fp(stored)
    assert token_server.post_count == 1


@pytest.mark.parametrize(
    ("exp", "age_days"),
    [(-60.0, 1), (None, 9)],
    ids=["expired", "no-exp-overdue"],
)
def test_stale_token_with_a_transient_failure_raises(
    exp: float | None,
    age_days: float,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
) -> None:
    now = time.time()
    auth_json(
        access_exp=None if exp is None else now + exp,
        last_refresh=datetime.fromtimestamp(now - age_days * DAY, timezone.utc),
    )
    token_server.fail_next(500, {"error": "temporary-failure"})

    with pytest.raises(TransientRefreshError):
        CodexAuth(codex_home).get_token()
    assert token_server.post_count == 1


# Failure memory in the sidecar ###############################################


def test_permanent_failure_is_remembered_until_a_new_login(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # A refresh token the server never issued: it answers 401 refresh_token_invalidated.
    path = auth_json(access_exp=time.time() - 60, refresh="rt-never-issued")
    before = path.read_bytes()
    secrets = secrets_of(path)

    with pytest.raises(PermanentRefreshError) as first:
        CodexAuth(codex_home).get_token()
    assert first.value.failed_reason() is RefreshTokenFailedReason.REVOKED
    assert token_server.post_count == 1

    with pytest.raises(PermanentRefreshError) as second:
        CodexAuth(codex_home).refresh_token()
    assert second.value.failed_reason() is RefreshTokenFailedReason.REVOKED
    assert str(second.value) == REVOKED_MESSAGE
    assert token_server.post_count == 1

    state = codex_home / STATE_FILE
    assert stat.S_IMODE(os.lstat(state).st_mode) == 0o600
    assert leaked(state.read_bytes(), secrets) == []
    assert digest(path.read_bytes()) == digest(before)  # nothing added to auth.json

    # A new login (another refresh token) works again at once.
    token_server.issue("rt-new-login")
    auth_json(access_exp=time.time() - 60, refresh="rt-new-login")
    token = CodexAuth(codex_home).get_token()
    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 2
    assert fp(token) == fp(issued["access_token"])
    assert fp(stored(codex_home)["refresh_token"]) == fp(issued["refresh_token"])


def test_transient_failure_backs_off_for_five_seconds(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60)
    token_server.fail_next(500, {"error": "temporary-failure"})

    with pytest.raises(TransientRefreshError):
        CodexAuth(codex_home).get_token()
    assert token_server.post_count == 1

    with pytest.raises(TransientRefreshError):
        CodexAuth(codex_home).get_token()
    assert token_server.post_count == 1

    token = CodexAuth(codex_home, now=lambda: time.time() + 6).get_token()
    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 2
    assert fp(token) == fp(issued["access_token"])


# Peers that take no lock (the Codex CLI) #####################################


def test_adopts_tokens_a_peer_wrote_after_our_snapshot(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    auth = CodexAuth.from_auth_storage(codex_home)
    assert auth is not None
    peer = codex_peer.refresh(token_server.url, "rt-0")
    codex_peer.write_tokens(path, peer)

    token = auth.get_token()

    assert fp(token) == fp(peer["access_token"])
    assert token_server.post_count == 1  # the peer's; none of ours


def test_adopts_tokens_a_peer_wrote_while_we_waited_for_the_lock(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    import fcntl

    path = auth_json(access_exp=time.time() - 60)
    auth = CodexAuth(codex_home, lock_timeout=GUARD)
    # Another process holds the refresh lock, so our refresh waits for it.
    with open(codex_home / "auth.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        outcome: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: outcome.update(v=auth.get_token()), daemon=True)
        waiter.start()
        time.sleep(0.2)  # let it find the token stale and start waiting
        peer = codex_peer.refresh(token_server.url, "rt-0")
        codex_peer.write_tokens(path, peer)
        waiter.join(GUARD)
        assert not waiter.is_alive(), "still waiting for the lock after the peer wrote"

    assert fp(outcome.get("v")) == fp(peer["access_token"])
    assert token_server.post_count == 1


def test_reused_answer_adopts_a_peer_that_writes_after_our_post(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    # The peer has spent rt-0 at the server but not yet written auth.json.
    peer = codex_peer.refresh(token_server.url, "rt-0")

    def write_after_our_post() -> None:
        deadline = time.monotonic() + GUARD
        while token_server.post_count < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)
        codex_peer.write_tokens(path, peer)

    writer = threading.Thread(target=write_after_our_post, daemon=True)
    writer.start()
    outcome = call_bounded(CodexAuth(codex_home).get_token)
    writer.join(GUARD)

    assert "error" not in outcome, repr(outcome.get("error"))
    assert fp(outcome["value"]) == fp(peer["access_token"])
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused"]
    # The wait for the peer was announced to other processes; no failure was recorded.
    assert json.loads((codex_home / STATE_FILE).read_bytes())["reason"] is None
    assert fp(stored(codex_home)["refresh_token"]) == fp(peer["refresh_token"])


def test_reused_with_no_peer_writing_is_exhausted(
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    short_reuse_window: float,
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    codex_peer.refresh(token_server.url, "rt-0")  # spent elsewhere; nobody ever writes the result

    outcome = call_bounded(CodexAuth(codex_home).get_token)

    error = outcome.get("error")
    assert isinstance(error, PermanentRefreshError)
    assert error.failed_reason() is RefreshTokenFailedReason.EXHAUSTED
    assert str(error) == EXHAUSTED_MESSAGE
    assert token_server.post_count == 2
    assert digest(path.read_bytes()) == digest(before)


def test_a_dead_login_is_remembered_so_the_next_caller_fails_fast(
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    short_reuse_window: float,
) -> None:
    # Once a fresh read after the whole reuse window found the spent token still stored,
    # the verdict is recorded: the next caller says "sign in again" at once, without
    # queueing for the lock (held here, as by a peer mid-refresh of another login's read).
    auth_json(access_exp=time.time() - 60)
    codex_peer.refresh(token_server.url, "rt-0")  # spent elsewhere; nobody writes the result
    first = call_bounded(CodexAuth(codex_home).get_token)
    assert isinstance(first.get("error"), PermanentRefreshError), repr(first.get("error"))

    lock = codexauth.FileStore(codex_home).lock(GUARD, lambda: False)
    assert lock is not None
    try:
        second = call_bounded(CodexAuth(codex_home, lock_timeout=0.5).get_token)
    finally:
        lock.release()

    error = second.get("error")
    assert isinstance(error, PermanentRefreshError), repr(error)
    assert error.failed_reason() is RefreshTokenFailedReason.EXHAUSTED
    assert token_server.post_count == 2


def test_a_wait_for_a_peers_result_ends_at_the_lock_timeout_as_transient(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # Answered "reused": a lockless peer's write may land for REUSE_WINDOW, but we wait no
    # longer than our own lock timeout, and that is no verdict on the login (exit 5, not 4).
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    codex_peer.refresh(token_server.url, "rt-0")  # spent elsewhere; the result still to come
    start = time.monotonic()

    outcome = call_bounded(CodexAuth(codex_home, lock_timeout=0.5).get_token)

    elapsed = time.monotonic() - start
    error = outcome.get("error")
    assert isinstance(error, TransientRefreshError), repr(error)
    assert "its result has not arrived yet" in str(error)
    assert elapsed < codexauth.REUSE_WINDOW / 2
    assert token_server.post_count == 2
    assert json.loads((codex_home / STATE_FILE).read_bytes())["reason"] is None
    assert digest(path.read_bytes()) == digest(before)


# Threads #####################################################################


@pytest.mark.parametrize("shared", [True, False], ids=["one-shared-CodexAuth", "one-per-thread"])
def test_threads_refresh_once(
    shared: bool, codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60)
    n = 8
    common = CodexAuth(codex_home)
    barrier = threading.Barrier(n, timeout=GUARD)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        auth = common if shared else CodexAuth(codex_home)
        barrier.wait()
        try:
            results[i] = auth.get_token()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    assert not any(thread.is_alive() for thread in threads)

    assert [type(r).__name__ for r in results] == ["str"] * n
    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 1
    assert {fp(r) for r in results} == {fp(issued["access_token"])}


# 401 recovery ################################################################


def test_recover_unauthorized_adopts_a_peers_token(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json()
    auth = CodexAuth(codex_home)
    rejected = auth.get_token()
    peer = codex_peer.refresh(token_server.url, "rt-0")
    codex_peer.write_tokens(path, peer)

    token = auth.recover_unauthorized(rejected)

    assert fp(token) == fp(peer["access_token"])
    assert token_server.post_count == 1  # the peer's; none of ours


def test_recover_unauthorized_forces_one_refresh(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json()  # fresh by its exp, yet the API said 401
    auth = CodexAuth(codex_home)
    rejected = auth.get_token()

    token = auth.recover_unauthorized(rejected)

    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 1
    assert fp(token) == fp(issued["access_token"])
    assert fp(stored(codex_home)["refresh_token"]) == fp(issued["refresh_token"])


@pytest.mark.parametrize("now_holds", ["another-account", "an-api-key", "no-login"])
def test_recover_unauthorized_gives_up_when_the_login_changed(
    now_holds: str, codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json()
    auth = CodexAuth(codex_home)
    rejected = auth.get_token()
    if now_holds == "another-account":
        token_server.issue("rt-other")
        auth_json(refresh="rt-other", account_id="acct-other", id_tok=id_token(account_id="x"))
    elif now_holds == "an-api-key":
        auth_json(api_key="sk-test-key")
    else:
        path.unlink()

    assert auth.recover_unauthorized(rejected) is None
    assert token_server.post_count == 0


@pytest.mark.skipif(os.name != "posix", reason="holds the lock with flock(2)")
@pytest.mark.parametrize(
    ("seconds_left", "waits"),
    [(200, False), (30, True)],
    ids=["time-to-spare-goes-ahead", "nearly-expired-waits-for-the-peer"],
)
def test_expiring_token_waits_on_a_busy_peer_only_when_nearly_expired(
    codex_home: Path, token_server: TokenServer, seconds_left: float, waits: bool
) -> None:
    import fcntl

    old_access = access_token(time.time() + seconds_left, seq="old")
    write_auth_json(codex_home, access=old_access, refresh="rt-0")
    # A peer is mid-refresh: it holds auth.lock.
    lock_fd = os.open(codex_home / "auth.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    got: list[str] = []
    caller = threading.Thread(
        target=lambda: got.append(CodexAuth(codex_home, lock_timeout=60).get_token()),
        daemon=True,
    )
    try:
        caller.start()
        if not waits:
            caller.join(timeout=20)  # hang guard: waiting would take the whole 60 s
            assert not caller.is_alive()
            assert [fp(token) for token in got] == [fp(old_access)]
            assert token_server.post_count == 0
            return
        caller.join(timeout=1)
        assert caller.is_alive()  # queued behind the peer
        peer_access = access_token(time.time() + 3600, seq="peer")
        write_auth_json(codex_home, access=peer_access, refresh="rt-peer")
    finally:
        os.close(lock_fd)  # the peer is done
    caller.join(timeout=20)
    assert [fp(token) for token in got] == [fp(peer_access)]
    assert token_server.post_count == 0


# Codex parity: the guarded refresh, the account guard, serve-while-valid #####


def test_refresh_token_adopts_what_a_peer_wrote_since_our_snapshot(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # A fresh token: nothing but the guarded reload can keep refresh_token() from POSTing.
    path = auth_json()
    auth = CodexAuth.from_auth_storage(codex_home)
    assert auth is not None
    peer = codex_peer.refresh(token_server.url, "rt-0")
    codex_peer.write_tokens(path, peer)
    assert token_server.post_count == 1

    token = auth.refresh_token()

    assert fp(token) == fp(peer["access_token"])
    assert token_server.post_count == 1  # adopted: no second request
    assert fp(stored(codex_home)["refresh_token"]) == fp(peer["refresh_token"])


def test_refresh_token_refreshes_when_storage_still_holds_our_snapshot(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json()
    auth = CodexAuth.from_auth_storage(codex_home)
    assert auth is not None

    token = auth.refresh_token()

    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 1
    assert fp(token) == fp(issued["access_token"])
    # The object's snapshot moved on: a second forced refresh refreshes again.
    auth.refresh_token()
    assert token_server.post_count == 2


def switch_login(codex_home: Path, server: TokenServer, other: str) -> None:
    """Sign in to another account, log out, or store an API key, as a user would."""
    if other == "another-account":
        server.issue("rt-B")
        write_auth_json(
            codex_home, access_exp=time.time() - 60, account_id="acct-B", refresh="rt-B"
        )
    elif other == "logged-out":
        (codex_home / "auth.json").unlink()
    else:
        write_auth_json(codex_home, tokens=False, api_key="sk-other")


def file_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


OTHER_LOGINS = ["another-account", "logged-out", "api-key"]


@pytest.mark.parametrize("other", OTHER_LOGINS)
def test_refresh_token_never_refreshes_or_adopts_another_login(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, other: str
) -> None:
    auth_json(access_exp=time.time() - 60, account_id="acct-A")
    auth = CodexAuth.from_auth_storage(codex_home)  # holds account A
    assert auth is not None
    switch_login(codex_home, token_server, other)
    before = file_bytes(codex_home / "auth.json")

    with pytest.raises(PermanentRefreshError) as caught:
        auth.refresh_token()

    assert caught.value.failed_reason() is RefreshTokenFailedReason.OTHER
    assert str(caught.value) == ACCOUNT_CHANGED_MESSAGE
    assert token_server.post_count == 0
    assert file_bytes(codex_home / "auth.json") == before


@pytest.mark.parametrize("other", OTHER_LOGINS)
def test_get_token_never_refreshes_or_adopts_a_login_switched_while_it_waited(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, other: str
) -> None:
    auth_json(access_exp=time.time() - 60, account_id="acct-A")
    auth = CodexAuth(codex_home)
    lock = codexauth.FileStore(codex_home).lock(GUARD, lambda: False)
    assert lock is not None
    outcome: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: outcome.update(call_bounded(auth.get_token)))
    try:
        waiter.start()
        time.sleep(0.2)  # it read account A and queued on the lock
        switch_login(codex_home, token_server, other)
        before = file_bytes(codex_home / "auth.json")
    finally:
        lock.release()
    waiter.join(GUARD)

    error = outcome.get("error")
    assert isinstance(error, PermanentRefreshError), type(error)
    assert str(error) == ACCOUNT_CHANGED_MESSAGE
    assert token_server.post_count == 0
    assert file_bytes(codex_home / "auth.json") == before


def test_credentials_come_from_one_snapshot(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60, account_id="acct-A")
    token, account = CodexAuth(codex_home)._credentials()
    issued = token_server.last_issued
    assert issued is not None
    assert (fp(token), account) == (fp(issued["access_token"]), "acct-A")


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ((401, {"error": {"code": "refresh_token_expired"}}), "permanent"),
        ((401, {"error": {"code": "refresh_token_reused"}}), "permanent-reused"),
        ((500, {"error": "temporary"}), "transient"),
    ],
    ids=["expired", "reused", "server-error"],
)
def test_a_failed_proactive_refresh_serves_the_still_valid_token(
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    caplog: pytest.LogCaptureFixture,
    answer: tuple[int, dict[str, Any]],
    code: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codexauth, "REUSE_WINDOW", 0.2)  # no peer will write
    path = auth_json(access_exp=time.time() + 30)  # mandatory window: it waits, then fails
    stored = secrets_of(path)[0]
    token_server.fail_next(*answer)

    token = CodexAuth(codex_home).get_token()

    assert fp(token) == fp(stored)
    assert token_server.post_count == 1
    assert any(r.levelno == logging.WARNING for r in caplog.records if r.name == "codexauth")
    assert leaked(caplog.text, secrets_of(path)) == []


def test_a_failed_refresh_of_an_expired_token_raises(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 1)
    token_server.fail_next(401, {"error": {"code": "refresh_token_expired"}})
    with pytest.raises(PermanentRefreshError):
        CodexAuth(codex_home).get_token()


def test_a_2xx_without_an_access_token_is_no_success_for_an_expired_token(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    last_refresh = load(codex_home).last_refresh
    token_server.omit_fields = {"access_token"}

    with pytest.raises(TransientRefreshError, match="without a usable access token"):
        CodexAuth(codex_home).get_token()

    # The rotated refresh token is kept (it is the only live one); the dead access
    # token is not passed off as refreshed.
    issued = token_server.last_issued
    assert issued is not None
    doc = load(codex_home)
    assert doc.tokens is not None
    assert fp(doc.tokens.refresh_token) == fp(issued["refresh_token"])
    assert doc.last_refresh == last_refresh
    assert json.loads(path.read_bytes())["tokens"]["refresh_token"] in token_server.valid


def test_refresh_with_an_api_key_login_returns_the_key_and_writes_nothing(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(tokens=False, api_key="sk-test-key")
    before = path.read_bytes()
    assert fp(CodexAuth(codex_home).refresh_token()) == fp("sk-test-key")
    assert token_server.post_count == 0
    assert digest(path.read_bytes()) == digest(before)
    assert sorted(p.name for p in codex_home.iterdir()) == ["auth.json"]


@pytest.mark.parametrize(
    ("auth_mode", "api_key", "expected"),
    [
        ("chatgpt", "sk-ignored", codexauth.AuthMode.CHATGPT),
        ("apikey", "sk-key", codexauth.AuthMode.API_KEY),
        (None, "sk-key", codexauth.AuthMode.API_KEY),
        (None, None, codexauth.AuthMode.CHATGPT),
    ],
    ids=["chatgpt-beats-a-key", "apikey", "no-mode-key", "no-mode-tokens"],
)
def test_auth_mode_decides_when_written(
    codex_home: Path,
    auth_json: Callable[..., Path],
    auth_mode: str | None,
    api_key: str | None,
    expected: codexauth.AuthMode,
) -> None:
    auth_json(api_key=api_key, extra_top={} if auth_mode is None else {"auth_mode": auth_mode})
    assert CodexAuth(codex_home).mode is expected


@pytest.mark.parametrize(
    "auth_mode", ["chatgptAuthTokens", "personalAccessToken", "agentIdentity", "bedrockApiKey"]
)
def test_a_login_mode_codexauth_cannot_serve_is_named_not_guessed(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, auth_mode: str
) -> None:
    path = auth_json(access_exp=time.time() - 60, extra_top={"auth_mode": auth_mode})
    before = path.read_bytes()
    with pytest.raises(codexauth.UnsupportedAuthModeError) as caught:
        CodexAuth(codex_home).get_token()
    assert not isinstance(caught.value, codexauth.NotLoggedInError)
    assert auth_mode in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert token_server.post_count == 0
    assert digest(path.read_bytes()) == digest(before)


def test_a_peer_that_wrote_an_expired_token_is_refreshed_from_its_refresh_token(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60)
    auth = CodexAuth(codex_home)
    store = codexauth.FileStore(codex_home)
    lock = store.lock(GUARD, lambda: False)
    assert lock is not None
    outcome: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: outcome.update(token=auth.get_token()))
    try:
        waiter.start()
        time.sleep(0.2)  # the waiter is queued on the lock
        # While the lock is held, a peer rotates the tokens and writes an expired one.
        peer = codex_peer.refresh(token_server.url, "rt-0")
        peer["access_token"] = access_token(time.time() - 10)
        codex_peer.write_tokens(codex_home / "auth.json", peer)
    finally:
        lock.release()
    waiter.join(GUARD)
    assert not waiter.is_alive()

    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 2
    assert token_server.requests[-1]["refresh_token"] == peer["refresh_token"]
    assert fp(outcome["token"]) == fp(issued["access_token"])
    assert codexauth._jwt_expiry(outcome["token"]) or time.time() < 0


def test_a_clock_hours_ahead_does_not_refresh_on_every_call(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60)
    ahead = lambda: time.time() + 2 * 3600  # noqa: E731  # this machine's clock, 2 h fast

    for _ in range(3):
        for _ in range(4):  # new processes, as far as caches go
            CodexAuth(codex_home, now=ahead).get_token()

    assert token_server.post_count == 1
    state = json.loads((codex_home / STATE_FILE).read_bytes())
    assert 7000 < state["clock_skew"] < 7400


def test_the_clock_skew_survives_telling_peers_of_a_failure(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # The skew is this machine's; recording a failure for peers keeps it.
    auth_json(access_exp=time.time() - 60)
    ahead = lambda: time.time() + 2 * 3600  # noqa: E731  # this machine's clock, 2 h fast
    first = CodexAuth(codex_home, now=ahead).get_token()
    token_server.fail_next(503, {"error": "unavailable"})
    with pytest.raises(TransientRefreshError):
        CodexAuth(codex_home, now=ahead).refresh_token()

    token = CodexAuth(codex_home, now=ahead).get_token()  # fresh, by the issuer's clock

    assert fp(token) == fp(first)
    assert token_server.post_count == 2
    state = json.loads((codex_home / STATE_FILE).read_bytes())
    assert 7000 < state["clock_skew"] < 7400


def test_a_state_file_that_cannot_be_written_does_not_change_the_outcome(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # Telling peers is best effort: the caller sees the refresh's own outcome.
    auth_json(access_exp=time.time() - 60)
    (codex_home / STATE_FILE).mkdir()  # no file can be renamed over it
    token_server.fail_next(503, {"error": "unavailable"})

    with pytest.raises(TransientRefreshError):
        CodexAuth(codex_home).get_token()

    assert token_server.post_count == 1


@pytest.mark.parametrize(
    "retry_after", ["time.time() + 3600", "float('inf')", "float('nan')", "1e300"]
)
def test_a_backoff_is_honoured_only_up_to_its_own_length(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, retry_after: str
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    fingerprint = codexauth._fingerprint(json.loads(path.read_bytes())["tokens"]["refresh_token"])
    state = {"refresh_token_sha256": fingerprint, "reason": None, "retry_after": eval(retry_after)}
    (codex_home / STATE_FILE).write_text(json.dumps(state))  # json writes inf/nan as Infinity/NaN

    CodexAuth(codex_home).get_token()

    assert token_server.post_count == 1


def test_an_answer_without_an_access_token_while_a_peer_logs_in_anew_does_not_hang(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # Once, this path asked for a token again while holding the refresh lock, and waited
    # for its own lock until lock_timeout.
    auth_json(access_exp=time.time() - 60)
    token_server.omit_fields = {"access_token"}
    token_server.delay = 0.5

    def peer_logs_in_anew() -> None:
        deadline = time.monotonic() + GUARD
        while token_server.post_count == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        # A lockless peer, mid-POST, writes a login that needs a refresh too.
        write_auth_json(codex_home, access_exp=time.time() - 60, refresh="rt-new-login")

    peer = threading.Thread(target=peer_logs_in_anew)
    peer.start()
    outcome = call_bounded(CodexAuth(codex_home, lock_timeout=GUARD).get_token)
    peer.join(GUARD)

    error = outcome.get("error")
    assert isinstance(error, TransientRefreshError), type(error)
    assert not isinstance(error, codexauth.LockTimeoutError)
    assert fp(stored(codex_home)["refresh_token"]) == fp("rt-new-login")  # kept
    assert token_server.post_count == 1


# Logout: revoke, then delete, like `codex logout` #############################

REVOKE_OVERRIDE = "CODEX_REVOKE_TOKEN_URL_OVERRIDE"


def test_logout_revokes_the_refresh_token_exactly_as_codex(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(refresh="rt-0")
    auth = CodexAuth(codex_home)

    assert auth.logout() is True

    assert not path.exists()
    assert auth.revoke_error is None
    assert token_server.redacted_revoke_log() == ["200 refresh_token"]
    (body,) = token_server.revoke_requests
    assert sorted(body) == ["client_id", "token", "token_type_hint"]
    assert fp(body["token"]) == fp("rt-0")
    assert body["token_type_hint"] == "refresh_token"
    assert body["client_id"] == codexauth.CLIENT_ID
    # The server forgot the token: a login restored from a backup cannot refresh with it.
    auth_json(refresh="rt-0", access_exp=time.time() - 60)
    with pytest.raises(PermanentRefreshError) as info:
        CodexAuth(codex_home).get_token()
    assert info.value.reason is RefreshTokenFailedReason.REVOKED


def test_logout_revokes_the_access_token_when_there_is_no_refresh_token(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(refresh="")
    access = json.loads(path.read_bytes())["tokens"]["access_token"]

    assert codexauth.logout(codex_home) is True

    (body,) = token_server.revoke_requests
    assert sorted(body) == ["token", "token_type_hint"]  # no client id, as Codex
    assert fp(body["token"]) == fp(access)
    assert body["token_type_hint"] == "access_token"
    assert not path.exists()


@pytest.mark.parametrize(
    "login",
    [
        {"tokens": False, "api_key": "sk-test-key"},
        {"api_key": "sk-test-key"},  # a key beside tokens: the key is the login
        {"extra_top": {"auth_mode": "apikey"}},
        {"refresh": "", "access": ""},
    ],
    ids=["api-key", "api-key-beside-tokens", "auth-mode-apikey", "empty-tokens"],
)
def test_logout_with_nothing_to_revoke_only_deletes(
    login: dict[str, Any],
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
) -> None:
    path = auth_json(**login)

    assert codexauth.logout(codex_home) is True

    assert token_server.revoke_count == 0
    assert not path.exists()


def test_logout_keep_token_only_deletes(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json()

    assert CodexAuth(codex_home).logout(revoke=False) is True

    assert token_server.revoke_count == 0
    assert not path.exists()


def test_logout_without_auth_json_makes_no_request(
    codex_home: Path, token_server: TokenServer
) -> None:
    assert codexauth.logout(codex_home) is False
    assert token_server.revoke_count == 0


@pytest.mark.parametrize("failure", ["503", "refused", "timeout", "corrupt-auth-json"])
def test_a_failed_revoke_still_deletes_with_a_warning(
    failure: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = auth_json(refresh="rt-0")
    if failure == "503":
        token_server.fail_next_revoke(503, {"error": {"code": "unavailable"}})
    elif failure == "refused":
        monkeypatch.setenv(REVOKE_OVERRIDE, "http://127.0.0.1:9/oauth/revoke")
    elif failure == "timeout":
        token_server.hang = True
    else:
        path.write_bytes(b'{"tokens": [')
    auth = CodexAuth(codex_home, timeout=0.5)

    with caplog.at_level(logging.WARNING, logger="codexauth"):
        outcome = call_bounded(auth.logout)

    assert outcome.get("value") is True, repr(outcome.get("error"))
    assert not path.exists()
    assert auth.revoke_error is not None
    assert auth.revoke_error.startswith("could not revoke the token")
    assert "\n" not in auth.revoke_error and "rt-0" not in auth.revoke_error
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [auth.revoke_error]


@pytest.mark.parametrize(
    "url",
    ["http://example.com/oauth/revoke", "http://10.1.2.3/oauth/revoke", "ftp://127.0.0.1/x"],
    ids=["http-remote-host", "http-private-address", "ftp-loopback"],
)
def test_logout_refuses_a_revoke_url_before_any_request(
    url: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Should the check fail, the request reaches the loopback server through these proxies.
    for var in PROXY_VARS:
        monkeypatch.setenv(var, f"http://127.0.0.1:{token_server.port}")
    monkeypatch.setenv(REVOKE_OVERRIDE, url)
    path = auth_json()
    before = path.read_bytes()

    with pytest.raises(CodexAuthError) as info:
        CodexAuth(codex_home, timeout=5).logout()

    assert "revoke URL" in str(info.value) and "https" in str(info.value)
    assert token_server.revoke_count == 0 and token_server.post_count == 0
    assert digest(path.read_bytes()) == digest(before)


@pytest.mark.parametrize(
    ("revoke", "refresh", "expected"),
    [
        (None, None, "https://auth.openai.com/oauth/revoke"),
        (
            None,
            "http://127.0.0.1:1234/oauth/token?unified=true",
            "http://127.0.0.1:1234/oauth/revoke",
        ),
        (None, "https://auth.example.org/prefix/token", "https://auth.example.org/oauth/revoke"),
        (None, "not a url", "https://auth.openai.com/oauth/revoke"),
        ("http://[::1]:9/r", "http://127.0.0.1:1234/oauth/token", "http://[::1]:9/r"),
    ],
    ids=["default", "derived-drops-query", "derived-replaces-path", "unparsable", "override"],
)
def test_revoke_url_follows_codex_rule(
    revoke: str | None, refresh: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in ((REVOKE_OVERRIDE, revoke), (OVERRIDE, refresh)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert codexauth._revoke_url() == expected


def test_revoke_url_override_wins_over_the_refresh_override(
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth_json()
    with TokenServer() as revoker:
        monkeypatch.setenv(REVOKE_OVERRIDE, revoker.revoke_url)

        assert codexauth.logout(codex_home) is True

        assert revoker.revoke_count == 1
    assert token_server.revoke_count == 0


@pytest.mark.skipif(os.name != "posix", reason="holds the lock with flock(2)")
def test_logout_waits_for_a_peer_mid_refresh(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    import fcntl

    path = auth_json()
    before = path.read_bytes()
    lock_fd = os.open(codex_home / "auth.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # a peer is refreshing
    try:
        with pytest.raises(codexauth.LockTimeoutError):
            CodexAuth(codex_home, lock_timeout=0.3).logout()
    finally:
        os.close(lock_fd)

    assert token_server.revoke_count == 0
    assert digest(path.read_bytes()) == digest(before)


def test_each_way_into_a_refresh_names_its_reason_as_codex_does(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60)
    auth = CodexAuth(codex_home)
    auth.get_token()  # stale: proactive
    auth.refresh_token()  # asked for outright
    rejected = auth.get_token()
    assert auth.recover_unauthorized(rejected) is not None  # an API said 401

    reasons = [body["refresh_reason"] for body in token_server.requests]
    assert reasons == ["proactive_expiry", "forced", "unauthorized_recovery"]


# The socket behind a streamed answer ############################################


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("path", ["/keep-alive", "/close"])
def test_the_deadline_finds_the_socket_of_a_streamed_answer(path: str) -> None:
    # The deadline shuts the socket that a streamed answer reads from; urllib3 offers no
    # public way to reach it, so it is found through private attributes (setup.cfg pins
    # the urllib3 range this was checked with). When an urllib3 moves them, this fails,
    # rather than a refresh that overruns its deadline.
    import requests
    import urllib3

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}{path}"
        with requests.get(url, stream=True, timeout=10) as response:
            sock = codexauth._response_socket(response)
            assert isinstance(sock, socket.socket), (
                f"urllib3 {urllib3.__version__}: no socket found behind the response"
            )
            assert sock.fileno() >= 0
    finally:
        server.shutdown()
        server.server_close()
