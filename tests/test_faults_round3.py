"""Issue 15's faults, round 3, each with the real fault: a real gnome-keyring collection
locked, or its daemon killed, while the refresh request is in flight (item 6); a lockless peer
whose write lands 3.5 s after our `refresh_token_reused` answer, as a stand-in and as the real
Codex CLI 0.171 (item 7); a symlinked config.toml and a FIFO there (item 8); a reuse that no
write ever follows (the REUSE_WINDOW verdict, and exit 5 for a caller who cannot wait it out).

Children are real ``codexauth`` processes; the token endpoint is the loopback TokenServer in
this process. Tokens are compared through fp() only.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import children.codex_like_peer as codex_peer
import pytest
from codex_cli import AppServer, login_status
from secret_service import CODEX_SERVICE, SecretService, SecretServiceUnavailableError, store_key
from support import (
    Racers,
    RawServer,
    TokenServer,
    access_token,
    file_digest,
    fp,
    py_env,
    read_doc,
    run_py,
    stored,
    write_auth_json,
)

import codexauth

CHILD_TIMEOUT = 30.0
KEYRING_OUTBOX = "codexauth-outbox-keyring.json"
HERD = 8
PEER_LATE = 3.5  # seconds from our "reused" answer to the lockless peer's write (issue 15)
KEYRING_CONFIG = 'cli_auth_credentials_store = "keyring"\n'  # config.toml, as Codex reads it
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
    (codex_home / "config.toml").write_text(KEYRING_CONFIG, encoding="utf-8")


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


# A lockless peer whose write lands late (item 7) ##############################


def herd(codex_home: Path, server: TokenServer, *args: str) -> Racers:
    """HERD ``codexauth token`` processes at the barrier (release them yourself)."""
    racers = Racers(py_env(codex_home, server.url))
    for _ in range(HERD):
        racers.spawn([*args, "token"])
    racers.wait_ready()
    return racers


def reused_answered(server: TokenServer) -> bool:
    return "401 refresh_token_reused" in server.redacted_log()


@pytest.mark.slow
@pytest.mark.parametrize("style", ["flock-rename", "truncate"], ids=["codex-0.171", "older"])
def test_a_peer_that_writes_late_makes_no_login_dead(
    codex_home: Path, token_server: TokenServer, style: str
) -> None:
    expire(codex_home)
    start = read_doc(codex_home / "auth.json")
    token_server.delay = 0.2
    # The peer (children/codex_like_peer.py, as the Codex CLI does) spends rt-0 holding no
    # lock; its answer is in its memory, not yet in auth.json.
    peer = codex_peer.refresh(token_server.url, "rt-0")
    with herd(codex_home, token_server) as racers:
        racers.release()
        wait_until(lambda: reused_answered(token_server))
        answered = time.monotonic()
        time.sleep(PEER_LATE)
        codex_peer.write_tokens(codex_home / "auth.json", peer, doc=start, style=style)
        written = time.monotonic()
        results = racers.finish(timeout=CHILD_TIMEOUT)
        done = time.monotonic()

    codes = [r.returncode for r in results]
    assert codes == [0] * HERD, [r.stderr[-300:] for r in results]
    assert {fp(r.stdout.strip()) for r in results} == {fp(peer["access_token"])}
    tokens = stored(codex_home)
    assert fp(tokens["access_token"]) == fp(peer["access_token"])  # the peer's login stays
    assert fp(tokens["refresh_token"]) == fp(peer["refresh_token"])
    assert tokens["refresh_token"] in token_server.valid
    # The peer's request and one of ours; the other seven waited on what that one recorded.
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused"]
    assert written - answered >= PEER_LATE
    assert done - written < codexauth.REUSE_WINDOW - PEER_LATE  # woken by the write itself

    # A herd started after the peer's write: a reuse recorded about rt-0 says nothing about
    # the peer's refresh token.  First on the login as the peer left it...
    with herd(codex_home, token_server) as racers:
        racers.release()
        results = racers.finish(timeout=CHILD_TIMEOUT)
    assert [r.returncode for r in results] == [0] * HERD, [r.stderr[-300:] for r in results]
    assert {fp(r.stdout.strip()) for r in results} == {fp(peer["access_token"])}
    assert token_server.post_count == 2

    # ...then once its access token has expired: one refresh of the peer's refresh token.
    expire(codex_home, peer["refresh_token"])
    with herd(codex_home, token_server) as racers:
        racers.release()
        results = racers.finish(timeout=CHILD_TIMEOUT)
    assert [r.returncode for r in results] == [0] * HERD, [r.stderr[-300:] for r in results]
    issued = token_server.last_issued
    assert issued is not None
    assert {fp(r.stdout.strip()) for r in results} == {fp(issued["access_token"])}
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused", "200"]
    assert posted(token_server)[-1] == fp(peer["refresh_token"])


def test_a_keyring_waiter_wakes_on_the_peers_write(
    secret_service: SecretService, codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    use_keyring(codex_home)
    item = keyring_login(secret_service, codex_home, tmp_path, access_exp=time.time() - 60)
    peer = codex_peer.refresh(
        token_server.url, "rt-0"
    )  # a lockless peer, as Codex in keyring mode
    waiter = keyring_cli(codex_home, secret_service, token_server, "--lock-timeout", "5", "token")
    wait_until(lambda: reused_answered(token_server))
    time.sleep(0.5)
    doc = json.loads(secret_service.secret(item))
    doc["tokens"].update(peer)
    secret_service.set_secret(item, json.dumps(doc, separators=(",", ":")))
    written = time.monotonic()

    result = finish(waiter)

    assert result.returncode == 0, lines(result.stderr)
    assert fp(result.stdout.strip()) == fp(peer["access_token"])
    assert time.monotonic() - written < 3.0  # woken by the write, not by the window's end
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused"]


# A reuse that no write follows (REUSE_WINDOW) ##################################

# codexauth's command with REUSE_WINDOW shortened, so the verdict comes in a second.
SHORT_WINDOW_CLI = (
    "import sys, codexauth; "
    f"codexauth.REUSE_WINDOW = {SHORT_WINDOW!r}; "
    "sys.exit(codexauth.main(sys.argv[1:]))"
)


def test_a_reuse_nobody_writes_is_dead_only_after_the_window(
    codex_home: Path, token_server: TokenServer
) -> None:
    expire(codex_home)
    codex_peer.refresh(token_server.url, "rt-0")  # a peer spends rt-0 and never writes
    before = file_digest(codex_home / "auth.json")

    began = time.monotonic()
    result = run_py(["-c", SHORT_WINDOW_CLI, "token"], codex_home=codex_home)
    took = time.monotonic() - began

    assert result.returncode == 4, result.stderr
    [line] = lines(result.stderr)
    assert "already used" in line
    assert took >= SHORT_WINDOW
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused"]
    assert file_digest(codex_home / "auth.json") == before
    # The verdict is remembered for rt-0: the next run says it at once, with no request.
    again = run_py(["-c", SHORT_WINDOW_CLI, "token"], codex_home=codex_home)
    assert again.returncode == 4 and "already used" in again.stderr
    assert token_server.post_count == 2


@pytest.mark.slow
def test_the_shipped_reuse_window_is_waited_in_full(
    codex_home: Path, token_server: TokenServer
) -> None:
    expire(codex_home)
    codex_peer.refresh(token_server.url, "rt-0")

    began = time.monotonic()
    result = run_py(["-m", "codexauth", "token"], codex_home=codex_home)
    took = time.monotonic() - began

    assert result.returncode == 4, result.stderr
    assert took >= codexauth.REUSE_WINDOW
    assert token_server.post_count == 2


def test_a_lock_timeout_shorter_than_the_window_is_transient(
    codex_home: Path, token_server: TokenServer
) -> None:
    expire(codex_home)
    codex_peer.refresh(token_server.url, "rt-0")

    began = time.monotonic()
    result = run_py(["-m", "codexauth", "--lock-timeout", "1", "token"], codex_home=codex_home)
    took = time.monotonic() - began

    assert result.returncode == 5, result.stderr
    [line] = lines(result.stderr)
    assert "another program spent the refresh token and its result has not arrived yet" in line
    assert 1.0 <= took < codexauth.REUSE_WINDOW
    assert token_server.post_count == 2
    # Nothing was concluded: the peer's write, landing now, is simply used.
    peer = token_server.last_issued
    assert peer is not None
    write_auth_json(codex_home, access=peer["access_token"], refresh=peer["refresh_token"])
    after = run_py(["-m", "codexauth", "token"], codex_home=codex_home)
    assert after.returncode == 0, after.stderr
    assert fp(after.stdout.strip()) == fp(peer["access_token"])
    assert token_server.post_count == 2


# A symlinked config.toml, and special files there (item 8) ####################


def link_config(codex_home: Path, tmp_path: Path, text: str, *, relative: bool) -> Path:
    """config.toml as a dotfiles manager lays it out: a symlink into a dotfiles tree."""
    dotfiles = tmp_path / "dotfiles" / "codex"
    dotfiles.mkdir(parents=True)
    target = dotfiles / "config.toml"
    target.write_text(text, encoding="utf-8")
    link = codex_home / "config.toml"
    link.symlink_to(os.path.relpath(target, codex_home) if relative else target)
    return link


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-link", "relative-link"])
def test_a_symlinked_config_toml_is_followed_to_the_keyring(
    secret_service: SecretService,
    codex_home: Path,
    token_server: TokenServer,
    tmp_path: Path,
    relative: bool,
) -> None:
    link_config(codex_home, tmp_path, KEYRING_CONFIG, relative=relative)
    # A leftover auth.json, expired too, whose refresh token the server would still take.
    token_server.issue("rt-leftover")
    expire(codex_home, "rt-leftover")
    leftover = file_digest(codex_home / "auth.json")
    item = keyring_login(secret_service, codex_home, tmp_path, access_exp=time.time() - 60)

    result = finish(keyring_cli(codex_home, secret_service, token_server, "token"))

    assert result.returncode == 0, result.stderr
    issued = token_server.last_issued
    assert issued is not None
    assert fp(result.stdout.strip()) == fp(issued["access_token"])
    assert posted(token_server) == [fp("rt-0")]  # the keyring's, never the leftover's
    assert fp(keyring_tokens(secret_service, item)["refresh_token"]) == fp(issued["refresh_token"])
    assert file_digest(codex_home / "auth.json") == leftover
    status = finish(keyring_cli(codex_home, secret_service, token_server, "status", "--json"))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["store"] == "keyring"


def test_the_codex_cli_follows_a_symlinked_config_toml_too(
    secret_service: SecretService, codex_home: Path, tmp_path: Path, codex_bin: Path
) -> None:
    # The premise, checked with the real binary: an API key in auth.json, a ChatGPT login in
    # the keyring; which one Codex reports says which config it read.
    link_config(codex_home, tmp_path, KEYRING_CONFIG, relative=True)
    write_auth_json(codex_home, tokens=False, api_key="sk-leftover")
    keyring_login(secret_service, codex_home, tmp_path)

    status = login_status(codex_bin, codex_home, env=secret_service.client_env)
    ours = run_py(
        ["-m", "codexauth", "status", "--json"],
        codex_home=codex_home,
        env={"CODEXAUTH_STORE": None, **secret_service.client_env},
    )

    says_chatgpt = "Logged in using ChatGPT" in status.stdout + status.stderr
    assert (status.returncode, says_chatgpt) == (0, True)
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout)["store"] == "keyring"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", ["fifo", "link-to-fifo", "link-to-device"])
def test_a_special_file_at_config_toml_is_refused_in_one_line_never_a_hang(
    codex_home: Path, tmp_path: Path, kind: str
) -> None:
    config = codex_home / "config.toml"
    if kind == "fifo":
        os.mkfifo(config, 0o600)
    elif kind == "link-to-fifo":
        os.mkfifo(tmp_path / "fifo", 0o600)
        config.symlink_to(tmp_path / "fifo")
    else:
        config.symlink_to("/dev/zero")  # read to its end, it never ends
    write_auth_json(codex_home, access="fresh-access")

    result = run_py(
        ["-m", "codexauth", "token"],
        codex_home=codex_home,
        env={"CODEXAUTH_STORE": None},
        timeout=10,
    )

    # Refused in one line naming it, as the Codex CLI 0.171 refuses it ("is not a file").
    assert result.returncode == 1, result.stderr[-300:]
    [line] = lines(result.stderr)
    assert "config.toml" in line and "not a regular file" in line
    assert result.stdout == ""


# The real Codex CLI 0.171 as the late peer ####################################

CODEX_USER_AGENT = "codex_cli_rs/"  # how Codex 0.171's requests name themselves


class LateProxy(RawServer):
    """Forwards each token request to `target` at once (so the refresh token is spent), then
    holds the answer back until `hold()` turns true and `late` seconds more: a slow link on
    the way back to a lockless peer."""

    def __init__(self, target: int, hold: Callable[[], bool], late: float) -> None:
        self.target, self.hold, self.late = target, hold, late
        self.released: list[float] = []  # when each held answer was sent (time.monotonic)
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        conn.settimeout(CHILD_TIMEOUT)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        upstream = http.client.HTTPConnection("127.0.0.1", self.target, timeout=CHILD_TIMEOUT)
        forwarded = {k: headers[k] for k in ("content-type", "user-agent") if k in headers}
        upstream.request(method, path, body=body, headers=forwarded)
        response = upstream.getresponse()
        payload, status = response.read(), response.status
        ctype = response.getheader("Content-Type", "application/json")
        upstream.close()
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not self.hold() and time.monotonic() < deadline:
            if self.stopping.wait(0.005):
                return
        if self.stopping.wait(self.late):
            return
        conn.sendall(
            f"HTTP/1.1 {status} {http.client.responses.get(status, '')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
            + payload
        )
        self.released.append(time.monotonic())


@pytest.mark.slow
def test_the_real_codex_cli_answered_late_makes_no_login_dead(
    codex_home: Path, token_server: TokenServer, codex_bin: Path
) -> None:
    expire(codex_home)
    proxy = LateProxy(token_server.port, lambda: reused_answered(token_server), PEER_LATE)
    app_server = AppServer(codex_bin, codex_home, f"http://127.0.0.1:{proxy.port}/oauth/token")
    try:
        with herd(codex_home, token_server) as racers:
            # Codex refreshes its expired login as it starts, holding no lock: rt-0 is spent
            # at once, its answer comes back PEER_LATE after ours was answered "reused".
            app_server.start()
            wait_until(lambda: token_server.post_count == 1, timeout=CHILD_TIMEOUT)
            codex_answer = token_server.last_issued
            racers.release()
            results = racers.finish(timeout=CHILD_TIMEOUT)
            finished = time.monotonic()
        app_server.initialize()  # its start-up refresh is over, written or dropped
        app_server.account_read(refresh_token=False)
        with herd(codex_home, token_server) as racers:  # started after Codex's write
            racers.release()
            later = racers.finish(timeout=CHILD_TIMEOUT)
    finally:
        app_server.stop()
        proxy.close()

    assert codex_answer is not None
    assert token_server.user_agents[0].startswith(CODEX_USER_AGENT)
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused"]
    assert len(proxy.released) == 1 and finished > proxy.released[0]  # it really was late
    codes = [r.returncode for r in results + later]
    assert codes == [0] * 2 * HERD, [r.stderr[-300:] for r in results + later]
    tokens = stored(codex_home)  # Codex's login, written by Codex
    assert fp(tokens["access_token"]) == fp(codex_answer["access_token"])
    assert fp(tokens["refresh_token"]) == fp(codex_answer["refresh_token"])
    printed = {fp(r.stdout.strip()) for r in results + later}
    assert printed == {fp(codex_answer["access_token"])}
