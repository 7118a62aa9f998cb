"""Real processes racing on one auth.json against the real loopback token endpoint.

Every child is a separate ``codexauth`` process (support.Racers): it imports what a refresh
needs, then waits at a barrier, so all of them read the stale token and reach the lock in
the same few milliseconds. The TokenServer runs in this process; the children reach it
through CODEX_REFRESH_TOKEN_URL_OVERRIDE. Tokens are compared through fp() only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from codex_cli import AppServer, login_status
from support import (
    EXPIRED_MESSAGE,
    Racers,
    TokenServer,
    access_token,
    file_digest,
    fp,
    py_env,
    run_py,
    stored,
    write_auth_json,
)

from codexauth import load_auth_dot_json

CHILD_TIMEOUT = 60.0

# What `--verbose` logs when a process found the token stale but adopted a peer's refresh (no
# tokens in them). Outcomes are checked through the endpoint's counts and auth.json; only
# whether the others really raced the POST is visible nowhere else.
ADOPTED_WAITING = "refresh adopted from a peer"  # a peer's write ended the lock wait
ADOPTED_LOCKED = "refresh skipped: a peer already refreshed"  # lock taken, peer's tokens found


def expire(codex_home: Path, refresh: str) -> str | None:
    """An expired access token with `refresh`; returns file_digest() of auth.json."""
    return file_digest(
        write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=refresh)
    )


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


def pair(tokens: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """fp of the access and refresh tokens in `tokens` (stored(), or what a server issued)."""
    return fp(tokens["access_token"]), fp(tokens["refresh_token"])


def issued(server: TokenServer) -> tuple[str | None, str | None]:
    """fp of the access and refresh tokens the server issued last."""
    assert server.last_issued is not None
    return pair(server.last_issued)


def adopted(stderrs: list[str]) -> dict[str, int]:
    """How many children adopted a peer's refresh, and how, from their --verbose logs."""
    return {
        name: sum(marker in err for err in stderrs)
        for name, marker in (("waiting", ADOPTED_WAITING), ("locked", ADOPTED_LOCKED))
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
    assert pair(stored(codex_home)) == (new_access, new_refresh)
    if delay:
        # The race was real: the others found the token stale too and waited for the one POST
        # (typically all of them do; how many is up to the scheduler, so half is required).
        taken = adopted(errs)
        assert taken["waiting"] + taken["locked"] >= processes // 2, taken


@pytest.mark.slow
def test_forced_refresh_from_many_processes_adopts_one_post(
    codex_home: Path, token_server: TokenServer
) -> None:
    # A valid token: `refresh` forces a refresh anyway. A process that reads auth.json after
    # the peer's write would rightly refresh again, so the endpoint is slow enough that all
    # of them start from the same refresh token.
    write_auth_json(codex_home, refresh="rt-0")
    token_server.delay = 1.0

    outs, _, codes = race(codex_home, token_server, [["refresh"]] * 12)

    assert codes == [0] * 12
    assert all(out.startswith("Refreshed.") for out in outs)
    assert token_server.post_count == 1
    assert token_server.redacted_log() == ["200"]
    assert pair(stored(codex_home)) == issued(token_server)


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
    assert pair(stored(codex_home)) == (new_access, new_refresh)


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
        assert pair(stored(codex_home)) == (new_access, new_refresh)
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
    assert file_digest(codex_home / "auth.json") == before

    # The failure is remembered beside auth.json: a later process does not ask again either.
    _, errs, codes = race(codex_home, token_server, [["token"]])
    assert (codes, errs) == ([4], [f"codexauth: {EXPIRED_MESSAGE}\n"])
    assert token_server.post_count == 1
    assert file_digest(codex_home / "auth.json") == before


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
    before = file_digest(write_auth_json(codex_home, access=old_access, refresh="rt-0"))
    token_server.delay = 0.1
    token_server.fail_next(500, {"error": {"code": "server_error"}}, times=100)

    outs, errs, codes = race(codex_home, token_server, [["token"]] * 16)

    assert codes == [expected_code] * 16
    # One attempt inside the 5 s backoff window, however many processes queued behind it.
    assert token_server.post_count == 1
    assert file_digest(codex_home / "auth.json") == before
    if expected_code == 0:
        assert {fp(out) for out in outs} == {fp(old_access)}
    else:
        assert all(out == "" for out in outs)  # no token printed on failure
        for err in errs:
            assert err.startswith("codexauth: Failed to refresh token"), err
            assert err.count("\n") == 1, err


# The real Codex CLI ############################################################
# `codex app-server` 0.171 refreshes an expired login as it starts: it POSTs with the refresh
# token it loaded, holding no lock, and only then takes auth.lock to write. These rounds race it
# against a herd of codexauth processes on one expired login. The endpoint holds every answer
# for CODEX_SERVER_DELAY, so both sides' POSTs carry the same refresh token; who reaches the
# endpoint first alternates by round (the first POST is seen arriving before the other side is
# let go), so each round has a known winner.

CODEX_ROUNDS = 4
CODEX_USER_AGENT = "codex_cli_rs/"
CODEX_RACERS = 16
CODEX_SERVER_DELAY = 0.5


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def wait_for_posts(server: TokenServer, count: int, timeout: float = CHILD_TIMEOUT) -> None:
    """Until the endpoint has received `count` POSTs in all (bounded)."""
    deadline = time.monotonic() + timeout
    while server.post_count < count:
        assert time.monotonic() < deadline, f"{server.post_count}/{count} POSTs in {timeout} s"
        time.sleep(0.002)


def codex_round(
    codex_home: Path, server: TokenServer, binary: Path, *, codex_first: bool
) -> dict[str, object]:
    """One race on the expired login in auth.json; what happened, with no token in it."""
    start = load_auth_dot_json(codex_home)
    assert start is not None and start.tokens is not None
    start_fp = fp(start.tokens.refresh_token)
    first_request = len(server.requests)
    first_log = len(server.redacted_log())
    app_server = AppServer(binary, codex_home, server.url)
    with Racers(py_env(codex_home, server.url)) as racers:
        for _ in range(CODEX_RACERS):
            racers.spawn(["token"])
        racers.wait_ready()
        posts_before = server.post_count
        try:
            if codex_first:
                app_server.start()
                wait_for_posts(server, posts_before + 1)
                racers.release()
            else:
                racers.release()
                wait_for_posts(server, posts_before + 1)
                app_server.start()
            results = racers.finish(timeout=CHILD_TIMEOUT)
            # Its start-up refresh is over (written or dropped) before it answers.
            app_server.initialize()
            app_server.account_read(refresh_token=False)
        finally:
            app_server.stop()
    posts = zip(server.requests[first_request:], server.user_agents[first_request:])
    bodies = [(b, agent) for b, agent in posts if isinstance(b, dict)]
    # Both send the same body since codexauth sends refresh_reason too: Codex 0.171 names
    # itself in its User-Agent ("codex_cli_rs/0.171.0 (...)"), codexauth's is requests'.
    codex_posts = [b for b, agent in bodies if agent.startswith(CODEX_USER_AGENT)]
    our_posts = [b for b, agent in bodies if not agent.startswith(CODEX_USER_AGENT)]
    final_access, final_refresh = pair(stored(codex_home))
    return {
        "order": "codex first" if codex_first else "codexauth first",
        "failures": sum(r.returncode != 0 for r in results),
        "exit_codes": sorted({r.returncode for r in results}),
        "posts": len(bodies),
        "log": server.redacted_log()[first_log:],
        "codex_posted_same_token": any(fp(b["refresh_token"]) == start_fp for b in codex_posts),
        "codexauth_posted_same_token": any(fp(b["refresh_token"]) == start_fp for b in our_posts),
        "codex_reasons": sorted({str(b["refresh_reason"]) for b in codex_posts}),
        "stored_is_live": final_refresh in {fp(token) for token in server.valid},
        "printed_stored_access": all(fp(r.stdout.strip()) == final_access for r in results),
    }


@pytest.mark.slow
def test_real_codex_cli_races_codexauth_herd(
    codex_home: Path, token_server: TokenServer, codex_bin: Path
) -> None:
    token_server.delay = CODEX_SERVER_DELAY
    expire(codex_home, "rt-0")
    rounds = []
    for round_number in range(CODEX_ROUNDS):
        if round_number:
            # Expire the login again, keeping the live refresh token the last round left.
            auth = load_auth_dot_json(codex_home)
            assert auth is not None and auth.tokens is not None
            expire(codex_home, auth.tokens.refresh_token)
        rounds.append(
            codex_round(codex_home, token_server, codex_bin, codex_first=round_number % 2 == 0)
        )

    table = "\n".join(str(r) for r in rounds)
    # The race was real: in some round both sides spent the very same refresh token.
    raced = [r["codex_posted_same_token"] and r["codexauth_posted_same_token"] for r in rounds]
    assert any(raced), table
    for r in rounds:
        assert r["failures"] == 0, table
        assert r["stored_is_live"], table
        assert r["printed_stored_access"], table
        # One codexauth POST, plus at most the one Codex made on its own.
        assert r["posts"] <= 2, table


def test_codex_login_status_reads_what_codexauth_wrote(
    codex_home: Path, token_server: TokenServer, codex_bin: Path
) -> None:
    expire(codex_home, "rt-0")
    refreshed = run_py(["-m", "codexauth", "token"], codex_home=codex_home).returncode
    assert refreshed == 0
    assert token_server.post_count == 1
    assert pair(stored(codex_home)) == issued(token_server)

    status = login_status(codex_bin, codex_home)

    # Only the verdicts reach an assertion: Codex's output could quote part of a key.
    exit_code = status.returncode
    says_chatgpt = "Logged in using ChatGPT" in status.stdout + status.stderr
    assert exit_code == 0
    assert says_chatgpt, "`codex login status` did not report a ChatGPT login"
