"""Test helpers: Codex-format auth.json files and a loopback OAuth token endpoint.

Stdlib only, so tests, subprocess workers and benchmarks can all import it.
Nothing here prints or logs a token value.

    python tests/support.py serve [--port P] [--valid rt-0 ...]

prints the token URL on its first line and serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from children.barrier import BARRIER_ENV

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
CHILDREN = TESTS_DIR / "children"  # the programs tests run as child processes

TOKEN_PATH = "/oauth/token"
REVOKE_PATH = "/oauth/revoke"
COUNT_PATH = "/count"

# Where a child process refreshes when no test server is given: loopback port 9 (discard),
# which refuses the connection, so a forgotten override can never reach the real auth server.
UNREACHABLE_TOKEN_URL = "http://127.0.0.1:9/oauth/token"
UNREACHABLE_REVOKE_URL = "http://127.0.0.1:9/oauth/revoke"

_DEFAULT = object()  # "argument not given", where None has a meaning of its own
_jti = itertools.count(1)


# JWTs and auth.json ###########################################################


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fp(secret: str | None) -> str | None:
    """A short digest for comparing tokens in assertions: failures print this, never a token."""
    if secret is None:
        return None
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def digest(data: bytes) -> str:
    """The sha256 of `data`: compare file contents through it, so a failing assert shows no
    token."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """digest() of the file's bytes; None when there is no file."""
    try:
        return digest(Path(path).read_bytes())
    except FileNotFoundError:
        return None


def make_jwt(claims: Mapping[str, Any]) -> str:
    """An unsigned JWT carrying `claims`; the signature is the literal ``sig``."""
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(dict(claims)).encode())
    return f"{header}.{payload}.sig"


def access_token(exp: float | None, seq: int | str = 0, iat: float | None = None) -> str:
    """An access-token JWT expiring at `exp` (no ``exp`` claim if None); every call is unique.

    `iat` is when it was issued, by the issuer's clock (TokenServer sets it).
    """
    claims: dict[str, Any] = {"jti": f"{os.getpid()}-{next(_jti)}", "seq": seq}
    if exp is not None:
        claims["exp"] = int(exp)
    if iat is not None:
        claims["iat"] = int(iat)
    return make_jwt(claims)


def id_token(
    email: str = "user@example.com",
    plan: str = "pro",
    account_id: str = "acct-123",
    user_id: str = "user-123",
) -> str:
    """An id-token JWT with the claims Codex reads: email, plan, user and account ids."""
    return make_jwt(
        {
            "email": email,
            "https://api.openai.com/auth": {
                "chatgpt_plan_type": plan,
                "chatgpt_user_id": user_id,
                "chatgpt_account_id": account_id,
            },
        }
    )


