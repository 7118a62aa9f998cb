"""The real Codex CLI (a native 0.17x build) driven from tests, beside codexauth.

Stdlib only. Nothing here prints or logs a token: Codex's stderr is kept in memory, never shown.

    binary = find_codex()            # None when no usable build is installed
    with AppServer(binary, codex_home, token_url) as server:
        server.initialize()
        answer = server.account_read(refresh_token=True)

Every child gets a scrubbed environment: HOME is CODEX_HOME's parent, the token and revoke URLs
point at loopback, and every HTTP(S) proxy variable points at a refused loopback port, so the
requests Codex makes besides the refresh (model list, plugins, workspace routing, all to
chatgpt.com) fail at once on this machine instead of leaving it. Only 127.0.0.1/localhost go
direct (NO_PROXY).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from support import REPO_ROOT, UNREACHABLE_TOKEN_URL, with_env

# The environment variable naming a Codex binary to use instead of searching.
BIN_ENV_VAR = "CODEXAUTH_CODEX_BIN"
# Where .ci/run installs the pinned CLI (`npm install --prefix .codex-cli @openai/codex@...`).
NPM_PREFIX = REPO_ROOT / ".codex-cli"
# The versions whose behaviour the tests were written against: 0.170 to 0.179.
VERSION_PATTERN = re.compile(r"^codex-cli (0\.17\d\.\d+)\b")

# Loopback port 9 (discard) refuses connections: a proxy there fails every request fast.
REFUSED_PROXY = "http://127.0.0.1:9"
UNREACHABLE_REVOKE_URL = "http://127.0.0.1:9/oauth/revoke"
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
NO_PROXY = "127.0.0.1,localhost,::1"

DEFAULT_TIMEOUT = 30.0

# Native executables start with one of these: ELF, Mach-O (both widths and byte orders, and
# universal), PE.
_NATIVE_MAGIC = (
    b"\x7fELF",
    b"\xcf\xfa\xed\xfe",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xfe\xed\xfa\xce",
    b"\xca\xfe\xba\xbe",
    b"MZ",
)


# Finding the binary ###########################################################


def find_codex() -> Path | None:
    """A native Codex 0.17x binary: $CODEXAUTH_CODEX_BIN, then .codex-cli/, then PATH."""
    explicit = os.environ.get(BIN_ENV_VAR)
    if explicit:
        # An explicit choice that does not work is an error, not a reason to look elsewhere.
        path = Path(explicit)
        problem = _problem_with(path)
        if problem is not None:
            raise RuntimeError(f"{BIN_ENV_VAR}={explicit}: {problem}")
        return path
    for candidate in _candidates():
        if _problem_with(candidate) is None:
            return candidate
    return None


def _candidates() -> list[Path]:
    found = [Path(p) for p in sorted(glob.glob(str(NPM_PREFIX / _NATIVE_GLOB)))]
    found += [Path(p) for p in sorted(glob.glob(str(NPM_PREFIX / _LEGACY_GLOB)))]
    on_path = shutil.which("codex")
    if on_path is not None:
        real = Path(on_path).resolve()
        found.append(real)
        # `codex` on PATH is usually npm's JS launcher: the native build sits in the platform
        # package installed next to it.
        modules = next((p for p in real.parents if p.name == "node_modules"), None)
        if modules is not None:
            found += [Path(p) for p in sorted(glob.glob(str(modules / _NATIVE_GLOB)))]
            found += [Path(p) for p in sorted(glob.glob(str(modules / _LEGACY_GLOB)))]
    return found


# @openai/codex >= 0.1xx ships the binary in a per-platform package; older ones in vendor/.
_NATIVE_GLOB = "node_modules/@openai/codex-*/vendor/*/bin/codex*"
_LEGACY_GLOB = "node_modules/@openai/codex/vendor/*/codex/codex*"


def _problem_with(path: Path) -> str | None:
    """Why `path` is not a usable native Codex 0.17x, or None if it is."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return "not an executable file"
    with open(path, "rb") as f:
        if not f.read(4).startswith(_NATIVE_MAGIC):
            return "not a native executable (the npm JS launcher?)"
    version = codex_version(path)
    if version is None:
        return "`--version` does not report codex-cli 0.17x"
    return None


def codex_version(path: Path) -> str | None:
    """The x.y.z that `path --version` reports, if it is a codex-cli 0.17x."""
    try:
        with tempfile.TemporaryDirectory(prefix="codex-version.") as home:
            result = subprocess.run(
                [str(path), "--version"],
                env=child_env(Path(home) / ".codex"),
                cwd=home,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=DEFAULT_TIMEOUT,
            )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = VERSION_PATTERN.match(result.stdout.strip())
    return match.group(1) if match and result.returncode == 0 else None


# Environment ##################################################################


def child_env(
    codex_home: str | os.PathLike[str],
    token_url: str = UNREACHABLE_TOKEN_URL,
    *,
    revoke_url: str = UNREACHABLE_REVOKE_URL,
    env: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """A minimal environment for a Codex child that can reach nothing but loopback.

    Built from scratch rather than copied, so no developer's token, proxy or override leaks
    in. `env` entries override; a None value removes the variable.
    """
    home = Path(codex_home).parent
    child = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "CODEX_REFRESH_TOKEN_URL_OVERRIDE": token_url,
        "CODEX_REVOKE_TOKEN_URL_OVERRIDE": revoke_url,
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "NO_PROXY": NO_PROXY,
        "no_proxy": NO_PROXY,
        "RUST_LOG": "warn",
        "NO_COLOR": "1",
    }
    for var in PROXY_VARS:
        child[var] = REFUSED_PROXY
    for key in ("LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT"):  # harmless, and some tools need them
        if key in os.environ:
            child[key] = os.environ[key]
    return with_env(child, env)


