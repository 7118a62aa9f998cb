"""The requests and httpx adapters against a real loopback API and the loopback TokenServer:
401 -> at most one refresh -> one retry with the body intact, never a loop; the account
header; API-key mode; adopting a peer's token but never another account's; and what
``import codexauth`` pulls in.

The API records every request it sees; tokens in it are compared through fp() only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import site
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import requests
from support import (
    REPO_ROOT,
    TokenServer,
    access_token,
    child,
    fp,
    id_token,
    run_py,
    stored,
    write_auth_json,
)

import codexauth

HTTP_TIMEOUT = 10.0
API_KEY = "sk-test-adapters-0123456789"
BINARY_BODY = bytes(range(256)) * 40  # every byte value, 10 KiB
JSON_BODY = {"model": "gpt-test", "input": "h\u00e9llo \u2603", "n": [1, 2.5, None]}


# A loopback API ###############################################################


class Hit:
    """One request the API saw. `bearer` is a token: compare `bearer_fp`, never print it."""

    __slots__ = ("body", "bearer", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        auth = headers.pop("authorization", "")
        self.bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        self.headers = headers  # lower-cased names, Authorization removed
        self.body = body

    @property
    def bearer_fp(self) -> str | None:
        return fp(self.bearer)

    def __repr__(self) -> str:
        return f"Hit({self.method} {self.path}, bearer={self.bearer_fp}, {len(self.body)} bytes)"


class ApiServer:
    """An API on 127.0.0.1 that answers 200 only when ``accept(bearer)`` says so, else 401.

    A 200 echoes the body and headers it saw (Authorization only as an fp()), so a test
    can check what the client sent on the accepted attempt.  `accept` runs on the
    server's thread before the answer; a test may use it to play a peer at that moment.
    """

    def __init__(self, accept: Callable[[str | None], bool]) -> None:
        self.accept = accept
        self.hits: list[Hit] = []
        self.redirects: dict[str, tuple[int, str]] = {}  # path -> (status, Location)
        self._lock = threading.Lock()
        handler = type("Handler", (_ApiHandler,), {"api": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1/responses"

    def redirect(self, path: str, status: int, location: str) -> str:
        """Answer requests for `path` with a redirect (recorded, `accept` not asked); its URL."""
        self.redirects[path] = (status, location)
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def record(self, hit: Hit) -> bool:
        with self._lock:
            self.hits.append(hit)
        return self.accept(hit.bearer)


class _ApiHandler(BaseHTTPRequestHandler):
    api: ApiServer  # set on the subclass ApiServer makes
    protocol_version = "HTTP/1.1"  # keep-alive, so the retry may reuse the connection

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        hit = Hit(self.command, self.path, headers, body)
        redirect = self.api.redirects.get(self.path)
        if redirect is not None:
            with self.api._lock:
                self.api.hits.append(hit)
            self._send(redirect[0], {}, {"Location": redirect[1]})
            return
        try:
            accepted = self.api.record(hit)
        except Exception as exc:  # a broken test hook shows up as a 500, not a hang
            self._send(500, {"error": f"test hook failed: {type(exc).__name__}"})
            return
        if not accepted:
            self._send(401, {"error": {"message": "Invalid bearer token", "code": None}})
            return
        echo = {"body": body.decode("latin-1"), "headers": hit.headers, "bearer": hit.bearer_fp}
        self._send(200, echo)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers, up to the blank line that ends the body
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line."""


# What the API accepts.


def newest_issued(token_server: TokenServer) -> Callable[[str | None], bool]:
    """Only the access token the TokenServer issued last (none before the first refresh)."""

    def accept(bearer: str | None) -> bool:
        issued = token_server.last_issued
        return issued is not None and bearer == issued.get("access_token")

    return accept


def current_login(codex_home: Path) -> Callable[[str | None], bool]:
    """Only what auth.json holds right now: the API key, or the access token."""

    def accept(bearer: str | None) -> bool:
        doc = json.loads((codex_home / "auth.json").read_bytes())
        key = doc.get("OPENAI_API_KEY")
        return bearer == (key if key is not None else doc["tokens"]["access_token"])

    return accept


