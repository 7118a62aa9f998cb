"""The Redis store: one login for many machines, against a real redis-server and real processes.

Each "machine" is its own HOME and CODEX_HOME directory (so its own per-machine file lock);
they share one redis-server (tests/redis_server.py) and one loopback TokenServer. Children are
``codexauth`` processes (tests/children/redis_peer.py, which can also shorten the fleet lock's
TTL or die before its request), started together by support.Racers. Outcomes are what a user
sees: POSTs at the endpoint, exit codes and messages, tokens compared through fp(), and the
login as Redis holds it. A password is only ever checked for with booleans.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from redis_server import RedisServer
from support import (
    EXPIRED_MESSAGE,
    REVOKED_MESSAGE,
    Racers,
    TokenServer,
    access_token,
    child,
    fp,
    id_token,
    py_env,
    run_py,
    stored,
    write_auth_json,
)

import codexauth

CHILD_TIMEOUT = 60.0
WAIT_TIMEOUT = 30.0  # hang guard for each wait on a child or the server; never a measure
PEER = "redis_peer"
LOGIN_KEY = "codexauth:{%s}:login"
LOCK_KEY = "codexauth:{%s}:lock"
# redis.md section 8's minimal ACL, without pub/sub (this implementation does not use it).
ACL_COMMANDS = (
    "-@all +hgetall +hget +hset +hdel +time +evalsha +script|load +set +get +pexpire +pttl +del"
)
# What `--verbose` logs once a process holds both refresh locks (no token in it); used only to
# know when a waiter has looked at the store, never as an outcome.
LOCK_TAKEN = b"refresh lock taken"


# Machines sharing a store ######################################################


class Fleet:
    """Machines sharing one Redis store: machine N is ``root/machine-N`` (HOME) and its
    ``.codex`` (CODEX_HOME), with CODEXAUTH_STORE (and CODEXAUTH_NAMESPACE) set."""

    def __init__(
        self, root: Path, server: TokenServer, url: str, namespace: str | None = None
    ) -> None:
        self.root, self.server, self.url, self.namespace = root, server, url, namespace

    def home(self, machine: int) -> Path:
        path = self.root / f"machine-{machine}" / ".codex"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def env(self, machine: int, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        home = self.home(machine)
        env: dict[str, str | None] = {
            codexauth.STORE_ENV_VAR: self.url,
            codexauth.NAMESPACE_ENV_VAR: self.namespace,
            "XDG_RUNTIME_DIR": str(home.parent / ".run"),
            "XDG_STATE_HOME": str(home.parent / ".local" / "state"),
            **(extra or {}),
        }
        return py_env(home, self.server.url, env)

    def run(
        self, machine: int, *args: str, extra: Mapping[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``codexauth ARGS`` (redis_peer's flags first, if any) on `machine`, to the end."""
        home = self.home(machine)
        env = self.env(machine, extra)
        return run_py(child(PEER, *args), codex_home=home, env=env, timeout=CHILD_TIMEOUT)

    def start(self, machine: int, *args: str) -> subprocess.Popen[bytes]:
        """The same, left running: its output is bytes, read by the test."""
        return subprocess.Popen(
            [sys.executable, *child(PEER, *args)],
            env=self.env(machine),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    @contextlib.contextmanager
    def herd(self, commands: Mapping[int, Sequence[Sequence[str]]]) -> Iterator[list[Racers]]:
        """Per machine, one child per command, all waiting at their barriers (imports paid);
        the caller releases them (release()) and collects them (finish())."""
        with contextlib.ExitStack() as stack:
            groups = []
            for machine, machine_commands in commands.items():
                group = stack.enter_context(Racers(self.env(machine)))
                for args in machine_commands:
                    group.spawn(script=child(PEER)[0], args=args)
                groups.append(group)
            for group in groups:
                group.wait_ready()
            yield groups

    def race(
        self, commands: Mapping[int, Sequence[Sequence[str]]]
    ) -> list[subprocess.CompletedProcess[str]]:
        """herd(), released at once; every child's result, machine by machine."""
        with self.herd(commands) as groups:
            return finish(release(groups))


def release(groups: list[Racers]) -> list[Racers]:
    for group in groups:
        group.release()
    return groups


def finish(groups: list[Racers]) -> list[subprocess.CompletedProcess[str]]:
    return [result for group in groups for result in group.finish(timeout=CHILD_TIMEOUT)]


def expired_login(home: Path, refresh: str = "rt-0", **kwargs: Any) -> Path:
    return write_auth_json(home, access=access_token(time.time() - 60), refresh=refresh, **kwargs)


def scrubbed(text: str, hidden: Sequence[str] = ()) -> str:
    """`text` fit for an assertion message: each of `hidden` (passwords) replaced by ***."""
    for secret in sorted(hidden, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def failures(
    results: Sequence[subprocess.CompletedProcess[str]], code: int = 0, hidden: Sequence[str] = ()
) -> list[str]:
    """The stderr ends of the children that did not exit with `code` (never a token; the
    passwords in `hidden` scrubbed)."""
    return [
        f"exit {r.returncode}: {scrubbed(r.stderr, hidden)[-300:]}"
        for r in results
        if r.returncode != code
    ]


def one_line(text: str) -> bool:
    return text.startswith("codexauth: ") and text.count("\n") == 1 and text.endswith("\n")


def client(redis_py: ModuleType, url: str) -> Any:
    return redis_py.Redis.from_url(url, socket_timeout=5.0, retry=None)


def fields(r: Any, namespace: str = "default") -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = r.hgetall(LOGIN_KEY % namespace)
    return found


def assert_one_post_reached_both(
    token_server: TokenServer, store: Any, holder: Any, waiter: Any
) -> None:
    """rt-0 was POSTed once, both processes exited 0 with its answer, and Redis holds it."""
    holder_code, holder_out, holder_err = reap(holder)
    waiter_code, waiter_out, waiter_err = reap(waiter)
    assert (holder_code, waiter_code) == (0, 0), (holder_err[-300:], waiter_err[-300:])
    assert posts_with(token_server, "rt-0") == 1
    assert token_server.post_count == 1
    new = issued(token_server)
    assert (fp(holder_out.decode().strip()), fp(waiter_out.decode().strip())) == (new, new)
    assert fp(stored_tokens(store)["access_token"]) == new
    assert fp(stored_tokens(store)["refresh_token"]) == issued(token_server, "refresh_token")


def stored_tokens(r: Any, namespace: str = "default") -> dict[str, Any]:
    """The ``tokens`` of the login Redis holds (compare them through fp())."""
    tokens: dict[str, Any] = json.loads(fields(r, namespace)[b"doc"])["tokens"]
    return tokens


def issued(server: TokenServer, field: str = "access_token") -> str | None:
    assert server.last_issued is not None, "the server issued nothing"
    return fp(server.last_issued[field])


def valid(server: TokenServer) -> set[str | None]:
    """fp() of the refresh tokens the server would accept now."""
    return {fp(token) for token in server.valid}


def posts_with(server: TokenServer, refresh_token: str) -> int:
    return sum(
        isinstance(body, dict) and body.get("refresh_token") == refresh_token
        for body in server.requests
    )


def wait_until(done: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting until {what}")
        time.sleep(0.005)


def read_until(proc: subprocess.Popen[Any], marker: bytes) -> bytes:
    """What `proc` wrote to stderr up to `marker` (or its exit), read without blocking."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    os.set_blocking(fd, False)
    seen = b""
    deadline = time.monotonic() + WAIT_TIMEOUT
    try:
        while marker not in seen and time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            if not chunk:
                break
            seen += chunk
    finally:
        os.set_blocking(fd, True)
    return seen


def reap(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("a child was still running after its time") from None
    return proc.returncode, out, err


@pytest.fixture
def fleet(tmp_path: Path, token_server: TokenServer, redis_url: str) -> Fleet:
    return Fleet(tmp_path, token_server, redis_url)


@pytest.fixture
def store(redis_py: ModuleType, redis_url: str) -> Any:
    """A redis-py client to the fleet's Redis, for the test to look at what it holds."""
    return client(redis_py, redis_url)


def pushed_expired(fleet: Fleet, machine: int = 0) -> None:
    expired_login(fleet.home(machine))
    result = fleet.run(machine, "push")
    assert result.returncode == 0, result.stderr


# 1. One refresh for the whole fleet ############################################


@pytest.mark.slow
def test_eight_machines_of_eight_processes_one_post(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    pushed_expired(fleet)

    results = fleet.race({machine: [["token"]] * 8 for machine in range(8)})

    assert failures(results) == []
    assert token_server.post_count == 1
    assert {fp(r.stdout.strip()) for r in results} == {issued(token_server)}
    tokens = stored_tokens(store)
    assert fp(tokens["refresh_token"]) in valid(token_server)
    assert fp(tokens["refresh_token"]) == issued(token_server, "refresh_token")
    assert fp(tokens["access_token"]) == issued(token_server)


# 2. A dead login: one POST finds out, everyone is told #########################


@pytest.mark.parametrize(
    ("refresh", "message"),
    [("rt-0", EXPIRED_MESSAGE), ("rt-never-issued", REVOKED_MESSAGE)],
    ids=["refresh-token-expired", "refresh-token-unknown"],
)
def test_dead_login_one_post_everyone_exits_4(
    fleet: Fleet, token_server: TokenServer, store: Any, refresh: str, message: str
) -> None:
    expired_login(fleet.home(0), refresh)
    assert fleet.run(0, "push").returncode == 0
    before = fields(store)
    token_server.delay = 0.2  # the others reach the locks while the one request is out
    if refresh == "rt-0":
        # Only the first answer says expired: a second POST would get new tokens and exit 0.
        token_server.fail_next(401, {"error": {"code": "refresh_token_expired"}})

    results = fleet.race({machine: [["token"]] * 2 for machine in range(3)})

    assert failures(results, 4) == []
    assert {r.stderr for r in results} == {f"codexauth: {message}\n"}
    assert token_server.post_count == 1
    assert fields(store)[b"doc"] == before[b"doc"]
    # Remembered in the store: a machine that comes later does not ask either.
    late = fleet.run(3, "token")
    assert (late.returncode, late.stderr) == (4, f"codexauth: {message}\n")
    assert token_server.post_count == 1


# 3. A holder killed before its request #########################################


@pytest.mark.parametrize(
    "fault",
    [
        ["--set", "REDIS_LOCK_IDLE_TTL=3", "--hold-and-die"],
        ["--set", "REDIS_LOCK_MARGIN=1.5", "--set", "REDIS_FLIGHT_GRACE=0.5", "--die-before-post"],
    ],
    ids=["killed-holding-the-lock", "killed-after-announcing-its-request"],
)
def test_holder_killed_before_its_post_another_machine_refreshes(
    fleet: Fleet, token_server: TokenServer, store: Any, fault: list[str]
) -> None:
    pushed_expired(fleet)
    # kill -9, holding the fleet lock (for 3 s), or having announced its request (for
    # 1 + 1.5 + 0.5 s) and extended the lock (1 + 1.5 s): nothing was sent.
    killed = fleet.run(0, *fault, "--timeout", "1", "token")
    assert killed.returncode == -signal.SIGKILL
    assert store.pttl(LOCK_KEY % "default") > 0, "the dead holder left no lock to outlast"
    assert token_server.post_count == 0

    results = fleet.race(
        {machine: [["--lock-timeout", "20", "token"]] * 2 for machine in range(3)}
    )

    assert failures(results) == []
    assert token_server.post_count == 1
    assert {fp(r.stdout.strip()) for r in results} == {issued(token_server)}
    assert fp(stored_tokens(store)["refresh_token"]) == issued(token_server, "refresh_token")
    assert fp(stored_tokens(store)["refresh_token"]) in valid(token_server)


# 4. A holder paused mid-request past its lock's TTL ############################


def test_paused_holder_past_its_lock_ttl_no_second_post(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    pushed_expired(fleet)
    version = fields(store)[b"version"]
    token_server.delay = 1.0
    # Its lock lapses 2 + 0.1 s after the request starts; its flight stands 30 s longer.
    short_ttl = ["--set", "REDIS_LOCK_MARGIN=0.1", "--set", "REDIS_FLIGHT_GRACE=30"]
    holder = fleet.start(0, *short_ttl, "--timeout", "2", "token")
    waiter = None
    try:
        wait_until(lambda: token_server.post_count == 1, "the holder's request arrived")
        holder.send_signal(signal.SIGSTOP)
        assert fields(store)[b"version"] == version, "the holder committed before its pause"
        wait_until(lambda: not store.exists(LOCK_KEY % "default"), "the holder's lock lapsed")

        # The waiter reads the announced flight in the same read as the login, and waits
        # for its answer holding no lock.
        waiter = fleet.start(1, "token")
        time.sleep(1.0)  # room for the wrong move: a POST of the token in flight
        assert token_server.post_count == 1
    finally:
        holder.send_signal(signal.SIGCONT)
    assert_one_post_reached_both(token_server, store, holder, waiter)


# 5. Redis stopped mid-herd, then restarted #####################################


def test_redis_stopped_mid_herd_then_restarted(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    password = "pw-" + secrets.token_hex(12)
    server = start_redis(password=password)
    fleet = Fleet(tmp_path, token_server, server.url())
    pushed_expired(fleet)
    token_server.delay = 1.0

    with fleet.herd({machine: [["token"]] * 3 for machine in range(3)}) as groups:
        release(groups)
        wait_until(lambda: token_server.post_count == 1, "the one request arrived")
        server.stop(save=True)  # persisted, as a real Redis restarting would be
        procs = [proc for group in groups for proc in group.procs]
        wait_until(
            lambda: sum(proc.poll() is not None for proc in procs) >= len(procs) - 1,
            "every process but the one mid-request gave up",
        )
        server.start()
        results = finish(groups)

    shown = [i for i, r in enumerate(results) if password in r.stdout + r.stderr]
    assert not shown, f"children {shown} showed the password"
    codes = [r.returncode for r in results]
    assert sorted(codes) == [0] + [5] * (len(codes) - 1), failures(results, 0, [password])
    redacted = f"redis://127.0.0.1:{server.port}/0"
    for result in results:
        if result.returncode == 5:
            assert one_line(result.stderr), result.stderr
            assert redacted in result.stderr, result.stderr
    # The one that was mid-request committed once Redis was back: the login is intact.
    (holder,) = [r for r in results if r.returncode == 0]
    assert fp(holder.stdout.strip()) == issued(token_server)
    after = fleet.run(3, "token")
    assert after.returncode == 0, after.stderr
    assert fp(after.stdout.strip()) == issued(token_server)
    assert token_server.post_count == 1
    tokens = stored_tokens(client(redis_py, server.url()))
    assert fp(tokens["refresh_token"]) == issued(token_server, "refresh_token")


def test_redis_down_when_the_answer_lands_the_holder_commits_once_it_is_back(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    # The answer is the only copy of the new tokens, and the old refresh token is spent: a
    # holder that gave up on the commit would leave the fleet a dead login.
    server = start_redis()
    fleet = Fleet(tmp_path, token_server, server.url())
    pushed_expired(fleet)
    token_server.delay = 0.5

    with fleet.herd({machine: [["--verbose", "token"]] * 2 for machine in range(2)}) as groups:
        release(groups)
        wait_until(lambda: token_server.post_count == 1, "the one request arrived")
        server.stop(save=True)
        procs = [proc for group in groups for proc in group.procs]
        wait_until(
            lambda: sum(proc.poll() is not None for proc in procs) >= len(procs) - 1,
            "every process but the one mid-request gave up",
        )
        (holder,) = [proc for proc in procs if proc.poll() is None]
        seen = read_until(holder, b"refresh succeeded")
        assert b"refresh succeeded" in seen, "the holder's request did not succeed"
        time.sleep(0.5)  # its commit meets the stopped server
        server.start()
        results = finish(groups)

    codes = sorted(r.returncode for r in results)
    assert codes == [0] + [5] * (len(codes) - 1), failures(results)
    after = fleet.run(2, "token")
    assert after.returncode == 0, after.stderr
    assert fp(after.stdout.strip()) == issued(token_server)
    assert token_server.post_count == 1
    tokens = stored_tokens(client(redis_py, server.url()))
    assert fp(tokens["refresh_token"]) == issued(token_server, "refresh_token")


def test_warm_process_serves_its_valid_token_while_redis_is_down(
    fleet: Fleet, token_server: TokenServer, redis_server: RedisServer
) -> None:
    write_auth_json(fleet.home(0))  # an hour left
    assert fleet.run(0, "push").returncode == 0
    fresh = codexauth.CodexAuth(fleet.home(1), store=fleet.url)
    token = fresh.get_token()
    # Inside the refresh window (4 min left): due, but still good for a while.
    due = codexauth.CodexAuth(fleet.home(2), store=fleet.url)
    write_auth_json(fleet.home(2), access=access_token(time.time() + 240), refresh="rt-0")
    assert fleet.run(2, "push", "--force").returncode == 0
    due_token = due.get_token_data().access_token  # read, not refreshed

    redis_server.stop()

    for _ in range(3):
        assert fp(fresh.get_token()) == fp(token)
        assert fp(due.get_token()) == fp(due_token)  # its refresh failed: the store is down
    with pytest.raises(codexauth.StoreUnreachableError):
        codexauth.CodexAuth(fleet.home(3), store=fleet.url).get_token()  # cold: nothing held
    assert token_server.post_count == 0


# 6. A password in the URL is never shown #######################################


@pytest.mark.slow
def test_password_never_shown_and_the_acl_user_runs_the_herd(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    admin, user_pw, narrow_pw = ("pw-" + secrets.token_hex(12) for _ in range(3))
    server = start_redis(
        password=admin,
        users=[
            f"codexauth on >{user_pw} resetkeys resetchannels ~codexauth:* {ACL_COMMANDS}",
            # The same, without the scripts: a misconfigured ACL.
            f"narrow on >{narrow_pw} resetkeys resetchannels ~codexauth:* "
            + ACL_COMMANDS.replace(" +evalsha", ""),
        ],
    )
    url = server.url("codexauth", user_pw)
    fleet = Fleet(tmp_path, token_server, url)
    outputs: dict[str, str] = {}

    def run(name: str, machine: int, *args: str, url: str = url) -> tuple[int, str, str]:
        """The exit code and output, passwords scrubbed (outputs[name] keeps them as shown)."""
        result = fleet.run(machine, *args, extra={codexauth.STORE_ENV_VAR: url})
        outputs[name] = result.stdout + result.stderr
        hidden = (admin, user_pw, narrow_pw)
        return result.returncode, scrubbed(result.stdout, hidden), scrubbed(result.stderr, hidden)

    expired_login(fleet.home(0))
    assert run("push", 0, "--verbose", "push")[0] == 0
    results = fleet.race({machine: [["--verbose", "token"]] * 3 for machine in range(3)})
    outputs.update({f"herd {i}": r.stdout + r.stderr for i, r in enumerate(results)})
    assert failures(results, 0, [admin, user_pw, narrow_pw]) == []
    assert token_server.post_count == 1
    assert {fp(r.stdout.strip()) for r in results} == {issued(token_server)}

    assert run("token", 3, "token")[0] == 0
    code, out, _ = run("status", 3, "status")
    assert code == 0
    assert f"Store:             redis://codexauth@127.0.0.1:{server.port}/0\n" in out
    code, out, _ = run("status --json", 3, "status", "--json")
    assert code == 0
    assert json.loads(out)["store"] == f"redis://codexauth@127.0.0.1:{server.port}/0"
    assert run("refresh", 3, "--verbose", "refresh")[0] == 0
    assert run("pull", 3, "--verbose", "pull")[0] == 0
    code, out, _ = run("push again", 3, "--verbose", "push")
    assert code == 0 and "holds this login already" in out
    assert run("store in argv", 4, "--store", url, "status")[0] == 0
    assert token_server.post_count == 2  # the herd's, and the forced one

    # Failures: one line each, naming the store without the password.
    wrong = server.url("codexauth", "not-" + user_pw)
    bare = server.url("codexauth", "")
    narrow = server.url("narrow", narrow_pw)
    for name, machine, args, store_url, expected in [
        ("wrong password", 4, ["token"], wrong, 1),
        ("wrong password status", 4, ["status", "--json"], wrong, 1),
        ("wrong password verbose", 4, ["--verbose", "token"], wrong, 1),
        ("no password", 4, ["token"], bare, 1),
        ("missing ACL command", 0, ["push", "--force"], narrow, 1),
    ]:
        code, out, err = run(name, machine, *args, url=store_url)
        assert (code, out) == (expected, ""), name
        assert one_line(err) and f"127.0.0.1:{server.port}/0" in err, (name, err)
    assert fp(stored_tokens(client(redis_py, url))["refresh_token"]) in valid(token_server)
    server.stop()
    code, out, err = run("unreachable", 3, "refresh", url=url)
    assert code == 5 and one_line(err) and f"127.0.0.1:{server.port}/0" in err, err
    code, out, err = run("unreachable verbose", 3, "--verbose", "refresh", url=url)
    assert code == 5 and one_line(err.splitlines(keepends=True)[-1]), err

    passwords = {"admin": admin, "user": user_pw, "narrow": narrow_pw}
    shown = [(n, p) for n, text in outputs.items() for p, pw in passwords.items() if pw in text]
    assert not shown, f"passwords shown (output, whose): {shown}"


# 7. push and pull around a lockless local refresh ##############################


def test_push_adopts_a_lockless_local_refresh_and_refuses_a_stale_one(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    write_auth_json(fleet.home(0))  # rt-0, an hour left
    assert fleet.run(0, "push").returncode == 0
    for machine in (1, 3):
        pulled = fleet.run(machine, "pull")
        assert pulled.returncode == 0, pulled.stderr
        assert fp(stored(fleet.home(machine))["refresh_token"]) == fp("rt-0")

    # On machine 1 the Codex CLI refreshes auth.json itself, taking no lock of ours.
    auth_json = str(fleet.home(1) / "auth.json")
    with Racers(fleet.env(1)) as racers:
        racers.spawn(
            script=child("codex_like_peer")[0],
            args=[auth_json, token_server.url, "0", "flock-rename"],
        )
        racers.release()
        (peer,) = racers.finish(timeout=CHILD_TIMEOUT)
    verdict, _, peer_token = peer.stdout.strip().partition(" ")
    assert verdict == "won", peer.stderr
    assert token_server.post_count == 1

    pushed = fleet.run(1, "push")
    assert pushed.returncode == 0, pushed.stderr
    assert fp(stored_tokens(store)["refresh_token"]) == fp(stored(fleet.home(1))["refresh_token"])
    assert fp(stored_tokens(store)["refresh_token"]) in valid(token_server)
    used = fleet.run(2, "token")
    assert used.returncode == 0, used.stderr
    assert fp(used.stdout.strip()) == fp(peer_token)
    assert token_server.post_count == 1  # the fleet adopted it: no request of its own

    # Machine 3 pulled rt-0 before: its auth.json is older than the store.
    before = fields(store)
    stale = fleet.run(3, "push")
    assert stale.returncode == 1 and one_line(stale.stderr), stale.stderr
    assert "refusing to push" in stale.stderr and stale.stdout == ""
    assert fields(store) == before
    forced = fleet.run(3, "push", "--force")
    assert forced.returncode == 0, forced.stderr
    assert fp(stored_tokens(store)["refresh_token"]) == fp("rt-0")
    assert int(fields(store)[b"version"]) == int(before[b"version"]) + 1
    assert token_server.post_count == 1


# 8. The warm path: one read per process while the token is fresh ##############


def data_calls(server: RedisServer) -> dict[str, int]:
    """Commands Redis ran since the last reset, by name, without the test's own and the
    connection's handshake (redis-py 5+ announces itself with CLIENT SETINFO)."""
    text = server.command("INFO", "commandstats")
    assert isinstance(text, bytes)
    ignored = {"info", "config|resetstat", "client|setinfo", "hello", "auth", "select"}
    calls = {}
    for line in text.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_") :].partition(":")
            count = int(dict(kv.split("=") for kv in stats.split(","))["calls"])
            if name not in ignored and count:
                calls[name] = count
    return calls


def test_warm_path_one_round_trip_per_process(
    fleet: Fleet, token_server: TokenServer, redis_server: RedisServer
) -> None:
    write_auth_json(fleet.home(0))  # an hour left
    assert fleet.run(0, "push").returncode == 0
    redis_server.command("CONFIG", "RESETSTAT")

    auth = codexauth.CodexAuth(fleet.home(1), store=fleet.url)
    first, second = auth.get_token(), auth.get_token()
    assert fp(first) == fp(second)
    assert data_calls(redis_server) == {"hgetall": 1}

    # A long-lived process: many calls, and no further round trip.
    redis_server.command("CONFIG", "RESETSTAT")
    for _ in range(200):
        assert fp(auth.get_token()) == fp(first)
        auth.get_account_id()
    assert data_calls(redis_server) == {}
    assert token_server.post_count == 0


# 9. Namespaces ###################################################################


def test_two_namespaces_hold_two_logins_independently(
    tmp_path: Path, token_server: TokenServer, redis_url: str, store: Any
) -> None:
    token_server.issue("rt-b0")
    team_a = Fleet(tmp_path / "a", token_server, redis_url, namespace="team-a")
    team_b = Fleet(tmp_path / "b", token_server, redis_url, namespace="team.b_2")
    expired_login(team_a.home(0), "rt-0", account_id="acct-a")
    expired_login(team_b.home(0), "rt-b0", account_id="acct-b", id_tok=id_token("b@example.com"))
    for team in (team_a, team_b):
        assert team.run(0, "push").returncode == 0
    assert sorted(store.keys("codexauth:*")) == [
        b"codexauth:{team-a}:login",
        b"codexauth:{team.b_2}:login",
    ]

    a, b = team_a.run(1, "token"), team_b.run(1, "token")

    assert (a.returncode, b.returncode) == (0, 0), (a.stderr, b.stderr)
    assert fp(a.stdout.strip()) != fp(b.stdout.strip())
    assert token_server.post_count == 2
    assert posts_with(token_server, "rt-0") == posts_with(token_server, "rt-b0") == 1
    tokens_a, tokens_b = stored_tokens(store, "team-a"), stored_tokens(store, "team.b_2")
    assert (tokens_a["account_id"], tokens_b["account_id"]) == ("acct-a", "acct-b")
    assert fp(tokens_a["access_token"]) == fp(a.stdout.strip())
    assert fp(tokens_b["access_token"]) == fp(b.stdout.strip())
    assert {fp(tokens_a["refresh_token"]), fp(tokens_b["refresh_token"])} == valid(token_server)
    status = team_b.run(2, "status")
    assert "Namespace:         team.b_2\n" in status.stdout
    assert "Account:           acct-b\n" in status.stdout
    # The default namespace holds nothing.
    missing = Fleet(tmp_path / "c", token_server, redis_url).run(0, "token")
    assert missing.returncode == 3 and one_line(missing.stderr), missing.stderr


def test_bad_namespace_is_a_one_line_error(
    fleet: Fleet,
    store: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_auth_json(fleet.home(0))
    monkeypatch.setenv("CODEX_HOME", str(fleet.home(0)))
    monkeypatch.setenv(codexauth.STORE_ENV_VAR, fleet.url)
    cases = [
        ("a:b", ["push"]),
        ("{x}", ["token"]),
        ("*", ["status"]),
        ("a b", ["pull"]),
        ("x" * 65, ["push", "--force"]),
        ("line\nbreak", ["token"]),
        ("\u00e9", ["refresh"]),
    ]
    for namespace, args in cases:
        monkeypatch.setenv(codexauth.NAMESPACE_ENV_VAR, namespace)
        assert codexauth.main(args) == 1, (namespace, args)
        monkeypatch.delenv(codexauth.NAMESPACE_ENV_VAR)
        assert codexauth.main(["--namespace", namespace, *args]) == 1, (namespace, args)
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 2, err
        for line in err.splitlines():
            assert line.startswith("codexauth: CODEXAUTH_NAMESPACE must be 1-64 letters, digits")
    assert store.dbsize() == 0


# 10. status ######################################################################


def test_status_shows_store_namespace_and_who_refreshed_never_a_token(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    password = "pw-" + secrets.token_hex(12)
    server = start_redis(password=password)
    fleet = Fleet(tmp_path, token_server, server.url())
    pushed_expired(fleet)
    started = time.time()
    refresher = fleet.start(1, "token")
    code, out, err = reap(refresher)
    assert code == 0, scrubbed(err.decode(), [password])[-300:]
    ended = time.time()

    text = fleet.run(2, "status")
    as_json = fleet.run(2, "status", "--json")

    tokens = stored_tokens(client(redis_py, server.url()))
    held = [tokens[k] for k in ("access_token", "refresh_token", "id_token")]
    for output in (text, as_json):  # first: the checks below would print what they saw
        leaked = [i for i, s in enumerate([*held, password]) if s in output.stdout]
        assert not leaked, f"status showed secret #{leaked}"
    assert (text.returncode, as_json.returncode) == (0, 0), failures(
        [text, as_json], 0, [password]
    )
    redacted = f"redis://127.0.0.1:{server.port}/0"
    by = f"{socket.gethostname()} pid {refresher.pid}"
    assert f"Store:             {redacted}\n" in text.stdout
    assert "Namespace:         default\n" in text.stdout
    assert f"Refreshed by:      {by}\n" in text.stdout
    assert "Refreshed at:      " in text.stdout
    info = json.loads(as_json.stdout)
    assert (info["store"], info["namespace"], info["last_refreshed_by"]) == (
        redacted,
        "default",
        by,
    )
    assert info["access_token_fingerprint"] == codexauth._fingerprint(out.decode().strip())[:8]
    # Redis's clock, in whole seconds: the refresh's own time, not a placeholder.
    at = codexauth._parse_rfc3339(info["last_refreshed_at"]) / 1e6
    assert int(started) <= at <= ended


# 11. The transient backoff is the fleet's ######################################


def test_failing_endpoint_backs_the_whole_fleet_off(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    pushed_expired(fleet)
    before = fields(store)[b"doc"]
    token_server.fail_next(500, {"error": "server_error"})
    # The others are started and at their barriers first: the backoff (5 s) is not spent on
    # their start-up.
    with fleet.herd({machine: [["token"]] * 2 for machine in range(1, 4)}) as groups:
        first = fleet.run(0, "token")
        assert first.returncode == 5 and one_line(first.stderr), first.stderr
        assert "HTTP 500" in first.stderr
        assert token_server.post_count == 1
        results = finish(release(groups))

    assert failures(results, 5) == []
    assert all(one_line(r.stderr) and "a refresh just failed" in r.stderr for r in results)
    assert token_server.post_count == 1
    assert fields(store)[b"doc"] == before


# 12. A newer login saved during the request is kept ############################


def test_commit_keeps_a_login_pushed_during_the_request(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    pushed_expired(fleet)
    token_server.delay = 1.0
    # Its lock lapses 2 + 0.1 s after the request starts, while it is stopped.
    holder = fleet.start(0, "--set", "REDIS_LOCK_MARGIN=0.1", "--timeout", "2", "token")
    try:
        wait_until(lambda: token_server.post_count == 1, "the holder's request arrived")
        holder.send_signal(signal.SIGSTOP)
        wait_until(lambda: not store.exists(LOCK_KEY % "default"), "the holder's lock lapsed")
        # Meanwhile another machine signs in anew and replaces the login.
        token_server.issue("rt-new")
        write_auth_json(fleet.home(1), refresh="rt-new")
        forced = fleet.run(1, "push", "--force")
        assert forced.returncode == 0, forced.stderr
        pushed = fields(store)
    finally:
        holder.send_signal(signal.SIGCONT)
    code, out, err = reap(holder)

    assert code == 0, err[-300:]  # it still uses the token it was given
    assert fp(out.decode().strip()) == issued(token_server)
    assert fields(store) == pushed  # the newer login stands
    assert fp(stored_tokens(store)["refresh_token"]) == fp("rt-new")
    later = fleet.run(2, "token")
    assert later.returncode == 0, later.stderr
    assert fp(later.stdout.strip()) == fp(stored(fleet.home(1))["access_token"])
    assert token_server.post_count == 1


# 13. Issue 17's faults, each reproduced with the real thing ###################
# A lapsed lock plus a read that meets the commit, a pause after the request left, a
# restart without persistence, an outage past the flight with AOF, an eviction, a pull
# after a local refresh, URLs and ACLs, wake-ups, and a holder killed at its connect().

WAKE_CHANNEL = "codexauth:{%s}:wake"
# What redis.md's README lists (with pub/sub): the ACL a fleet needs.
README_ACL = ACL_COMMANDS + " +publish +subscribe"
SHORT_FLIGHT = ["--set", "REDIS_LOCK_MARGIN=0.1", "--set", "REDIS_FLIGHT_GRACE=0.1"]
POLL_SYSCALL = {"x86_64": 7}  # poll(2): Python's wait on a socket with a timeout


class Ran:
    """A finished child's outcome whose repr (in an assertion's explanation) shows no
    output: its stdout may hold a token."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.returncode, self.stdout, self.stderr = result.returncode, result.stdout, result.stderr

    def __repr__(self) -> str:
        return f"<exit {self.returncode}; stdout fp {fp(self.stdout.strip())}>"


def state_of(r: Any, namespace: str = "default") -> dict[str, Any]:
    """The fleet's shared state as the login hash holds it (no token in it)."""
    raw = fields(r, namespace).get(b"state")
    found: dict[str, Any] = json.loads(raw) if raw else {}
    return found


def subscribers(server: RedisServer, namespace: str = "default") -> int:
    """Processes listening for wake-ups: each subscribes once it waits for a peer."""
    reply = server.command("PUBSUB", "NUMSUB", WAKE_CHANNEL % namespace)
    assert isinstance(reply, list)
    return int(reply[1])


def lines(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [line for line in text.splitlines() if line]


def stopped_in_a_pause(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a SIGSTOPped process's main thread sleeps in poll() with a short timeout: a
    lock wait's pause (≤ 100 ms), not a command waiting for its reply (the I/O timeout)."""
    import platform

    number = POLL_SYSCALL.get(platform.machine())
    if number is None:
        return True  # cannot tell here: the test still holds, it may just not hit the path
    try:
        words = Path(f"/proc/{proc.pid}/syscall").read_text().split()
    except OSError:
        return True
    return words[:1] == [str(number)] and int(words[3], 16) <= 1000


def stop_while_pausing(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP `proc` between two tries for the fleet lock (never with a reply pending)."""
    for _ in range(200):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.01)
        if stopped_in_a_pause(proc):
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.013)
    raise AssertionError("never caught the waiter between two tries for the lock")


# 13.1 A lapsed holder commits while the next holder reads: one POST of rt-0


def test_lapsed_holder_commits_while_the_next_lock_holder_reads(
    fleet: Fleet, token_server: TokenServer, store: Any, redis_server: RedisServer
) -> None:
    pushed_expired(fleet)
    token_server.delay = 1.0
    # H dies holding the fleet lock for 4 s: B queues for it before A ever announces.
    held = fleet.run(3, "--set", "REDIS_LOCK_IDLE_TTL=4", "--hold-and-die")
    assert held.returncode == -signal.SIGKILL
    redis_server.command("CONFIG", "RESETSTAT")
    waiter = fleet.start(1, "--verbose", "--lock-timeout", "40", "token")
    holder = None
    try:
        wait_until(lambda: data_calls(redis_server).get("set", 0) >= 2, "B queued for the lock")
        stop_while_pausing(waiter)  # B read rt-0 with no flight, and waits for the lock
        # A takes the lock once H's lapses, announces its flight (30 s) and sends rt-0; it
        # is stopped there, and its lock lapses 2.1 s after the announcement.
        holder = fleet.start(
            0,
            "--set",
            "REDIS_LOCK_MARGIN=0.1",
            "--set",
            "REDIS_FLIGHT_GRACE=30",
            "--timeout",
            "2",
            "token",
        )
        wait_until(lambda: token_server.post_count == 1, "A's request arrived")
        holder.send_signal(signal.SIGSTOP)
        assert state_of(store)["sent_until"] > time.time() + 20, "A announced no flight"
        wait_until(lambda: not store.exists(LOCK_KEY % "default"), "A's lock lapsed")
        # B takes the lapsed lock and reads under it while A resumes and commits.
        waiter.send_signal(signal.SIGCONT)
        seen = read_until(waiter, LOCK_TAKEN)
        assert LOCK_TAKEN in seen, "B never took the lapsed lock: the fault was not staged"
        holder.send_signal(signal.SIGCONT)
    finally:
        waiter.send_signal(signal.SIGCONT)
        if holder is not None:
            holder.send_signal(signal.SIGCONT)
    assert holder is not None
    assert_one_post_reached_both(token_server, store, holder, waiter)


# 13.2 A holder stopped past its flight: "reused" is not a verdict within REUSE_WINDOW


def test_holder_stopped_past_its_flight_peers_wait_for_its_commit_not_exit_4(
    fleet: Fleet, token_server: TokenServer, store: Any, redis_server: RedisServer
) -> None:
    pushed_expired(fleet)
    token_server.delay = 0.5
    # A's flight: 2 + 0.1 + 0.1 s from its announcement; it is stopped past its end.
    holder = fleet.start(0, *SHORT_FLIGHT, "--timeout", "2", "token")
    others: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(lambda: token_server.post_count == 1, "A's request arrived")
        holder.send_signal(signal.SIGSTOP)
        flight_end = state_of(store)["sent_until"]
        wait_until(lambda: time.time() > flight_end + 0.2, "A's flight ended", 10)
        # B finds the flight over and spends rt-0 again (the named window): "reused".
        others.append(fleet.start(1, "token"))
        wait_until(
            lambda: "401 refresh_token_reused" in token_server.redacted_log(),
            "B was told rt-0 was reused",
        )
        wait_until(lambda: state_of(store).get("peer_until", 0) > 0, "B told the fleet")
        # C reads the reuse window and waits, sending nothing.
        others.append(fleet.start(2, "token"))
        wait_until(lambda: subscribers(redis_server) >= 3, "A, B and C all listen")
        assert token_server.post_count == 2
    finally:
        holder.send_signal(signal.SIGCONT)  # well within REUSE_WINDOW of B's answer
    results = [reap(proc) for proc in [holder, *others]]

    assert [code for code, _, _ in results] == [0, 0, 0], [e[-300:] for _, _, e in results]
    new = issued(token_server)
    assert [fp(out.decode().strip()) for _, out, _ in results] == [new] * 3
    assert posts_with(token_server, "rt-0") == 2  # A's, and B's past A's flight
    assert token_server.post_count == 2  # none from C
    assert fp(stored_tokens(store)["refresh_token"]) == issued(token_server, "refresh_token")


# 13.3 A restart without persistence during the request


def test_restart_without_persistence_during_the_post_the_commit_refills_the_store(
    fleet: Fleet, token_server: TokenServer, redis_server: RedisServer, redis_py: ModuleType
) -> None:
    pushed_expired(fleet)
    token_server.delay = 1.0
    holder = fleet.start(0, "token")
    wait_until(lambda: token_server.post_count == 1, "the request arrived")
    redis_server.restart()  # kill -9, nothing persisted: it comes back empty
    r = client(redis_py, fleet.url)
    assert r.dbsize() == 0
    code, out, err = reap(holder)

    assert code == 0, err[-300:]
    assert fp(out.decode().strip()) == issued(token_server)
    (warning,) = lines(err)
    assert "was empty" in warning and "again" in warning, warning
    assert "changed" not in warning
    assert fp(stored_tokens(r)["refresh_token"]) == issued(token_server, "refresh_token")
    later = Ran(fleet.run(1, "token"))
    assert (later.returncode, later.stderr) == (0, ""), later.stderr
    assert fp(later.stdout.strip()) == issued(token_server)
    assert token_server.post_count == 1


# 13.4 An outage past the flight window, with AOF


def outbox_files(fleet: Fleet, machine: int) -> list[Path]:
    return sorted(fleet.home(machine).parent.rglob("codexauth-outbox*.json"))


def test_outage_past_the_flight_the_outbox_keeps_the_login_for_the_next_run(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    server = start_redis(appendonly=True)
    fleet = Fleet(tmp_path, token_server, server.url())
    pushed_expired(fleet)
    token_server.delay = 0.5
    # The flight: 2 + 0.5 + 0.5 s from the announcement; Redis stays down past it.
    short = ["--set", "REDIS_LOCK_MARGIN=0.5", "--set", "REDIS_FLIGHT_GRACE=0.5"]
    holder = fleet.start(0, *short, "--timeout", "2", "token")
    wait_until(lambda: token_server.post_count == 1, "the request arrived")
    server.stop()  # kill -9; AOF holds the pushed login
    code, out, err = reap(holder)
    server.start()  # after the flight, with the old login (rt-0)
    r = client(redis_py, server.url())

    assert code == 0, err[-300:]
    assert fp(out.decode().strip()) == issued(token_server)
    (outbox,) = outbox_files(fleet, 0)
    (warning,) = lines(err)
    assert str(outbox) in warning, warning
    assert fp(stored_tokens(r)["refresh_token"]) == fp("rt-0")
    # The next run on that machine stores it, and sends nothing.
    later = Ran(fleet.run(0, "token"))
    assert later.returncode == 0, later.stderr
    assert fp(later.stdout.strip()) == issued(token_server)
    assert posts_with(token_server, "rt-0") == 1 and token_server.post_count == 1
    assert fp(stored_tokens(r)["refresh_token"]) == issued(token_server, "refresh_token")
    assert fp(stored_tokens(r)["access_token"]) == issued(token_server)
    assert outbox_files(fleet, 0) == []
    elsewhere = Ran(fleet.run(1, "token"))
    assert elsewhere.returncode == 0 and fp(elsewhere.stdout.strip()) == issued(token_server)
    assert token_server.post_count == 1


# 13.5 Eviction under allkeys-lru


def evict_the_login(r: Any, namespace: str = "default") -> None:
    """Cache traffic under a tight maxmemory until the login is evicted (bounded)."""
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", used + 256 * 1024)
    for i in range(20000):
        r.set(f"cache:{i}", os.urandom(2048))
        if not r.exists(LOGIN_KEY % namespace):
            break
    r.config_set("maxmemory", 0)  # no more pressure: what is written next stays
    assert not r.exists(LOGIN_KEY % namespace), "the cache traffic evicted nothing"


def test_eviction_the_outbox_refills_the_store_and_status_warns(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    server = start_redis(config=["maxmemory-policy allkeys-lru"])
    fleet = Fleet(tmp_path, token_server, server.url())
    r = client(redis_py, server.url())
    pushed_expired(fleet)
    status = Ran(fleet.run(2, "status"))
    assert status.returncode == 0, status.stderr
    warnings = [line for line in lines(status.stdout) if line.startswith("Warning:")]
    assert any("maxmemory-policy is allkeys-lru" in w for w in warnings), status.stdout
    assert any("appendonly is no" in w for w in warnings), status.stdout

    # Evicted during the request: the holder's outbox fills the store again.
    token_server.delay = 1.0
    holder = fleet.start(0, "token")
    wait_until(lambda: token_server.post_count == 1, "the request arrived")
    evict_the_login(r)
    code, _, err = reap(holder)
    assert code == 0, err[-300:]
    (warning,) = lines(err)
    assert "was empty" in warning and "changed" not in warning, warning
    assert fp(stored_tokens(r)["refresh_token"]) == issued(token_server, "refresh_token")
    pulled = Ran(fleet.run(1, "pull"))
    assert pulled.returncode == 0, pulled.stderr

    # Evicted again, with no outbox anywhere: "not logged in".
    evict_the_login(r)
    missing = Ran(fleet.run(2, "token"))
    assert missing.returncode == 3 and one_line(missing.stderr), missing.stderr
    # The machine that last pulled the live login puts it back; the fleet goes on.
    pushed = Ran(fleet.run(1, "push"))
    assert pushed.returncode == 0, pushed.stderr
    later = Ran(fleet.run(2, "token"))
    assert later.returncode == 0, later.stderr
    assert fp(later.stdout.strip()) == issued(token_server)
    assert token_server.post_count == 1


def test_status_of_an_evicted_store_says_why_it_is_empty(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    # When the warning matters most: every machine says "Not logged in".
    server = start_redis(config=["maxmemory-policy allkeys-lru"])
    fleet = Fleet(tmp_path, token_server, server.url())
    pushed_expired(fleet)
    evict_the_login(client(redis_py, server.url()))

    status = Ran(fleet.run(2, "status"))

    assert status.returncode == 3, status.stderr
    assert "Not logged in" in status.stdout
    assert "maxmemory-policy is allkeys-lru" in status.stdout, status.stdout
    as_json = Ran(fleet.run(2, "status", "--json"))
    assert as_json.returncode == 3
    assert any("allkeys-lru" in w for w in json.loads(as_json.stdout).get("warnings", []))


# 13.6 pull after a lockless local refresh


def codex_refreshes(fleet: Fleet, machine: int) -> str:
    """The Codex CLI on `machine` refreshes its auth.json, taking no lock of ours; the new
    access token."""
    auth_json = str(fleet.home(machine) / "auth.json")
    with Racers(fleet.env(machine)) as racers:
        racers.spawn(
            script=child("codex_like_peer")[0],
            args=[auth_json, fleet.server.url, "0", "flock-rename"],
        )
        racers.release()
        (peer,) = racers.finish(timeout=CHILD_TIMEOUT)
    verdict, _, token = peer.stdout.strip().partition(" ")
    assert verdict == "won", peer.stderr
    return token


def test_pull_never_puts_back_a_token_the_local_codex_spent(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    write_auth_json(fleet.home(0))  # rt-0, an hour left
    assert fleet.run(0, "push").returncode == 0
    for machine in (1, 3):
        assert fleet.run(machine, "pull").returncode == 0
    peer_token = codex_refreshes(fleet, 1)
    local_rt = stored(fleet.home(1))["refresh_token"]
    assert fp(local_rt) != fp("rt-0")

    again = Ran(fleet.run(1, "pull"))

    assert again.returncode == 0, again.stderr
    assert "pushed it instead" in again.stdout, again.stdout
    assert fp(stored(fleet.home(1))["refresh_token"]) == fp(local_rt)  # not rt-0 again
    assert fp(stored_tokens(store)["refresh_token"]) == fp(local_rt)
    used = Ran(fleet.run(2, "token"))
    assert used.returncode == 0, used.stderr
    assert fp(used.stdout.strip()) == fp(peer_token)
    assert token_server.post_count == 1
    # A plain pull from then on.
    plain = Ran(fleet.run(1, "pull"))
    assert plain.returncode == 0 and "Pulled" in plain.stdout, plain.stderr

    # Something else in auth.json (another account): refused in one line, nothing changed.
    write_auth_json(
        fleet.home(3),
        refresh="rt-other",
        account_id="acct-other",
        id_tok=id_token("o@example.com", account_id="acct-other"),
    )
    token_server.issue("rt-other")
    mine, before = (fleet.home(3) / "auth.json").read_bytes(), fields(store)
    refused = Ran(fleet.run(3, "pull"))
    assert refused.returncode == 1 and one_line(refused.stderr), refused.stderr
    assert "refusing to pull" in refused.stderr and "--force" in refused.stderr
    assert (fleet.home(3) / "auth.json").read_bytes() == mine
    assert fields(store) == before
    forced = Ran(fleet.run(3, "pull", "--force"))
    assert forced.returncode == 0, forced.stderr
    assert fp(stored(fleet.home(3))["refresh_token"]) == fp(local_rt)
    assert token_server.post_count == 1


# 13.7 URLs redis-py cannot read, and an ACL without a command a script runs


def fragments(secret: str, size: int = 4) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


@pytest.mark.parametrize(
    "url",
    [
        "redis://:{pw}@127.0.0.1:{port}/0",  # '/' in the password, not percent-encoded
        "redis://user:{pw}@127.0.0.1:{port}/0",
        "redis://:{pw}@127.0.0.1:notaport/0",
        "redis://:{pw}@127.0.0.1:99999/0",
        "redis://:{pw}@127.0.0.1:{port}/0?socket_timeout=abc",
        "redis://:{pw}@[::1/0",
        "redis://:{pw}@[zz::1]:{port}/0",
        "redis://:{pw}@127.0.0.1:{port}/notadb",
    ],
    ids=[
        "slash",
        "user-slash",
        "port-word",
        "port-range",
        "socket-timeout",
        "ipv6-open",
        "ipv6-bad",
        "db-word",
    ],
)
@pytest.mark.parametrize("command", [["token"], ["--verbose", "status"], ["push"], ["pull"]])
def test_a_url_redis_py_cannot_read_is_one_line_without_the_password(
    url: str,
    command: list[str],
    codex_home: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_auth_json(codex_home)
    password = "Zm9vYmFy/" + secrets.token_urlsafe(12).replace("-", "x") + "/" + "q#z"
    password = password.replace("#", "")  # '#' ends a URL: a case of its own below
    monkeypatch.setenv(codexauth.STORE_ENV_VAR, url.format(pw=password, port=redis_server.port))

    code = codexauth.main(command)

    out, err = capsys.readouterr()
    leaked = [f for f in fragments(password) if f in out + err]
    assert not leaked, f"{len(leaked)} fragments of the password shown"
    assert code in (1, 5) and out == "", (code, out)
    assert one_line(err), err
    assert "Traceback" not in err
    assert "login store" in err or "redis://" in err, err


def test_a_password_with_hash_question_mark_and_at_is_never_shown(
    codex_home: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_auth_json(codex_home)
    for password in (
        "ab#" + secrets.token_hex(8),
        "ab?" + secrets.token_hex(8),
        "a@b" + secrets.token_hex(8),
        "a:b" + secrets.token_hex(8),
    ):
        url = f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
        monkeypatch.setenv(codexauth.STORE_ENV_VAR, url)
        for command in (["token"], ["status", "--json"], ["push"]):
            code = codexauth.main(command)
            out, err = capsys.readouterr()
            leaked = [f for f in fragments(password) if f in out + err]
            assert not leaked, f"{len(leaked)} fragments of the password shown ({command})"
            assert "Traceback" not in err, code  # @ and : are legal: it may connect


def test_an_acl_without_hdel_gives_the_acl_hint_and_never_says_the_login_changed(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
) -> None:
    admin, narrow_pw = ("pw-" + secrets.token_hex(12) for _ in range(2))
    server = start_redis(
        password=admin,
        users=[
            f"narrow on >{narrow_pw} resetkeys resetchannels ~codexauth:* &codexauth:* "
            + README_ACL.replace(" +hdel", "")
        ],
    )
    fleet = Fleet(tmp_path, token_server, server.url())
    pushed_expired(fleet)
    r = client(redis_py, server.url())
    before = fields(r)
    narrow = {codexauth.STORE_ENV_VAR: server.url("narrow", narrow_pw)}
    hidden = [admin, narrow_pw]

    # push: refused before anything is written.
    write_auth_json(fleet.home(1), refresh="rt-pushed")
    pushed = Ran(fleet.run(1, "push", "--force", extra=narrow))
    assert (pushed.returncode, pushed.stdout) == (1, ""), scrubbed(pushed.stderr, hidden)
    assert one_line(pushed.stderr) and "ACL" in pushed.stderr, scrubbed(pushed.stderr, hidden)
    assert fields(r) == before

    # A refresh: its commit is refused; it says so with the hint, never "the login changed".
    refreshed = Ran(fleet.run(2, "token", extra=narrow))
    err = scrubbed(refreshed.stderr, hidden)
    assert "ACL" in err and "changed" not in err, err
    assert refreshed.returncode == 0, err
    assert fp(refreshed.stdout.strip()) == issued(token_server)
    assert not any(pw in refreshed.stdout + refreshed.stderr for pw in hidden)
    # Once the ACL is put right, the next run on that machine stores what its outbox held.
    r.acl_setuser("narrow", enabled=True, commands=["+hdel"])
    later = Ran(fleet.run(2, "token", extra=narrow))
    assert later.returncode == 0, scrubbed(later.stderr, hidden)
    assert fp(stored_tokens(r)["refresh_token"]) == issued(token_server, "refresh_token")
    assert token_server.post_count == 1


# 13.9 Wake-ups: waiters finish once the commit lands (the latency is benchmarks/fleet.py's)


@pytest.mark.parametrize("pubsub", [True, False], ids=["pubsub", "acl-without-pubsub"])
def test_waiters_finish_once_the_commit_lands(
    tmp_path: Path,
    token_server: TokenServer,
    start_redis: Callable[..., RedisServer],
    redis_py: ModuleType,
    pubsub: bool,
) -> None:
    user_pw = "pw-" + secrets.token_hex(12)
    rules = README_ACL if pubsub else ACL_COMMANDS
    server = start_redis(
        users=[
            f"codexauth on >{user_pw} resetkeys resetchannels ~codexauth:* &codexauth:* " + rules
        ]
    )
    fleet = Fleet(tmp_path, token_server, server.url("codexauth", user_pw))
    pushed_expired(fleet)
    token_server.delay = 0.5
    holder = fleet.start(0, "token")
    try:
        wait_until(lambda: token_server.post_count == 1, "the request arrived")
        holder.send_signal(signal.SIGSTOP)
        with fleet.herd({machine: [["token"]] * 2 for machine in range(1, 4)}) as groups:
            release(groups)
            if pubsub:  # every waiter listens (and the holder did, taking the lock)
                wait_until(lambda: subscribers(server) == 7, "every waiter subscribed")
            else:
                time.sleep(1.0)
            assert all(p.poll() is None for g in groups for p in g.procs), "a waiter left"
            server.command("CONFIG", "RESETSTAT")
            holder.send_signal(signal.SIGCONT)
            results = finish(groups)
    finally:
        holder.send_signal(signal.SIGCONT)
    code, _, err = reap(holder)

    assert code == 0, err[-300:]
    assert failures(results, 0, [user_pw]) == []
    assert {fp(r.stdout.strip()) for r in results} == {issued(token_server)}
    assert token_server.post_count == 1
    if pubsub:
        assert data_calls(server).get("publish", 0) >= 1, "the commit woke nobody"


# 13.10 A holder killed between its announcement and its request


def connect_to(strace: str, fleet: Fleet, port: int, *args: str) -> int:
    """Which connect() of the main thread of ``redis_peer ARGS`` on machine 0 of `fleet`
    reaches `port` (1-based), from a run traced to the end."""
    log = fleet.root / "connect.log"
    argv = [
        strace,
        "-f",
        "-qq",
        "-o",
        str(log),
        "-e",
        "trace=connect",
        sys.executable,
        *child(PEER, *args),
    ]
    done = subprocess.run(argv, env=fleet.env(0), capture_output=True, timeout=CHILD_TIMEOUT)
    assert done.returncode == 0, done.stderr[-300:]
    calls = [line for line in log.read_text().splitlines() if " connect(" in line]
    main_pid = calls[0].split()[0]
    mine = [line for line in calls if line.split()[0] == main_pid]
    (index,) = [i for i, line in enumerate(mine, 1) if f"htons({port})" in line][:1]
    return index


def test_holder_killed_at_its_connect_to_the_token_server_peers_wait_out_its_flight(
    tmp_path: Path, token_server: TokenServer, store: Any, redis_url: str, strace: str
) -> None:
    short = ["--set", "REDIS_LOCK_MARGIN=1", "--set", "REDIS_FLIGHT_GRACE=1", "--timeout", "2"]
    # Where the request's connect() falls, measured on a namespace of its own.
    rehearsal = Fleet(tmp_path / "rehearsal", token_server, redis_url, namespace="rehearsal")
    token_server.issue("rt-rehearsal")
    expired_login(rehearsal.home(0), "rt-rehearsal")
    assert rehearsal.run(0, "push").returncode == 0
    nth = connect_to(strace, rehearsal, token_server.port, *short, "token")
    posted = token_server.post_count

    fleet = Fleet(tmp_path / "fleet", token_server, redis_url)
    pushed_expired(fleet)
    argv = [
        strace,
        "-f",
        "-qq",
        "-o",
        os.devnull,
        "-e",
        "trace=connect",
        "-e",
        f"inject=connect:signal=KILL:when={nth}",
        sys.executable,
        *child(PEER, *short, "token"),
    ]
    killed = subprocess.run(argv, env=fleet.env(0), capture_output=True, timeout=CHILD_TIMEOUT)
    code = killed.returncode  # (its output holds a token: never in a message)
    assert code in (-signal.SIGKILL, 128 + signal.SIGKILL), code
    assert token_server.post_count == posted, "the killed holder's request left"
    flight_end = state_of(store)["sent_until"]
    assert flight_end > time.time(), "the killed holder announced no flight"

    results = fleet.race({machine: [["token"]] * 2 for machine in range(1, 4)})
    ended = time.time()

    assert failures(results) == []
    assert token_server.post_count == posted + 1
    assert posts_with(token_server, "rt-0") == 1
    assert {fp(r.stdout.strip()) for r in results} == {issued(token_server)}
    # Waited at most the announced end (a margin for the POST and start-up), never ~34 s.
    assert ended < flight_end + 5.0, f"finished {ended - flight_end:.1f} s after the flight"


# 14. What each of issue 17's mutants breaks (item 11) ###########################


def test_logout_removes_the_login_not_the_lock_and_an_outbox_never_undoes_it(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    pushed_expired(fleet)
    held = fleet.run(3, "--set", "REDIS_LOCK_IDLE_TTL=1", "--hold-and-die")
    assert held.returncode == -signal.SIGKILL
    wait_until(lambda: not store.exists(LOCK_KEY % "default"), "the dead holder's lock lapsed")

    out = fleet.run(1, "logout")

    assert out.returncode == 0, out.stderr
    assert b"doc" not in fields(store) and b"logged_out" in fields(store)
    missing = Ran(fleet.run(2, "token"))
    assert missing.returncode == 3 and one_line(missing.stderr), missing.stderr
    assert token_server.post_count == 0


def test_the_lock_outlasts_a_request_longer_than_its_idle_ttl(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    pushed_expired(fleet)
    token_server.delay = 2.5
    holder = fleet.start(0, "--set", "REDIS_LOCK_IDLE_TTL=1", "--timeout", "5", "token")
    wait_until(lambda: token_server.post_count == 1, "the request arrived")
    time.sleep(1.5)  # past the idle TTL, inside the request
    ttl = store.pttl(LOCK_KEY % "default")
    code, _, err = reap(holder)

    assert ttl > 1000, f"the lock was not extended over the request (pttl {ttl})"
    assert code == 0, err[-300:]


def test_a_peer_that_finished_while_we_queued_for_the_fleet_lock_frees_the_local_lock(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    pushed_expired(fleet)
    import threading

    # Machine 0 holds the fleet lock (announcing nothing), commits a refresh 0.5 s later and
    # holds the lock 1.5 s more (in one thread: redis-py keeps the lock's owner token per thread).
    write_auth_json(fleet.home(0), refresh="rt-9")
    token_server.issue("rt-9")
    newer = codexauth.load_auth_dot_json(fleet.home(0))
    assert newer is not None and newer.tokens is not None
    taken = threading.Event()
    committed: list[bool] = []

    def hold_then_commit() -> None:
        holder = codexauth.RedisStore(fleet.url, fleet.home(0))
        lock = holder.lock(5.0, lambda: False)
        assert lock is not None
        taken.set()
        try:
            time.sleep(0.5)
            committed.append(holder.commit(codexauth._fingerprint("rt-0"), "acct-123", newer)[0])
            time.sleep(1.5)  # still held: the waiter sees the commit, not a free lock
        finally:
            lock.release()

    timer = threading.Thread(target=hold_then_commit)
    timer.start()
    assert taken.wait(10)
    try:
        # Machine 1 queues for the fleet lock, then adopts what the holder committed.
        auth = codexauth.CodexAuth(fleet.home(1), store=fleet.url, lock_timeout=10)
        assert fp(auth.get_token()) == fp(newer.tokens.access_token)
    finally:
        timer.join(10)
    assert committed == [True]
    # Machine 1's own lock is free again, for this process and every other one.
    again = codexauth.RedisStore(fleet.url, fleet.home(1)).lock(2.0, lambda: False)
    assert again is not None
    again.release()
    assert token_server.post_count == 0


def test_a_store_reads_what_it_just_wrote(fleet: Fleet, store: Any) -> None:
    write_auth_json(fleet.home(0))
    redis_store = codexauth.RedisStore(fleet.url, fleet.home(0))
    first = codexauth.load_auth_dot_json(fleet.home(0))
    assert first is not None
    redis_store.save(first)
    assert redis_store.read() is not None  # cached from here on
    write_auth_json(fleet.home(0), refresh="rt-1")
    second = codexauth.load_auth_dot_json(fleet.home(0))
    assert second is not None and first.tokens is not None

    assert redis_store.commit(codexauth._fingerprint("rt-0"), "acct-123", second)[0]
    held = redis_store.read()
    assert held is not None and held.auth.tokens is not None
    assert fp(held.auth.tokens.refresh_token) == fp("rt-1")
    redis_store.save(first)
    held = redis_store.read()
    assert held is not None and held.auth.tokens is not None
    assert fp(held.auth.tokens.refresh_token) == fp("rt-0")


def test_a_clock_hours_ahead_does_not_refresh_the_fleet_login_on_every_call(
    fleet: Fleet, token_server: TokenServer
) -> None:
    pushed_expired(fleet)
    ahead = lambda: time.time() + 2 * 3600  # noqa: E731  # this machine's clock, 2 h fast

    for _ in range(4):  # new processes, as far as caches go
        codexauth.CodexAuth(fleet.home(1), store=fleet.url, now=ahead).get_token()

    assert token_server.post_count == 1


def test_push_then_a_local_refresh_then_push_or_pull_adopts_it(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    write_auth_json(fleet.home(0))  # rt-0, an hour left
    assert fleet.run(0, "push").returncode == 0  # its mark: rt-0
    codex_refreshes(fleet, 0)

    pushed = Ran(fleet.run(0, "push"))

    assert pushed.returncode == 0, pushed.stderr
    assert fp(stored_tokens(store)["refresh_token"]) == fp(stored(fleet.home(0))["refresh_token"])
    codex_refreshes(fleet, 0)
    pulled = Ran(fleet.run(0, "pull"))
    assert pulled.returncode == 0 and "pushed it instead" in pulled.stdout, pulled.stderr
    assert fp(stored_tokens(store)["refresh_token"]) == fp(stored(fleet.home(0))["refresh_token"])
    assert fp(stored_tokens(store)["refresh_token"]) in valid(token_server)


def test_push_and_pull_never_replace_the_fleet_login_with_another_accounts(
    fleet: Fleet, token_server: TokenServer, store: Any
) -> None:
    write_auth_json(fleet.home(0))
    assert fleet.run(0, "push").returncode == 0
    assert fleet.run(1, "pull").returncode == 0  # machine 1's mark: rt-0, still stored
    # Someone signs machine 1 in to another account.
    other = id_token("o@example.com", account_id="acct-other")
    write_auth_json(fleet.home(1), refresh="rt-other", account_id="acct-other", id_tok=other)
    before = fields(store)

    for command in ("push", "pull"):
        refused = Ran(fleet.run(1, command))
        assert refused.returncode == 1 and one_line(refused.stderr), (command, refused.stderr)
        assert fields(store) == before, command
    assert fp(stored(fleet.home(1))["refresh_token"]) == fp("rt-other")


def test_marks_for_two_stores_on_one_machine_are_both_kept(
    tmp_path: Path, token_server: TokenServer, redis_url: str, store: Any
) -> None:
    # One auth.json pushed to two namespaces (a primary and a spare, say).
    a = Fleet(tmp_path, token_server, redis_url, namespace="a")
    b = Fleet(tmp_path, token_server, redis_url, namespace="b")
    write_auth_json(a.home(0))
    assert a.run(0, "push").returncode == 0
    assert b.run(0, "push").returncode == 0
    codex_refreshes(a, 0)

    for team, namespace in ((a, "a"), (b, "b")):
        pushed = Ran(team.run(0, "push"))
        assert pushed.returncode == 0, (namespace, pushed.stderr)
        tokens = stored_tokens(store, namespace)
        assert fp(tokens["refresh_token"]) == fp(stored(a.home(0))["refresh_token"]), namespace