def rfc3339(moment: datetime) -> str:
    """`moment` the way Codex writes ``last_refresh``: UTC, microseconds, a ``Z`` suffix."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_auth_json(
    codex_home: str | os.PathLike[str],
    *,
    access_exp: Any = _DEFAULT,
    access: str | None = None,
    refresh: str = "rt-0",
    id_tok: str | None = None,
    account_id: str | None = "acct-123",
    last_refresh: Any = _DEFAULT,
    api_key: str | None = None,
    tokens: bool = True,
    extra_top: Mapping[str, Any] | None = None,
    extra_tokens: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``codex_home/auth.json`` as Codex does (indent=2, mode 0600), atomically.

    Defaults: an access token valid for an hour, refreshed a day ago.
    `access_exp=None` gives an access token without ``exp``; `access` replaces the token
    outright. `last_refresh` takes a datetime, a string written as is, or None to omit it.
    `tokens=False` writes an API-key-only file.
    """
    now = time.time()
    if access is None:
        access = access_token(now + 3600 if access_exp is _DEFAULT else access_exp)
    if last_refresh is _DEFAULT:
        last_refresh = datetime.now(timezone.utc) - timedelta(days=1)
    if isinstance(last_refresh, datetime):
        last_refresh = rfc3339(last_refresh)

    doc: dict[str, Any] = {"OPENAI_API_KEY": api_key}
    if tokens:
        doc["tokens"] = {
            "id_token": id_token() if id_tok is None else id_tok,
            "access_token": access,
            "refresh_token": refresh,
            "account_id": account_id,
            **(extra_tokens or {}),
        }
    if last_refresh is not None:
        doc["last_refresh"] = last_refresh
    doc.update(extra_top or {})

    path = Path(codex_home) / "auth.json"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth.json.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def read_doc(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An auth.json as plain JSON, read as Codex reads it (compare its secrets through fp())."""
    return dict(json.loads(Path(path).read_bytes()))


def stored(codex_home: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``tokens`` object of `codex_home`'s auth.json (compare them through fp())."""
    tokens = read_doc(Path(codex_home) / "auth.json").get("tokens")
    assert isinstance(tokens, dict), "auth.json holds no tokens"
    return tokens


# Codex's words ################################################################
# What Codex says when a refresh fails for good, spelled out here rather than read from
# codexauth, so that a reworded message in codexauth fails the tests
# (codex-rs/login/src/auth/manager.rs, REFRESH_TOKEN_*_MESSAGE).

EXPIRED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token has expired. "
    "Please log out and sign in again."
)
EXHAUSTED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token was already used. "
    "Please log out and sign in again."
)
REVOKED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token was revoked. "
    "Please log out and sign in again."
)
OTHER_MESSAGE = "Your access token could not be refreshed. Please log out and sign in again."
# The guarded reload found another login (or none) where it expected its own.
ACCOUNT_CHANGED_MESSAGE = (
    "Your access token could not be refreshed because you have since logged out or signed in "
    "to another account. Please sign in again."
)


# Token server #################################################################