def reject_all(bearer: str | None) -> bool:
    return False


def peer_writes_first(
    codex_home: Path, **peer_login: Any
) -> tuple[Callable[[str | None], bool], list[str]]:
    """Before answering the first request, a peer writes a new login; then accept only it.

    The peer is what a concurrent process does: it replaces auth.json atomically with
    tokens from its own refresh (or login).  Returns the acceptor and a list that receives
    the peer's access token.
    """
    written: list[str] = []

    def accept(bearer: str | None) -> bool:
        if not written:
            token = access_token(time.time() + 3600, seq="peer")
            write_auth_json(codex_home, access=token, **peer_login)
            written.append(token)
            return False
        return bearer == written[0]

    return accept, written


# Clients ######################################################################


class Reply:
    """What the caller got back: the status and, for a 200, the API's echo."""

    def __init__(self, status: int, echo: dict[str, Any] | None) -> None:
        self.status = status
        self.echo = echo

    def __repr__(self) -> str:
        return f"Reply({self.status})"


def _body_kwargs(client: str, body: str, tmp_path: Path) -> tuple[dict[str, Any], bytes | None]:
    """Keyword arguments that send `body`, and the exact bytes expected (None: JSON)."""
    if body == "json":
        return {"json": JSON_BODY}, None
    if body == "bytes":
        name = "data" if client == "requests" else "content"
        return {name: BINARY_BODY}, BINARY_BODY
    assert body == "file" and client == "requests"
    path = tmp_path / "upload.bin"
    path.write_bytes(BINARY_BODY)
    return {"data": path}, BINARY_BODY  # opened by send()


def send(
    client: str,
    url: str,
    codex_home: Path,
    auth_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Reply:
    """POST through `client` ("requests", "httpx", "httpx-async") with the codexauth adapter.

    `auth_options` go to the adapter (and so to CodexAuth). Redirects are followed by
    every client. An exception fails the test with its type only: pytest would otherwise
    show the arguments of the frame that raised, which hold the Authorization header.
    """
    try:
        return _send(client, url, codex_home, auth_options or {}, **kwargs)
    except Exception as exc:
        pytest.fail(f"{client} request raised {type(exc).__name__}", pytrace=False)


def _send(
    client: str, url: str, codex_home: Path, auth_options: dict[str, Any], **kwargs: Any
) -> Reply:
    if client == "requests":
        with requests.Session() as session, contextlib.ExitStack() as files:
            if isinstance(kwargs.get("data"), Path):
                kwargs["data"] = files.enter_context(kwargs["data"].open("rb"))
            auth = codexauth.RequestsAuth(codex_home, **auth_options)
            r = session.post(url, auth=auth, timeout=HTTP_TIMEOUT, **kwargs)
            return Reply(r.status_code, r.json() if r.status_code == 200 else None)
    if client == "httpx":
        with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=True) as hc:
            resp = hc.post(url, auth=codexauth.HttpxAuth(codex_home, **auth_options), **kwargs)
            return Reply(resp.status_code, resp.json() if resp.status_code == 200 else None)
    assert client == "httpx-async"

    async def go() -> Reply:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=True) as ac:
            auth = codexauth.HttpxAuth(codex_home, **auth_options)
            resp = await ac.post(url, auth=auth, **kwargs)
            return Reply(resp.status_code, resp.json() if resp.status_code == 200 else None)

    return asyncio.run(go())


CLIENTS = ["requests", "httpx", "httpx-async"]

# (client, body) pairs; a file-like body exists only for requests.
BODIES = [
    ("requests", "bytes"),
    ("requests", "json"),
    ("requests", "file"),
    ("httpx", "bytes"),
    ("httpx", "json"),
    ("httpx-async", "bytes"),
    ("httpx-async", "json"),
]


