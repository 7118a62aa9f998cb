"""Shared fixtures: a temporary CODEX_HOME, auth.json, a token endpoint, a real redis-server,
a private Secret Service."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, NoReturn

import pytest
from codex_cli import find_codex
from redis_server import RedisServer, redis_server_path
from secret_service import SecretService, SecretServiceUnavailableError
from support import UNREACHABLE_REVOKE_URL, TokenServer, write_auth_json

# What platformdirs reads on Linux; each is pointed inside the temporary HOME.
XDG_DIRS = {
    "XDG_CACHE_HOME": ".cache",
    "XDG_CONFIG_HOME": ".config",
    "XDG_DATA_HOME": ".local/share",
    "XDG_STATE_HOME": ".local/state",
    "XDG_RUNTIME_DIR": ".run",
}


@pytest.fixture
def codex_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``HOME/.codex`` (0700) under tmp_path, set as CODEX_HOME; HOME points there too.

    Every per-user directory platformdirs could pick is moved under the same HOME, and the
    override variables a developer may have exported are cleared, so no test touches the
    real login or the real auth server.
    """
    home = tmp_path / "home"
    path = home / ".codex"
    path.mkdir(parents=True)
    path.chmod(0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CODEX_HOME", str(path))
    for var, sub in XDG_DIRS.items():
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.delenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", raising=False)
    monkeypatch.delenv("CODEX_CA_CERTIFICATE", raising=False)
    monkeypatch.delenv("CODEX_APP_SERVER_LOGIN_CLIENT_ID", raising=False)
    # logout() revokes first: without a test server, that request must not leave the machine.
    monkeypatch.setenv("CODEX_REVOKE_TOKEN_URL_OVERRIDE", UNREACHABLE_REVOKE_URL)
    return path


@pytest.fixture
def token_server(codex_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    """A started TokenServer (valid refresh token ``rt-0``) set as the refresh URL override.

    The revoke URL is left to Codex's rule, which derives the server's ``/oauth/revoke``.
    """
    with TokenServer() as server:
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
        monkeypatch.delenv("CODEX_REVOKE_TOKEN_URL_OVERRIDE")
        yield server


@pytest.fixture
def short_reuse_window(monkeypatch: pytest.MonkeyPatch) -> float:
    """REUSE_WINDOW cut to half a second, in this process: for tests of what happens once
    it is over, not of its length (test_faults_round3.py waits out the shipped one)."""
    import codexauth

    monkeypatch.setattr(codexauth, "REUSE_WINDOW", 0.5)
    return 0.5


@pytest.fixture
def auth_json(codex_home: Path) -> Callable[..., Path]:
    """``auth_json(**kwargs)`` writes codex_home/auth.json via support.write_auth_json."""

    def write(**kwargs: Any) -> Path:
        return write_auth_json(codex_home, **kwargs)

    return write


@pytest.fixture
def secret_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretService]:
    """A real, private, unlocked Secret Service for one test (tests/secret_service.py), with
    DBUS_SESSION_BUS_ADDRESS pointing at it; a child gets it from ``.client_env``.

    Skipped where it cannot start (not Linux, gnome-keyring or secretstorage missing), except
    under CI, where that fails: CI installs everything it needs.
    """
    try:
        import secretstorage  # noqa: F401  # the helpers need it; say so before starting
    except ImportError:
        _unavailable("secretstorage is not installed: pip install -e '.[test]'")
    try:
        service = SecretService.start()
    except SecretServiceUnavailableError as exc:
        _unavailable(str(exc))
    with service:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", service.address)
        yield service


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"no private Secret Service under CI: {reason}")
    pytest.skip(f"no private Secret Service: {reason}")


def _require(found: bool, missing: str) -> None:
    """Skip a test whose tool is `missing`, except in CI, where every test must run."""
    if found:
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{missing}; CI must install it (.ci/run does)", pytrace=False)
    pytest.skip(missing)


@pytest.fixture
def start_redis() -> Iterator[Callable[..., RedisServer]]:
    """``start_redis(**options)`` starts a real RedisServer (tests/redis_server.py), killed
    after the test; options: password, users (ACL rules), unix_socket, config lines."""
    _require(
        redis_server_path() is not None,
        "redis-server is not installed (apt-get install redis-server)",
    )
    with contextlib.ExitStack() as stack:
        yield lambda **options: stack.enter_context(RedisServer(**options))


@pytest.fixture
def redis_server(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """A real redis-server on a free 127.0.0.1 port, no password, nothing persisted."""
    return start_redis()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of `redis_server`."""
    return redis_server.url()


@pytest.fixture
def redis_py() -> ModuleType:
    """The redis-py module (the ``redis`` extra), for tests that talk to Redis themselves."""
    try:
        return importlib.import_module("redis")
    except ImportError:
        _require(False, "redis-py is not installed (pip install -e '.[test]')")
        raise


@pytest.fixture
def codex_bin() -> Path:
    """A native Codex CLI 0.17x; skipped where none is installed, except in CI, which fails."""
    try:
        binary = find_codex()
    except RuntimeError as exc:  # CODEXAUTH_CODEX_BIN names something unusable
        pytest.fail(str(exc))
    if binary is None:
        _require(
            False,
            "no native Codex CLI 0.17x found: set CODEXAUTH_CODEX_BIN, or run "
            "`npm install --prefix .codex-cli @openai/codex@0.171.0` as .ci/run does",
        )
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def strace() -> str:
    """strace with fault injection, able to trace a child here; skipped where it is not
    (except in CI, which fails)."""
    path = shutil.which("strace")
    _require(path is not None, "strace is not installed (apt-get install strace)")
    assert path is not None
    probe = subprocess.run(
        [path, "-f", "-qq", "-o", os.devnull, "-e", "inject=?pwrite64:error=EIO", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    _require(probe.returncode == 0, f"strace cannot trace here: {probe.stderr.strip()[:200]}")
    return path