# One-shot commands ############################################################


def run_cli(
    binary: Path,
    codex_home: str | os.PathLike[str],
    args: Sequence[str],
    *,
    token_url: str = UNREACHABLE_TOKEN_URL,
    revoke_url: str = UNREACHABLE_REVOKE_URL,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``codex ARGS`` against `codex_home`; capture its output (which may name files).

    `env` is passed to child_env (e.g. a private Secret Service's DBUS_SESSION_BUS_ADDRESS);
    `input` is written to stdin (e.g. ``login --with-api-key``), else stdin is /dev/null.
    """
    return subprocess.run(
        [str(binary), *args],
        env=child_env(codex_home, token_url, revoke_url=revoke_url, env=env),
        cwd=str(Path(codex_home).parent),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def login_status(
    binary: Path,
    codex_home: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``codex login status``: exit 0 and "Logged in using ChatGPT" (on stderr) when logged in,
    exit 1 and "Not logged in" when not. It only reads the stored login (auth.json, or the
    keyring as config.toml says): no refresh, no request."""
    return run_cli(binary, codex_home, ["login", "status"], timeout=timeout, env=env)


# App server ###################################################################


class AppServerError(AssertionError):
    """The app-server did not answer as expected (an AssertionError, so a test fails)."""


class AppServer:
    """``codex app-server`` on stdin/stdout: newline-delimited JSON-RPC without ``"jsonrpc"``.

    Protocol: request ``initialize`` (params ``clientInfo``), then the ``initialized``
    notification, then any request. ``account/read`` takes ``{"refreshToken": bool}``: true
    forces a refresh (body ``refresh_reason: "forced"``) before answering. An expired login is
    refreshed when the server starts, before ``initialize`` is even read
    (``refresh_reason: "proactive_expiry"``). Offline, ``account/read`` answers with the error
    "workspace routing discovery failed" after the refresh: the answer marks that the refresh
    is over, not that it succeeded.
    """

    def __init__(
        self,
        binary: Path,
        codex_home: str | os.PathLike[str],
        token_url: str,
        *,
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        self.binary = binary
        self.codex_home = Path(codex_home)
        self.token_url = token_url
        self.extra_env = dict(env or {})
        self.notifications: list[dict[str, Any]] = []
        self.started_at: float | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._next_id = 1

    # lifecycle

    def start(self) -> AppServer:
        self.started_at = time.monotonic()
        self._proc = subprocess.Popen(
            [str(self.binary), "app-server"],
            env=child_env(self.codex_home, self.token_url, env=self.extra_env),
            cwd=str(self.codex_home.parent),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        _pump(self._proc.stdout, self._lines.put, done=lambda: self._lines.put(None))
        _pump(self._proc.stderr, self._stderr.append)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Close stdin (the server exits when its only connection ends); kill it if it lingers.

        Returns the exit code, or None if it had to be killed.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):  # already gone: a broken pipe
                proc.stdin.close()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
            return None

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None, "AppServer is not started"
        return self._proc.pid

    def stderr_line_count(self) -> int:
        """How much Codex logged; its text stays here (a log line may quote a server reply)."""
        return len(self._stderr)

    # JSON-RPC

    def initialize(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """``initialize`` then the ``initialized`` notification; the initialize result."""
        answer = self.request(
            "initialize",
            {"clientInfo": {"name": "codexauth-tests", "version": "0"}},
            timeout=timeout,
        )
        if "result" not in answer:
            raise AppServerError(f"initialize failed: {_error_text(answer)}")
        self.notify("initialized")
        result: dict[str, Any] = answer["result"]
        return result

    def account_read(
        self, *, refresh_token: bool, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """``account/read``; the whole answer (``result`` or ``error``), within `timeout`."""
        return self.request("account/read", {"refreshToken": refresh_token}, timeout=timeout)

    def request(
        self, method: str, params: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Send a request and wait (bounded) for the answer with its id; notifications that
        arrive meanwhile are kept in `notifications`."""
        request_id = self._next_id
        self._next_id += 1
        self._send({"id": request_id, "method": method, "params": dict(params)})
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AppServerError(f"no answer to {method} within {timeout:g} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AppServerError(f"app-server exited before answering {method}")
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not a protocol line
            if not isinstance(message, dict):
                continue
            if message.get("id") == request_id and "method" not in message:
                return message
            if "method" in message:
                self.notifications.append(message)

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = dict(params)
        self._send(message)

    def _send(self, message: Mapping[str, Any]) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None, "AppServer is not started"
        try:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            raise AppServerError(f"app-server is gone: {exc.strerror}") from None


def _error_text(answer: Mapping[str, Any]) -> str:
    error = answer.get("error")
    return str(error.get("message")) if isinstance(error, dict) else repr(answer)[:200]


def _pump(
    stream: IO[str], sink: Callable[[str], object], done: Callable[[], object] | None = None
) -> None:
    """Drain `stream` line by line into `sink` on a daemon thread (a full pipe would block
    the child)."""

    def run() -> None:
        try:
            for line in stream:
                sink(line)
        except (OSError, ValueError):
            pass  # the stream was closed under us: the child is gone
        finally:
            if done is not None:
                done()

    threading.Thread(target=run, name="codex-pipe", daemon=True).start()