@pytest.fixture
def api() -> Iterator[Callable[[Callable[[str | None], bool]], ApiServer]]:
    """``api(accept)`` starts an ApiServer; every one started is stopped after the test."""
    servers: list[ApiServer] = []

    def start(accept: Callable[[str | None], bool]) -> ApiServer:
        server = ApiServer(accept).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


# 401 -> refresh -> one retry ####################################################


@pytest.mark.parametrize(("client", "body"), BODIES, ids=[f"{c}-{b}" for c, b in BODIES])
def test_401_refreshes_once_and_retries_once_with_the_body_intact(
    codex_home: Path, token_server: TokenServer, api: Any, tmp_path: Path, client: str, body: str
) -> None:
    stale = access_token(time.time() + 3600)  # unexpired, but the API no longer takes it
    write_auth_json(codex_home, access=stale)
    server = api(newest_issued(token_server))
    kwargs, expected = _body_kwargs(client, body, tmp_path)

    reply = send(client, server.url, codex_home, **kwargs)

    assert reply.status == 200
    assert token_server.post_count == 1
    assert len(server.hits) == 2
    first, retry = server.hits
    assert token_server.last_issued is not None
    new = token_server.last_issued["access_token"]
    assert (first.bearer_fp, retry.bearer_fp) == (fp(stale), fp(new))
    assert fp(stored(codex_home)["access_token"]) == fp(new)
    if expected is None:
        assert json.loads(first.body) == JSON_BODY
        expected = first.body
    assert (len(first.body), len(retry.body)) == (len(expected), len(expected))
    assert first.body == expected
    assert retry.body == expected
    assert retry.headers.get("content-type") == first.headers.get("content-type")
    assert retry.headers["chatgpt-account-id"] == "acct-123"
    assert reply.echo is not None  # the caller got the retry's answer
    assert reply.echo["bearer"] == fp(new)