class TokenServer:
    """A loopback ``/oauth/token`` that rotates refresh tokens like the real one.

    A valid refresh token is consumed and replaced by ``rt-<n>``; presenting it again
    answers 401 ``refresh_token_reused``, an unknown one 401 ``refresh_token_invalidated``.
    Fault knobs (`fail_next`, `delay`, `hang`, `omit_fields`, `access_ttl`) may be changed
    at any time, from any thread.

    ``/oauth/revoke`` (Codex's logout) answers 200 and invalidates the refresh token it is
    given, so a later refresh with it gets ``refresh_token_invalidated``; `fail_next_revoke`
    makes it fail, and `hang` holds it too.
    """

    def __init__(
        self,
        valid: Iterable[str] = ("rt-0",),
        *,
        access_ttl: float = 3600.0,
        port: int = 0,
    ) -> None:
        self.access_ttl = access_ttl
        self.delay = 0.0  # seconds to sleep before answering; the refresh happens after it
        self.hang = False  # accept requests and never answer them until stop()
        self.omit_fields: set[str] = set()  # fields dropped from success responses
        self.id_token_kwargs: dict[str, str] = {}  # passed to id_token() for issued tokens
        self.post_count = 0
        self.requests: list[Any] = []  # parsed bodies; they hold tokens, so never print them
        self.user_agents: list[str] = []  # each POST's User-Agent, in step with `requests`
        self.answered = 0  # token POSTs whose whole answer has been written to the socket
        self.revoke_count = 0
        self.revoke_requests: list[Any] = []  # parsed bodies; they hold tokens: never print
        self.last_issued: dict[str, Any] | None = None
        self._port = port
        self._lock = threading.Lock()
        self._valid = set(valid)
        self._used: set[str] = set()
        self._seq = itertools.count(1)
        self._canned: collections.deque[tuple[int, bytes, str, dict[str, str]]]
        self._canned = collections.deque()
        self._revoke_canned: collections.deque[tuple[int, bytes, str, dict[str, str]]]
        self._revoke_canned = collections.deque()
        self._log: list[str] = []
        self._revoke_log: list[str] = []
        self._stopped = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> TokenServer:
        handler = type("Handler", (_Handler,), {"token_server": self})
        self._stopped.clear()
        # Handler threads are daemons (the class default) and so never joined: a hung one
        # cannot hold up stop().
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="TokenServer",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung and delayed requests are dropped unanswered, without waiting."""
        self._stopped.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "TokenServer is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{TOKEN_PATH}"

    @property
    def revoke_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{REVOKE_PATH}"

    @property
    def count_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{COUNT_PATH}"

    # state and knobs

    def issue(self, refresh_token: str) -> None:
        """Make `refresh_token` valid (again)."""
        with self._lock:
            self._valid.add(refresh_token)
            self._used.discard(refresh_token)

    @property
    def valid(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._valid)

    @property
    def used(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._used)

    def fail_next(
        self,
        status: int,
        body: Mapping[str, Any] | bytes,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` POSTs with this response; no refresh token is consumed."""
        payload, ctype = _payload(body)
        with self._lock:
            for _ in range(times):
                self._canned.append((status, payload, ctype, dict(headers or {})))

    def fail_next_revoke(
        self, status: int, body: Mapping[str, Any] | bytes, times: int = 1
    ) -> None:
        """Answer the next `times` revoke requests with this response; nothing is revoked."""
        payload, ctype = _payload(body)
        with self._lock:
            for _ in range(times):
                self._revoke_canned.append((status, payload, ctype, {}))

    def hang_until_stopped(self) -> None:
        self.hang = True

    def redacted_log(self) -> list[str]:
        """One entry per POST: ``"200"``, ``"401 refresh_token_reused"``, ``"hung"``..."""
        with self._lock:
            return list(self._log)

    def redacted_revoke_log(self) -> list[str]:
        """One entry per revoke: ``"200 refresh_token"``, ``"503"``, ``"hung"``..."""
        with self._lock:
            return list(self._revoke_log)

    # request handling (called on handler threads)

    def _handle_post(
        self, raw: bytes, user_agent: str = ""
    ) -> tuple[int, bytes, str, dict[str, str]] | None:
        """The response to one POST, or None to drop the connection unanswered."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self.post_count += 1
            self.requests.append(body)
            self.user_agents.append(user_agent)
        if self.hang:
            self._record("hung")
            self._stopped.wait()
            return None
        if self.delay and self._stopped.wait(self.delay):
            self._record("dropped")
            return None
        with self._lock:
            if self._canned:
                status, payload, ctype, headers = self._canned.popleft()
                self._log.append(str(status))
                return status, payload, ctype, headers
            status, doc = self._rotate(body)
            self._log.append(f"{status} {_error_code(doc)}" if status != 200 else "200")
        return status, json.dumps(doc).encode(), "application/json", {}

    def _handle_revoke(self, raw: bytes) -> tuple[int, bytes, str, dict[str, str]] | None:
        """The response to one revoke request (RFC 7009), or None to drop it unanswered."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self.revoke_count += 1
            self.revoke_requests.append(body)
        if self.hang:
            with self._lock:
                self._revoke_log.append("hung")
            self._stopped.wait()
            return None
        with self._lock:
            if self._revoke_canned:
                status, payload, ctype, headers = self._revoke_canned.popleft()
                self._revoke_log.append(str(status))
                return status, payload, ctype, headers
            if not isinstance(body, dict) or not isinstance(body.get("token"), str):
                self._revoke_log.append("400 invalid_request")
                return 400, b'{"error": "invalid_request"}', "application/json", {}
            hint = str(body.get("token_type_hint"))
            if hint == "refresh_token":
                self._valid.discard(body["token"])
                self._used.discard(body["token"])
            self._revoke_log.append(f"200 {hint}")
        return 200, b"{}", "application/json", {}

    def _rotate(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Exchange a refresh token, under the lock."""
        if not isinstance(body, dict) or not isinstance(body.get("refresh_token"), str):
            return 400, {"error": {"code": "invalid_request", "message": "bad body"}}
        if body.get("grant_type") != "refresh_token":
            return 400, {"error": {"code": "unsupported_grant_type", "message": "grant"}}
        presented = body["refresh_token"]
        if presented in self._used:
            message = "Your refresh token has already been used to generate a new access token."
            return 401, {"error": {"code": "refresh_token_reused", "message": message}}
        if presented not in self._valid:
            message = "Your refresh token has been invalidated."
            return 401, {"error": {"code": "refresh_token_invalidated", "message": message}}
        self._valid.discard(presented)
        self._used.add(presented)
        seq = next(self._seq)
        new_refresh = f"rt-{seq}"
        while new_refresh in self._valid or new_refresh in self._used:
            seq = next(self._seq)
            new_refresh = f"rt-{seq}"
        self._valid.add(new_refresh)
        doc = {
            "access_token": access_token(time.time() + self.access_ttl, seq=seq, iat=time.time()),
            "refresh_token": new_refresh,
            "id_token": id_token(**self.id_token_kwargs),
        }
        for field in self.omit_fields:
            doc.pop(field, None)
        self.last_issued = doc
        return 200, doc

    def _record(self, entry: str) -> None:
        with self._lock:
            self._log.append(entry)


def _error_code(doc: Mapping[str, Any]) -> str:
    error = doc.get("error")
    return str(error.get("code")) if isinstance(error, dict) else str(error)


class _Handler(BaseHTTPRequestHandler):
    token_server: TokenServer  # set on the subclass made by TokenServer.start()
    # HTTP/1.0 closes every connection, so no pooled connection outlives stop().
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?")[0]
        if path == REVOKE_PATH:
            response = self.token_server._handle_revoke(raw)
            if response is not None:
                self._send(*response)
            return
        if path != TOKEN_PATH:
            self._send(404, b'{"error": "not_found"}', "application/json", {})
            return
        response = self.token_server._handle_post(raw, self.headers.get("User-Agent", ""))
        if response is not None:
            self._send(*response)
            with self.token_server._lock:
                self.token_server.answered += 1

    def do_GET(self) -> None:
        if self.path.split("?")[0] != COUNT_PATH:
            self._send(404, b'{"error": "not_found"}', "application/json", {})
            return
        with self.token_server._lock:
            payload = json.dumps({"posts": self.token_server.post_count}).encode()
        self._send(200, payload, "application/json", {})

    def _send(self, status: int, payload: bytes, ctype: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        # A client that timed out during `delay` is gone; that is the scenario, not an error.
        with contextlib.suppress(ConnectionError):
            self.end_headers()
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line."""


def _payload(body: Mapping[str, Any] | bytes) -> tuple[bytes, str]:
    """A canned answer's bytes and Content-Type: bytes as plain text, a mapping as JSON."""
    if isinstance(body, bytes):
        return body, "text/plain"
    return json.dumps(dict(body)).encode(), "application/json"


class RawServer:
    """A loopback TCP server for answers no HTTP library would give (a dripped body, a
    proxy that records): each connection goes to ``answer(conn)`` on a thread of its own.
    ``close()`` stops it; ``stopping`` tells a slow answer to give up."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.answer(conn)

    def close(self) -> None:
        self.stopping.set()
        self._thread.join(5)
        self._listener.close()


# Subprocesses #################################################################


def py_env(
    codex_home: str | os.PathLike[str] | None = None,
    token_url: str | None = None,
    env: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """os.environ for a child Python that cannot touch the real ~/.codex or auth server.

    CODEX_HOME is `codex_home` (default: the inherited one, which must be set); HOME is
    its parent. The token URL is `token_url`, else the inherited override, else a refused
    loopback port. The repo and tests/ go first on PYTHONPATH. `env` entries override;
    a None value removes the variable.
    """
    child = dict(os.environ)
    home = Path(codex_home if codex_home is not None else child["CODEX_HOME"])
    child["CODEX_HOME"] = str(home)
    child["HOME"] = str(home.parent)
    if token_url is not None:
        child["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = token_url
    child.setdefault("CODEX_REFRESH_TOKEN_URL_OVERRIDE", UNREACHABLE_TOKEN_URL)
    paths = [str(REPO_ROOT), str(TESTS_DIR), child.get("PYTHONPATH", "")]
    child["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return with_env(child, env)


def with_env(child: dict[str, str], env: Mapping[str, str | None] | None) -> dict[str, str]:
    """`child` with `env` applied: each entry overrides; a None value removes the variable."""
    for key, value in (env or {}).items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = value
    return child


def run_py(
    code_or_args: str | Sequence[str],
    *,
    codex_home: str | os.PathLike[str] | None = None,
    token_url: str | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE`` (a str) or ``python *ARGS`` with py_env(); capture text output."""
    if isinstance(code_or_args, str):
        argv = [sys.executable, "-c", code_or_args]
    else:
        argv = [sys.executable, *code_or_args]
    return subprocess.run(
        argv,
        env=py_env(codex_home, token_url, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def child(name: str, *args: str) -> list[str]:
    """The Python arguments that run ``tests/children/<name>.py`` with `args`: pass them to
    run_py(), or put sys.executable before them."""
    return [str(CHILDREN / f"{name}.py"), *args]


# Racing processes #############################################################


class Racers:
    """Child processes that start the race together: each waits at a barrier until release().

    ``spawn(cli_args)`` runs ``codexauth.main(cli_args)`` (the ``codexauth`` command) after
    importing what a refresh needs (children/codexauth_cli.py). ``spawn(script=path,
    args=...)`` runs that Python file with `args`, and ``spawn(code=..., args=...)`` runs the
    source `code` with `args` as ``sys.argv[1:]`` (children/run_code.py); either must call
    ``wait_at_barrier()`` (children/barrier.py) itself once its imports are done. Use as a
    context manager: children still running at the end are killed.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.procs: list[subprocess.Popen[str]] = []
        self._ready_r, self._ready_w = os.pipe()
        self._gate_r, self._gate_w = os.pipe()
        self._open = {self._ready_r, self._ready_w, self._gate_r, self._gate_w}
        self._ready_count = 0

    def spawn(
        self,
        cli_args: Sequence[str] = (),
        *,
        script: str | os.PathLike[str] | None = None,
        code: str | None = None,
        args: Sequence[str] = (),
    ) -> subprocess.Popen[str]:
        assert self._ready_w in self._open, "spawn() after wait_ready()"
        if code is not None:
            argv = child("run_code", code, *args)
        elif script is not None:
            argv = [os.fspath(script), *args]
        else:
            argv = child("codexauth_cli", *cli_args)
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env={**self.env, BARRIER_ENV: f"{self._ready_w},{self._gate_r}"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(self._ready_w, self._gate_r),
        )
        self.procs.append(proc)
        return proc

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every child is at the barrier (release() does this too)."""
        import select

        self._close(self._ready_w)  # now EOF on the ready pipe means every child is gone
        self._close(self._gate_r)
        deadline = time.monotonic() + timeout
        ready = self._ready_count
        while ready < len(self.procs):
            readable, _, _ = select.select([self._ready_r], [], [], 0.05)
            chunk = os.read(self._ready_r, 64) if readable else b""
            ready += len(chunk)
            # No child leaves the barrier before release: an exit here is a crash.
            crashed = any(proc.poll() is not None for proc in self.procs)
            if crashed or (not chunk and time.monotonic() > deadline):
                self.kill()
                errors = [p.stderr.read()[-300:] for p in self.procs if p.stderr]
                raise AssertionError(f"{ready}/{len(self.procs)} racers got ready: {errors}")
        self._ready_count = ready

    def release(self, ready_timeout: float = 60.0) -> float:
        """Wait until every child is at the barrier, then open it; returns time.monotonic()."""
        self.wait_ready(ready_timeout)
        released = time.monotonic()
        self._close(self._gate_w)
        return released

    def finish(self, timeout: float = 60.0) -> list[subprocess.CompletedProcess[str]]:
        """Every child's exit code and output, in spawn order; all are killed if one overruns."""
        deadline = time.monotonic() + timeout
        results = []
        for proc in self.procs:
            try:
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"racers still running after {timeout} s") from None
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return results

    def kill(self) -> None:
        """SIGKILL every child still running and reap it."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def __enter__(self) -> Racers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        for fd in list(self._open):
            self._close(fd)
        for proc in self.procs:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


# CLI ##########################################################################


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/support.py")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a TokenServer until killed")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--valid", nargs="*", default=["rt-0"], metavar="TOKEN")
    serve.add_argument("--delay", type=float, default=0.0)
    serve.add_argument("--access-ttl", type=float, default=3600.0)
    args = parser.parse_args(argv)

    server = TokenServer(args.valid, access_ttl=args.access_ttl, port=args.port)
    server.delay = args.delay
    with server:
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
