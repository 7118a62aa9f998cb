"""Real processes racing on one auth.json against the real loopback token endpoint.

Every child is a separate ``codexauth`` process (support.Racers): it imports what a refresh
needs, then waits at a barrier, so all of them read the stale token and reach the lock in
the same few milliseconds. The TokenServer runs in this process; the children reach it
through CODEX_REFRESH_TOKEN_URL_OVERRIDE. Tokens are compared through fp() only.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import Racers, TokenServer, access_token, fp, py_env, write_auth_json

from codexauth import load_auth_dot_json

CHILD_TIMEOUT = 60.0
# The Codex CLI's exact words, spelled out here so that a change to them fails a test.
EXPIRED_MESSAGE = (
    "Your access token could not be refreshed because your refresh token has expired. "
    "Please log out and sign in again."
)

# What `--verbose` logs on each path through the single-flight protocol (no tokens in them).
POSTED = "refresh started: POST"
ADOPTED_WAITING = "refresh adopted from a peer"  # a peer's write ended the lock wait
ADOPTED_LOCKED = "refresh skipped: a peer already refreshed"  # lock taken, peer's tokens found


def expire(codex_home: Path, refresh: str) -> str | None:
    """An expired access token with `refresh`; returns file_fp() of auth.json."""
    return file_fp(
        write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=refresh)
    )


def file_fp(path: Path) -> str | None:
    """A digest of the file's bytes: comparing it, a failing assert shows no token."""
    return fp(path.read_text())


def race(
    codex_home: Path, server: TokenServer, commands: list[list[str]]
) -> tuple[list[str], list[str], list[int]]:
    """Start one child per command at the same instant; their stdout, stderr and exit codes."""
    with Racers(py_env(codex_home, server.url)) as racers:
        for command in commands:
            racers.spawn(command)
        racers.release()
        results = racers.finish(timeout=CHILD_TIMEOUT)
    return (
        [r.stdout.strip() for r in results],
        [r.stderr for r in results],
        [r.returncode for r in results],
    )


def stored(codex_home: Path) -> tuple[str | None, str | None]:
    """fp of the stored access and refresh tokens."""
    auth = load_auth_dot_json(codex_home)
    assert auth is not None and auth.tokens is not None
    return fp(auth.tokens.access_token), fp(auth.tokens.refresh_token)


def issued(server: TokenServer) -> tuple[str | None, str | None]:
    """fp of the access and refresh tokens the server issued last."""
    assert server.last_issued is not None
    return fp(server.last_issued["access_token"]), fp(server.last_issued["refresh_token"])


def paths(stderrs: list[str]) -> dict[str, int]:
    """How many children took each path, from their --verbose logs."""
    return {
        name: sum(marker in err for err in stderrs)
        for name, marker in (
            ("posted", POSTED),
            ("adopted_waiting", ADOPTED_WAITING),
            ("adopted_locked", ADOPTED_LOCKED),
        )
    }


# The guarantee #################################################################


@pytest.mark.slow
@pytest.mark.parametrize(
    ("processes", "delay"),
    [(16, 0.0), (16, 0.2), (24, 0.2)],
    ids=["16-procs-instant-endpoint", "16-procs-slow-endpoint", "24-procs-slow-endpoint"],
)
def test_expired_token_many_processes_one_post(
    codex_home: Path, token_server: TokenServer, processes: int, delay: float
) -> None:
    expire(codex_home, "rt-0")
    token_server.delay = delay

    outs, errs, codes = race(codex_home, token_server, [["--verbose", "token"]] * processes)

    assert codes == [0] * processes
    assert token_server.post_count == 1
    assert token_server.redacted_log() == ["200"]
    new_access, new_refresh = issued(token_server)
    assert {fp(out) for out in outs} == {new_access}
    assert stored(codex_home) == (new_access, new_refresh)
    taken = paths(errs)
    assert taken["posted"] == 1
    if delay:
        # The race was real: the others found the token stale too and waited for the one POST
        # (typically all of them do; how many is up to the scheduler, so half is required).
        assert taken["adopted_waiting"] + taken["adopted_locked"] >= processes // 2, taken


