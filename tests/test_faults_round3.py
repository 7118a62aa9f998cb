"""Issue 15's faults, round 3, each with the real fault: a real gnome-keyring collection
locked, or its daemon killed, while the refresh request is in flight (item 6); a lockless peer
whose write lands 3.5 s after our `refresh_token_reused` answer, as a stand-in and as the real
Codex CLI 0.171 (item 7); a symlinked config.toml and a FIFO there (item 8); a reuse that no
write ever follows (the REUSE_WINDOW verdict, and exit 5 for a caller who cannot wait it out).

Children are real ``codexauth`` processes; the token endpoint is the loopback TokenServer in
this process. Tokens are compared through fp() only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from secret_service import CODEX_SERVICE, SecretService, SecretServiceUnavailableError, store_key
from support import (
    TokenServer,
    access_token,
    file_digest,
    fp,
    py_env,
    read_doc,
    write_auth_json,
)

CHILD_TIMEOUT = 30.0
KEYRING_OUTBOX = "codexauth-outbox-keyring.json"
HERD = 8
PEER_LATE = 3.5  # seconds from our "reused" answer to the lockless peer's write (issue 15)
SHORT_WINDOW = 1.0  # REUSE_WINDOW in the children that patch it


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.005)


def lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def expire(codex_home: Path, refresh: str = "rt-0") -> None:
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=refresh)


def posted(server: TokenServer) -> list[str | None]:
    """The refresh tokens the server was sent, in order, as fingerprints."""
    return [fp(b.get("refresh_token")) if isinstance(b, dict) else None for b in server.requests]


# The keyring, locked or gone while the answer is on its way (item 6) #########


def use_keyring(codex_home: Path) -> None:
    (codex_home / "config.toml").write_text(
        'cli_auth_credentials_store = "keyring"\n', encoding="utf-8"
    )


def keyring_login(service: SecretService, codex_home: Path, tmp_path: Path, **kwargs: Any) -> str:
    """Codex's keyring item holding a login made as support.write_auth_json makes one; its
    D-Bus path."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    doc = read_doc(write_auth_json(scratch, **kwargs))
    text = json.dumps(doc, separators=(",", ":"))
    return service.create_codex_item(store_key(codex_home), text)


def keyring_tokens(service: SecretService, path: str) -> dict[str, Any]:
    tokens = json.loads(service.secret(path))["tokens"]
    assert isinstance(tokens, dict)
    return tokens


def kill_keyring(service: SecretService) -> None:
    """SIGKILL gnome-keyring-daemon (the bus stays up), as a crash or an OOM kill would."""
    proc = service._keyring
    assert proc is not None and proc.poll() is None, "the keyring daemon is not running"
    proc.kill()
    proc.wait(timeout=10)


def restart_keyring(service: SecretService, timeout: float = 15.0) -> None:
    """Start gnome-keyring-daemon again on the same bus and the same keyrings on disk,
    unlocked with the same password (as a desktop session's login does)."""
    with open(service.root / "keyring.log", "ab") as log:
        proc = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=service.daemon_env,
            cwd=str(service.home),
        )
    service._keyring = proc
    assert proc.stdin is not None
    proc.stdin.write(service.password.encode("utf-8"))
    proc.stdin.close()
    deadline = time.monotonic() + timeout
    while service._default_collection_path() in (None, "/"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SecretServiceUnavailableError("gnome-keyring-daemon did not come back")
        time.sleep(0.02)


def keyring_cli(
    codex_home: Path, service: SecretService, server: TokenServer, *args: str
) -> subprocess.Popen[str]:
    env = py_env(codex_home, server.url, env={"CODEXAUTH_STORE": None, **service.client_env})
    return subprocess.Popen(
        [sys.executable, "-m", "codexauth", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"codexauth still running after {CHILD_TIMEOUT} s") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("fault", ["locked", "daemon-killed"])
def test_a_keyring_lost_during_the_post_keeps_the_new_login_in_the_outbox(
    secret_service: SecretService,
    codex_home: Path,
    token_server: TokenServer,
    tmp_path: Path,
    fault: str,
) -> None:
    use_keyring(codex_home)
    write_auth_json(codex_home, refresh="rt-leftover")  # a leftover auth.json: never touched
    leftover = file_digest(codex_home / "auth.json")
    item = keyring_login(secret_service, codex_home, tmp_path, access_exp=time.time() - 60)
    token_server.delay = 1.0  # the fault strikes while the answer is on its way

    first = keyring_cli(codex_home, secret_service, token_server, "token")
    wait_until(lambda: token_server.post_count == 1 or first.poll() is not None)
    if fault == "locked":
        secret_service.lock()  # a screen lock
    else:
        kill_keyring(secret_service)
    result = finish(first)

    issued = token_server.last_issued
    assert issued is not None and token_server.redacted_log() == ["200"]
    assert result.returncode == 0, result.stderr
    assert fp(result.stdout.strip()) == fp(issued["access_token"])
    [warning] = lines(result.stderr)
    assert KEYRING_OUTBOX in warning and "next run stores it" in warning
    assert (codex_home / KEYRING_OUTBOX).exists()

    if fault == "locked":
        # Still locked: whatever the next run says, it spends nothing.
        still = finish(keyring_cli(codex_home, secret_service, token_server, "token"))
        assert still.returncode in (0, 1), still.stderr
        if still.returncode == 0:
            assert fp(still.stdout.strip()) == fp(issued["access_token"])
        else:
            assert len(lines(still.stderr)) == 1 and "locked" in still.stderr
        assert token_server.post_count == 1
        secret_service.unlock()
    else:
        restart_keyring(secret_service)
    assert fp(keyring_tokens(secret_service, item)["refresh_token"]) == fp("rt-0")

    after = finish(keyring_cli(codex_home, secret_service, token_server, "token"))

    assert after.returncode == 0, after.stderr
    assert lines(after.stderr) == []
    assert fp(after.stdout.strip()) == fp(issued["access_token"])
    assert token_server.post_count == 1  # stored from the outbox, with no request
    assert posted(token_server).count(fp("rt-0")) == 1
    [info] = secret_service.items(CODEX_SERVICE, store_key(codex_home))
    assert info.path == item  # Codex's own item, updated in place
    tokens = keyring_tokens(secret_service, item)
    assert fp(tokens["refresh_token"]) == fp(issued["refresh_token"])
    assert fp(tokens["access_token"]) == fp(issued["access_token"])
    assert not (codex_home / KEYRING_OUTBOX).exists()
    assert file_digest(codex_home / "auth.json") == leftover