@pytest.mark.parametrize("client", CLIENTS)
def test_second_401_is_returned_without_a_loop(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    write_auth_json(codex_home)
    server = api(reject_all)
    reply = send(client, server.url, codex_home, json=JSON_BODY)
    assert reply.status == 401
    assert len(server.hits) == 2
    assert token_server.post_count == 1
    assert server.hits[0].bearer_fp != server.hits[1].bearer_fp  # the retry used the new token


@pytest.mark.parametrize("client", CLIENTS)
def test_expired_token_is_refreshed_before_the_request(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    write_auth_json(codex_home, access_exp=time.time() - 60)
    server = api(newest_issued(token_server))
    reply = send(client, server.url, codex_home, json=JSON_BODY)
    assert reply.status == 200
    assert (token_server.post_count, len(server.hits)) == (1, 1)


# Headers by mode #################################################################


@pytest.mark.parametrize("client", CLIENTS)
def test_chatgpt_mode_sends_the_account_header(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token, account_id="acct-777")
    server = api(current_login(codex_home))
    reply = send(client, server.url, codex_home, json=JSON_BODY)
    assert reply.status == 200
    (hit,) = server.hits
    assert hit.bearer_fp == fp(token)
    assert hit.headers["chatgpt-account-id"] == "acct-777"
    assert token_server.post_count == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_api_key_mode_sends_the_key_and_no_account_header(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    write_auth_json(codex_home, tokens=False, api_key=API_KEY)
    server = api(current_login(codex_home))
    reply = send(client, server.url, codex_home, json=JSON_BODY)
    assert reply.status == 200
    (hit,) = server.hits
    assert hit.bearer_fp == fp(API_KEY)
    assert "chatgpt-account-id" not in hit.headers
    assert token_server.post_count == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_api_key_mode_401_is_returned_without_refresh_or_retry(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    path = write_auth_json(codex_home, tokens=False, api_key=API_KEY)
    before = fp(path.read_bytes().decode("latin-1"))
    server = api(reject_all)
    reply = send(client, server.url, codex_home, json=JSON_BODY)
    assert reply.status == 401
    assert len(server.hits) == 1
    assert token_server.post_count == 0
    assert fp(path.read_bytes().decode("latin-1")) == before


# A peer wrote auth.json meanwhile #################################################


@pytest.mark.parametrize("client", CLIENTS)
def test_401_adopts_a_token_a_peer_already_wrote(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    write_auth_json(codex_home)
    accept, peer = peer_writes_first(codex_home, refresh="rt-peer")
    server = api(accept)
    reply = send(client, server.url, codex_home, json=JSON_BODY)
    assert reply.status == 200
    assert len(server.hits) == 2
    assert server.hits[1].bearer_fp == fp(peer[0])
    assert server.hits[1].body == server.hits[0].body
    assert token_server.post_count == 0
    assert fp(stored(codex_home)["refresh_token"]) == fp("rt-peer")


@pytest.mark.parametrize("client", CLIENTS)
def test_401_does_not_adopt_another_accounts_token(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    write_auth_json(codex_home)
    accept, peer = peer_writes_first(
        codex_home,
        refresh="rt-other",
        account_id="acct-other",
        id_tok=id_token(email="other@example.com", account_id="acct-other"),
    )
    server = api(accept)
    reply = send(client, server.url, codex_home, json=JSON_BODY)
    assert reply.status == 401
    assert len(server.hits) == 1
    assert token_server.post_count == 0
    tokens = stored(codex_home)  # the other login is left as it was
    assert (fp(tokens["access_token"]), tokens["refresh_token"]) == (fp(peer[0]), "rt-other")


# Imports ##########################################################################


def test_import_works_without_httpx_and_httpx_auth_says_why(codex_home: Path) -> None:
    proc = run_py(child("import_without_httpx"), codex_home=codex_home, timeout=30)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("ImportError:")
    assert "HttpxAuth needs httpx" in proc.stdout  # says what is missing and for what


# portalocker is a dependency only on Windows (setup.cfg), where no test runs.
DEPENDENCIES = ("requests", "platformdirs", "httpx")
# Each would cost a warm `codexauth token`.
SLOW_STDLIB = ("logging", "dataclasses", "typing", "threading", "base64", "datetime")
FORBIDDEN = (*DEPENDENCIES, *SLOW_STDLIB)


def test_import_codexauth_pulls_in_no_dependency_or_heavy_stdlib(codex_home: Path) -> None:
    # -S: without `site`, nothing (a .pth file, sitecustomize) imports typing & co. first;
    # site-packages go back on sys.path by hand so that a dependency *could* be imported.
    paths = [str(REPO_ROOT), *site.getsitepackages(), site.getusersitepackages()]
    argv = child("import_cost", os.pathsep.join(paths), *FORBIDDEN)
    proc = run_py(["-S", *argv], codex_home=codex_home, timeout=30)
    assert (proc.returncode, proc.stderr) == (0, "")
    before, after, all_importable = proc.stdout.splitlines()
    assert (before, all_importable) == ("[]", "True")
    assert after == "[]"


# Redirects: credentials stay with their origin ###################################


@pytest.mark.parametrize("client", CLIENTS)
def test_a_401_from_another_origin_gets_no_credentials_and_forces_no_refresh(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token, account_id="acct-777")
    other = api(reject_all)  # another port: another origin
    origin = api(reject_all)
    url = origin.redirect("/v1/moved", 302, other.url)

    reply = send(client, url, codex_home, json=JSON_BODY)

    assert reply.status == 401  # the other origin's answer, handed back as is
    assert [(hit.path, hit.bearer_fp) for hit in origin.hits] == [("/v1/moved", fp(token))]
    assert origin.hits[0].headers["chatgpt-account-id"] == "acct-777"
    assert [hit.bearer_fp for hit in other.hits] == [None]
    if client == "requests":
        assert "chatgpt-account-id" not in other.hits[0].headers
    # (httpx forwards every header but Authorization across origins, and an httpx.Auth
    # sees no redirect hop: it cannot take the account id back.)
    assert token_server.post_count == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_a_401_after_a_redirect_within_the_origin_still_recovers(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    stale = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=stale)
    server = api(newest_issued(token_server))
    url = server.redirect("/v1/moved", 307, "/v1/responses")

    reply = send(client, url, codex_home, json=JSON_BODY)

    assert reply.status == 200
    assert token_server.post_count == 1
    assert token_server.last_issued is not None
    new = token_server.last_issued["access_token"]
    answered = [hit for hit in server.hits if hit.path == "/v1/responses"]
    assert [hit.bearer_fp for hit in answered] == [fp(stale), fp(new)]
    assert answered[1].body == answered[0].body


@pytest.mark.parametrize("client", CLIENTS)
def test_a_401_to_a_request_bounced_back_without_the_token_forces_no_refresh(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    # Out to another origin and back: the hop out dropped Authorization, and nothing puts
    # it back, so the origin's 401 answers a request that carried no token of ours.
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token)
    origin = api(reject_all)
    other = api(reject_all)
    back = origin.redirect("/v1/back", 307, origin.url)
    out = other.redirect("/v1/out", 307, back)
    url = origin.redirect("/v1/moved", 307, out)

    reply = send(client, url, codex_home, json=JSON_BODY)

    assert reply.status == 401  # handed back as is
    assert [(hit.path, hit.bearer_fp) for hit in origin.hits] == [
        ("/v1/moved", fp(token)),
        ("/v1/back", None),
        ("/v1/responses", None),
    ]
    assert [hit.bearer_fp for hit in other.hits] == [None]
    assert token_server.post_count == 0  # no refresh forced by a 401 about no token
    assert fp(stored(codex_home)["access_token"]) == fp(token)


def test_a_relative_redirect_within_the_origin_keeps_the_account_header(
    codex_home: Path, token_server: TokenServer, api: Any
) -> None:
    # A relative Location stays on the origin: the hop keeps both headers (requests keeps
    # Authorization itself; the account id is ours to drop only when the origin changes).
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token, account_id="acct-777")
    server = api(current_login(codex_home))
    url = server.redirect("/v1/moved", 307, "/v1/responses")

    reply = send("requests", url, codex_home, json=JSON_BODY)

    assert reply.status == 200
    assert [(hit.path, hit.bearer_fp) for hit in server.hits] == [
        ("/v1/moved", fp(token)),
        ("/v1/responses", fp(token)),
    ]
    assert [hit.headers.get("chatgpt-account-id") for hit in server.hits] == ["acct-777"] * 2


ORIGIN = "https://api.example.com"
REJECTED_CASES = [
    # (status, URL the answered request went to, its Authorization header, rejected?)
    (401, f"{ORIGIN}/v1/responses", "Bearer TOKEN", True),
    (401, f"{ORIGIN}:443/v1/other", "Bearer TOKEN", True),  # the default port spelled out
    (403, f"{ORIGIN}/v1/responses", "Bearer TOKEN", False),
    (401, "https://other.example.com/v1/responses", "Bearer TOKEN", False),
    (401, "http://api.example.com/v1/responses", "Bearer TOKEN", False),  # another scheme
    (401, f"{ORIGIN}:8443/v1/responses", "Bearer TOKEN", False),  # another port
    (401, f"{ORIGIN}/v1/responses", None, False),  # stripped on the way
    (401, f"{ORIGIN}/v1/responses", "Bearer OLDER", False),  # another token was sent
]


@pytest.mark.parametrize(
    ("status", "url", "authorization", "rejected"),
    REJECTED_CASES,
    ids=[
        "401-same-origin",
        "401-same-origin-explicit-port",
        "403-not-a-refusal",
        "401-other-host",
        "401-other-scheme",
        "401-other-port",
        "401-without-the-token",
        "401-to-another-token",
    ],
)
def test_only_the_origins_401_to_the_token_sent_counts_as_refusing_it(
    status: int, url: str, authorization: str | None, rejected: bool
) -> None:
    # Another origin's 401 cannot be told apart through the clients on loopback: both
    # strip Authorization across origins, except on an http -> https hop to ports 80/443.
    headers = {} if authorization is None else {"Authorization": authorization}
    origin = codexauth._origin(f"{ORIGIN}/v1/responses")
    assert codexauth._rejected(status, url, headers, origin, "TOKEN") is rejected


# Streamed bodies (requests) ########################################################


def stream_body(kind: str) -> Any:
    """BINARY_BODY as a body that can be read only once: a generator or a pipe."""
    if kind == "generator":
        return (BINARY_BODY[i : i + 1000] for i in range(0, len(BINARY_BODY), 1000))
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as writer:
        writer.write(BINARY_BODY)  # 10 KiB: fits the pipe's buffer, so no writer thread
    return os.fdopen(read_fd, "rb")


@pytest.mark.parametrize("kind", ["generator", "pipe"])
def test_a_streamed_body_is_sent_once_and_its_401_returned_without_a_refresh(
    codex_home: Path, token_server: TokenServer, api: Any, kind: str
) -> None:
    write_auth_json(codex_home)
    before = stored(codex_home)
    server = api(newest_issued(token_server))  # refuses the stored token
    body = stream_body(kind)
    with contextlib.closing(body) if kind == "pipe" else contextlib.nullcontext():
        reply = send("requests", server.url, codex_home, data=body)
    assert reply.status == 401
    assert [len(hit.body) for hit in server.hits] == [len(BINARY_BODY)]
    assert server.hits[0].body == BINARY_BODY
    assert token_server.post_count == 0  # no refresh that no retry could use
    assert fp(stored(codex_home)["refresh_token"]) == fp(before["refresh_token"])


def test_a_pipe_body_is_sent_whole_the_first_time(
    codex_home: Path, token_server: TokenServer, api: Any
) -> None:
    write_auth_json(codex_home)
    server = api(current_login(codex_home))
    with stream_body("pipe") as body:
        reply = send("requests", server.url, codex_home, data=body)
    assert reply.status == 200
    assert [hit.body for hit in server.hits] == [BINARY_BODY]
    assert token_server.post_count == 0


def test_a_file_body_is_resent_from_where_it_started_not_from_byte_0(
    codex_home: Path, token_server: TokenServer, api: Any, tmp_path: Path
) -> None:
    # A caller that already read a header off the file sends the rest: so must the retry.
    stale = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=stale)
    server = api(newest_issued(token_server))
    path = tmp_path / "upload.bin"
    path.write_bytes(BINARY_BODY)
    with path.open("rb") as body:
        body.seek(1000)
        reply = send("requests", server.url, codex_home, data=body)
    assert reply.status == 200
    assert token_server.post_count == 1
    assert [hit.body for hit in server.hits] == [BINARY_BODY[1000:]] * 2


# One login per request #############################################################


@pytest.mark.parametrize("client", CLIENTS)
def test_the_token_and_the_account_header_come_from_one_login(
    codex_home: Path, token_server: TokenServer, api: Any, client: str
) -> None:
    logins = [
        {
            "access": access_token(time.time() + 3600, seq=name),
            "account_id": f"acct-{name}",
            "id_tok": id_token(account_id=f"acct-{name}"),
            "refresh": f"rt-{name}",
        }
        for name in ("a", "b")
    ]
    write_auth_json(codex_home, **logins[0])
    signins = itertools.count(1)

    def now() -> float:
        # Whenever the adapter looks at the clock, a peer signs in to the other account:
        # reads of auth.json before and after this moment see different logins.
        write_auth_json(codex_home, **logins[next(signins) % 2])
        return time.time()

    server = api(lambda bearer: True)
    reply = send(client, server.url, codex_home, auth_options={"now": now}, json=JSON_BODY)

    assert reply.status == 200
    (hit,) = server.hits
    account_of = {fp(login["access"]): login["account_id"] for login in logins}
    assert hit.bearer_fp in account_of
    assert hit.headers.get("chatgpt-account-id") == account_of[hit.bearer_fp]