@pytest.mark.slow
def test_forced_refresh_from_many_processes_adopts_one_post(
    codex_home: Path, token_server: TokenServer
) -> None:
    # A valid token: `refresh` forces a refresh anyway. A process that reads auth.json after
    # the peer's write would rightly refresh again, so the endpoint is slow enough that all
    # of them start from the same refresh token.
    write_auth_json(codex_home, refresh="rt-0")
    token_server.delay = 1.0

    outs, errs, codes = race(codex_home, token_server, [["--verbose", "refresh"]] * 12)

    assert codes == [0] * 12
    assert all(out.startswith("Refreshed.") for out in outs)
    assert token_server.post_count == 1
    assert token_server.redacted_log() == ["200"]
    assert stored(codex_home) == issued(token_server)
    assert paths(errs)["posted"] == 1


@pytest.mark.slow
def test_token_and_refresh_mixed_one_post(codex_home: Path, token_server: TokenServer) -> None:
    expire(codex_home, "rt-0")
    token_server.delay = 1.0
    commands = [["token"], ["refresh"]] * 6

    outs, _, codes = race(codex_home, token_server, commands)

    assert codes == [0] * 12
    assert token_server.post_count == 1
    assert token_server.redacted_log() == ["200"]
    new_access, new_refresh = issued(token_server)
    assert {fp(out) for out, cmd in zip(outs, commands) if cmd == ["token"]} == {new_access}
    assert all(
        out.startswith("Refreshed.") for out, cmd in zip(outs, commands) if cmd != ["token"]
    )
    assert stored(codex_home) == (new_access, new_refresh)


@pytest.mark.slow
def test_repeated_rounds_one_post_each_never_reused(
    codex_home: Path, token_server: TokenServer
) -> None:
    token_server.delay = 0.05
    refresh = "rt-0"
    for round_number in range(1, 6):
        expire(codex_home, refresh)

        outs, _, codes = race(codex_home, token_server, [["token"]] * 8)

        assert codes == [0] * 8, f"round {round_number}"
        assert token_server.post_count == round_number
        new_access, new_refresh = issued(token_server)
        assert {fp(out) for out in outs} == {new_access}, f"round {round_number}"
        assert stored(codex_home) == (new_access, new_refresh)
        auth = load_auth_dot_json(codex_home)
        assert auth is not None and auth.tokens is not None
        refresh = auth.tokens.refresh_token
    assert token_server.redacted_log() == ["200"] * 5


# Failures shared, not repeated ###############################################


@pytest.mark.slow
def test_dead_login_fails_fast_everywhere(codex_home: Path, token_server: TokenServer) -> None:
    before = expire(codex_home, "rt-0")
    token_server.delay = 0.1
    token_server.fail_next(401, {"error": {"code": "refresh_token_expired"}}, times=100)

    _, errs, codes = race(codex_home, token_server, [["token"]] * 16)

    assert codes == [4] * 16
    assert set(errs) == {f"codexauth: {EXPIRED_MESSAGE}\n"}
    assert token_server.post_count == 1
    assert file_fp(codex_home / "auth.json") == before

    # The failure is remembered beside auth.json: a later process does not ask again either.
    _, errs, codes = race(codex_home, token_server, [["token"]])
    assert (codes, errs) == ([4], [f"codexauth: {EXPIRED_MESSAGE}\n"])
    assert token_server.post_count == 1
    assert file_fp(codex_home / "auth.json") == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("expires_in", "expected_code"),
    [(-60, 5), (120, 0)],
    ids=["expired-exits-5", "expiring-still-valid-exits-0"],
)
def test_failing_endpoint_one_attempt_per_backoff(
    codex_home: Path, token_server: TokenServer, expires_in: int, expected_code: int
) -> None:
    old_access = access_token(time.time() + expires_in)
    before = file_fp(write_auth_json(codex_home, access=old_access, refresh="rt-0"))
    token_server.delay = 0.1
    token_server.fail_next(500, {"error": {"code": "server_error"}}, times=100)

    outs, errs, codes = race(codex_home, token_server, [["token"]] * 16)

    assert codes == [expected_code] * 16
    # One attempt inside the 5 s backoff window, however many processes queued behind it.
    assert token_server.post_count == 1
    assert file_fp(codex_home / "auth.json") == before
    if expected_code == 0:
        assert {fp(out) for out in outs} == {fp(old_access)}
    else:
        assert all(out == "" for out in outs)  # no token printed on failure
        for err in errs:
            assert err.startswith("codexauth: Failed to refresh token"), err
            assert err.count("\n") == 1, err
