"""Faults injected for real: kill -9 mid-refresh, a hung endpoint, a read-only CODEX_HOME,
a symlinked auth.json and a peer that refreshes without our lock (as the Codex CLI does).

Children are real ``codexauth`` processes (support.Racers starts them together); the token
endpoint is the loopback TokenServer in this process. Tokens are compared through fp() only.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import children.codex_like_peer as codex_peer
import pytest
from support import (
    CHILDREN,
    Racers,
    RawServer,
    TokenServer,
    access_token,
    child,
    file_digest,
    fp,
    py_env,
    run_py,
    stored,
    write_auth_json,
)

import codexauth
from codexauth import AuthFileError, CodexAuth, TransientRefreshError

CHILD_TIMEOUT = 30.0
SIDECARS = {"auth.json", "auth.lock", "codexauth-state.json"}


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.005)


def one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and stderr.startswith("codexauth: "), stderr
    return stderr


def follow_up_token(codex_home: Path, server: TokenServer, refresh: str) -> None:
    """A new login with an expired access token: the next process must take the lock and
    refresh at once. `--lock-timeout` turns a stale lock into exit 5 instead of a hang."""
    server.issue(refresh)
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=refresh)
    posts = server.post_count
    result = run_py(
        ["-m", "codexauth", "--lock-timeout", "5", "token"],
        codex_home=codex_home,
        token_url=server.url,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert server.post_count == posts + 1
    assert fp(result.stdout.strip()) == fp(stored(codex_home)["access_token"])


# kill -9 #####################################################################

KILL_ROUNDS = 15
KILL_BUDGET = 20.0  # seconds; rounds stop early on a slow machine


@pytest.mark.slow
def test_kill9_mid_refresh_never_breaks_the_file_or_the_lock(
    codex_home: Path, token_server: TokenServer
) -> None:
    rng = random.Random(20240917)  # fixed: the same kill schedule on every run
    seen: Counter[str] = Counter()
    auth_file = codex_home / "auth.json"
    deadline = time.monotonic() + KILL_BUDGET
    for round_number in range(KILL_ROUNDS):
        if time.monotonic() > deadline:
            break
        seen["rounds"] += 1
        # The old tokens say which login they belong to: access `seq` r<k> <-> refresh rt-r<k>,
        # as the server's own tokens pair access `seq` n with refresh rt-<n>.
        old_refresh = f"rt-r{round_number}"
        token_server.issue(old_refresh)
        old = access_token(time.time() - 60, seq=f"r{round_number}")
        write_auth_json(codex_home, access=old, refresh=old_refresh)
        token_server.delay = rng.uniform(0.05, 0.3)
        posts = token_server.post_count

        with Racers(py_env(codex_home, token_server.url)) as racers:
            procs = [racers.spawn(["token"]) for _ in range(3)]
            racers.release()
            time.sleep(rng.uniform(0.0, token_server.delay + 0.2))
            victims = procs if rng.random() < 0.4 else [rng.choice(procs)]
            for proc in victims:
                proc.kill()  # SIGKILL; a no-op for one that already exited
            results = racers.finish(timeout=CHILD_TIMEOUT)

        # auth.json is complete and self-consistent: the old pair or a pair the server issued.
        tokens = stored(codex_home)
        access, refresh = tokens["access_token"], tokens["refresh_token"]
        paired = refresh == f"rt-{claims(access)['seq']}"
        assert paired, f"round {round_number}: access and refresh tokens of different logins"
        assert stat.S_IMODE(os.stat(auth_file).st_mode) == 0o600
        if refresh == old_refresh:
            seen["old tokens kept"] += 1
            if old_refresh in token_server.used:
                if (codex_home / "codexauth-outbox.json").exists():
                    seen["new tokens in the outbox"] += 1  # the next reader stores them
                else:
                    # The named window: the server rotated, the writer died before its
                    # outbox was written.
                    seen["login lost"] += 1
        else:
            seen["new tokens stored"] += 1
            usable = refresh in token_server.valid
            assert usable, f"round {round_number}: stored a refresh token the server spent"
        seen["posts"] += token_server.post_count - posts

        for result in results:
            if result.returncode == -9:
                seen["killed"] += 1
            elif result.returncode == 0:
                assert fp(result.stdout.strip()) == fp(access), f"round {round_number}"
            else:  # a survivor that presented the token the dead process had spent
                assert result.returncode == 4, f"round {round_number}: {result.stderr}"
                outbox = (codex_home / "codexauth-outbox.json").exists()
                lost = refresh == old_refresh and old_refresh in token_server.used and not outbox
                assert lost, f"round {round_number}: exit 4 but the login was not lost"

        # Nothing but our files; a writer killed between creating its temp file and renaming
        # it leaves that one temp file (0600, never world-readable). Only the lock holder
        # writes, so one per round at most. Nobody cleans it up later; remove it here.
        names = {p.name for p in codex_home.iterdir()}
        temps = {
            n
            for n in names
            if n.startswith((".auth.json.", ".codexauth-state.json.", ".codexauth-outbox.json."))
        }
        # An outbox stays only if the kill came between it and auth.json's write.
        assert names - temps <= SIDECARS | {"codexauth-outbox.json"}
        assert len(temps) <= 1, f"round {round_number}: {sorted(temps)}"
        for name in temps:
            assert name.endswith(".tmp")
            assert stat.S_IMODE(os.stat(codex_home / name).st_mode) == 0o600
            (codex_home / name).unlink()
            seen["temp file left"] += 1

        # No stale lock: the next process takes it at once and refreshes.
        follow_up_token(codex_home, token_server, f"rt-f{round_number}")

    print(f"kill -9 rounds: {dict(seen)}")  # shown with -s; holds no token
    assert seen["rounds"] >= 5, f"only {seen['rounds']} rounds in {KILL_BUDGET} s"
    # A kill aimed after a process finished hits nothing; most must land.
    assert seen["killed"] >= seen["rounds"] // 2


# Hung endpoint ###############################################################


@pytest.mark.slow
def test_hung_endpoint_bounded_by_timeouts_and_lock_freed(
    codex_home: Path, token_server: TokenServer
) -> None:
    before = file_digest(
        write_auth_json(codex_home, access=access_token(time.time() - 60), refresh="rt-0")
    )
    token_server.hang = True
    env = py_env(codex_home, token_server.url)

    with Racers(env) as first, Racers(env) as waiters:
        first.spawn(["--timeout", "2", "token"])
        for _ in range(2):
            waiters.spawn(["--lock-timeout", "0.5", "token"])
        waiters.wait_ready()
        first.release()
        wait_until(lambda: token_server.post_count == 1)  # lock held, request hanging
        waiters.release()
        gave_up = waiters.finish(timeout=CHILD_TIMEOUT)
        (refreshed,) = first.finish(timeout=CHILD_TIMEOUT)

    assert refreshed.returncode == 5
    assert one_line(refreshed.stderr).startswith("codexauth: Failed to refresh token: ")
    for result in gave_up:
        assert result.returncode == 5
        assert "gave up after 0.5 s waiting for another process" in one_line(result.stderr)
    assert token_server.post_count == 1
    assert file_digest(codex_home / "auth.json") == before

    token_server.hang = False
    follow_up_token(codex_home, token_server, "rt-next")


# Read-only CODEX_HOME ########################################################

NOBODY = 65534


@functools.cache
def bound_by_modes() -> tuple[str, int] | None:
    """How to start a child that obeys mode bits, and the uid its files belong to."""
    if os.geteuid() != 0:
        return "self", os.geteuid()
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o755)
        probe = Path(scratch) / "ro"
        probe.mkdir(mode=0o555)
        check = "import os, sys, codexauth; sys.exit(os.access(sys.argv[1], os.W_OK))"
        for how, uid in (("nobody", NOBODY), ("no-dac-caps", 0)):
            argv, kwargs = _child_argv(how, ["-c", check, str(probe)])
            try:
                done = subprocess.run(argv, env=py_env(scratch), capture_output=True, **kwargs)
            except (OSError, subprocess.SubprocessError):
                continue
            if done.returncode == 0:
                return how, uid
    return None


def _child_argv(how: str, args: list[str]) -> tuple[list[str], dict[str, Any]]:
    kwargs: dict[str, Any] = {"timeout": CHILD_TIMEOUT, "cwd": "/"}
    if how == "nobody":
        kwargs.update(user=NOBODY, group=NOBODY, extra_groups=[])
    if how == "no-dac-caps":
        # Root, but with the capabilities that ignore mode bits dropped before Python starts.
        return [sys.executable, *child("drop_dac_caps", *args)], kwargs
    return [sys.executable, *args], kwargs


class ReadOnlyHome:
    """A CODEX_HOME the child may not write (0555; root's when we are root) and a HOME it may."""

    def __init__(self, base: Path, how: str, uid: int) -> None:
        self.how, self.uid = how, uid
        self.codex_home = base / "codex"
        self.codex_home.mkdir()
        self.user_home = base / "user"
        self.user_home.mkdir(mode=0o700)
        os.chown(self.user_home, uid, -1)

    def write_auth(self, mode: int, **kwargs: Any) -> Path:
        """auth.json with `mode`, owned by the child's user; then the home goes read-only."""
        self.codex_home.chmod(0o755)
        path = write_auth_json(self.codex_home, **kwargs)
        os.chown(path, self.uid, -1)
        path.chmod(mode)
        self.codex_home.chmod(0o555)
        return path

    @property
    def lock_dir(self) -> Path:
        """Where the lock must go: the per-user state dir, keyed by the real auth.json path."""
        real = os.path.realpath(self.codex_home / "auth.json")
        key = hashlib.sha256(real.encode()).hexdigest()[:16]
        return self.user_home / ".local" / "state" / "codexauth" / key

    def run(
        self, server: TokenServer, *cli: str, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        env = py_env(self.codex_home, server.url, env={"HOME": str(self.user_home)})
        for var in [v for v in env if v.startswith("XDG_")]:
            del env[var]  # platformdirs' default: ~/.local/state
        argv, kwargs = _child_argv(self.how, ["-m", "codexauth", *cli])
        return subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, **kwargs)


@pytest.fixture
def read_only_home() -> Iterator[ReadOnlyHome]:
    way = bound_by_modes()
    if way is None:
        pytest.skip("cannot run a child that obeys mode bits (root without CAP_SETPCAP?)")
    # Not under tmp_path: its 0700 parents would lock "nobody" out.
    base = Path(tempfile.mkdtemp(prefix="codexauth-ro-"))
    base.chmod(0o755)
    try:
        home = ReadOnlyHome(base, *way)
        if way[0] == "self":
            home.codex_home.chmod(0o555)
            if os.access(home.codex_home, os.W_OK):
                pytest.skip("mode bits do not make a directory read-only here")
            home.codex_home.chmod(0o755)
        yield home
    finally:
        for path in (base, *base.rglob("*")):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_read_only_home_fresh_token_works_without_a_lock(
    read_only_home: ReadOnlyHome, token_server: TokenServer
) -> None:
    path = read_only_home.write_auth(0o400, refresh="rt-0")
    before = file_digest(path)

    result = read_only_home.run(token_server, "token")

    assert result.returncode == 0, result.stderr
    assert fp(result.stdout.strip()) == fp(stored(read_only_home.codex_home)["access_token"])
    assert token_server.post_count == 0
    assert file_digest(path) == before
    assert [p.name for p in read_only_home.codex_home.iterdir()] == ["auth.json"]
    assert not read_only_home.lock_dir.exists()  # a warm read takes no lock


def test_read_only_home_and_file_stale_token_not_spent(
    read_only_home: ReadOnlyHome, token_server: TokenServer
) -> None:
    path = read_only_home.write_auth(0o400, access=access_token(time.time() - 60))
    before = file_digest(path)

    result = read_only_home.run(token_server, "token")

    assert result.returncode == 1
    assert "read-only" in one_line(result.stderr)
    assert token_server.post_count == 0  # the single-use refresh token was not burned
    assert file_digest(path) == before
    assert [p.name for p in read_only_home.codex_home.iterdir()] == ["auth.json"]
    # The lock is auth.json itself (flock needs no write access): no lock file elsewhere.
    assert not (read_only_home.lock_dir / "auth.lock").exists()


def test_read_only_home_writable_file_refreshes_in_place(
    read_only_home: ReadOnlyHome, token_server: TokenServer
) -> None:
    path = read_only_home.write_auth(0o600, access=access_token(time.time() - 60))
    inode = path.stat().st_ino

    result = read_only_home.run(token_server, "token")

    assert result.returncode == 0, result.stderr
    assert token_server.post_count == 1
    assert token_server.last_issued is not None
    assert fp(result.stdout.strip()) == fp(token_server.last_issued["access_token"])
    tokens = stored(read_only_home.codex_home)
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert (fp(access), fp(refresh)) == (
        fp(token_server.last_issued["access_token"]),
        fp(token_server.last_issued["refresh_token"]),
    )
    assert (path.stat().st_ino, path.stat().st_mode & 0o777) == (inode, 0o600)
    assert [p.name for p in read_only_home.codex_home.iterdir()] == ["auth.json"]
    # The lock is auth.json itself (flock needs no write access): no lock file elsewhere.
    assert not (read_only_home.lock_dir / "auth.lock").exists()


# Symlinked auth.json #########################################################


@pytest.mark.slow
def test_symlinked_auth_json_many_processes(codex_home: Path, token_server: TokenServer) -> None:
    dotfiles = codex_home.parent / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "codex-auth.json"
    (write_auth_json(dotfiles, access=access_token(time.time() - 60))).rename(target)
    link = codex_home / "auth.json"
    link.symlink_to(target)
    token_server.delay = 0.1

    with Racers(py_env(codex_home, token_server.url)) as racers:
        for _ in range(8):
            racers.spawn(["token"])
        racers.release()
        results = racers.finish(timeout=CHILD_TIMEOUT)

    assert [r.returncode for r in results] == [0] * 8
    assert token_server.post_count == 1
    assert token_server.last_issued is not None
    new_access = fp(token_server.last_issued["access_token"])
    assert {fp(r.stdout.strip()) for r in results} == {new_access}
    assert link.is_symlink() and os.readlink(link) == str(target)
    target_doc = json.loads(target.read_bytes())
    assert fp(target_doc["tokens"]["access_token"]) == new_access
    assert fp(target_doc["tokens"]["refresh_token"]) == fp(
        token_server.last_issued["refresh_token"]
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in dotfiles.iterdir()) == ["codex-auth.json"]  # no temp files
    assert {p.name for p in codex_home.iterdir()} <= SIDECARS


# A peer without the lock #####################################################

# What the Codex CLI does (children/codex_like_peer.py): it read auth.json when it started,
# refreshes with that refresh token without any lock, and writes the file its way: in place
# (truncate, then write) before 0.171, by rename under a blocking flock on auth.lock since.


@pytest.mark.slow
@pytest.mark.parametrize(
    ("peer_first", "write_lag", "winner", "style"),
    [
        (True, 0.3, "peer", "truncate"),
        (True, 0.0, "peer", "truncate"),
        (False, 0.0, "codexauth", "truncate"),
        (True, 0.3, "peer", "flock-rename"),
        (True, 0.0, "peer", "flock-rename"),
        (False, 0.0, "codexauth", "flock-rename"),
    ],
    ids=[
        "peer-rotates-first-writes-after-our-reused-answer",
        "peer-rotates-first-writes-before-our-reused-answer",
        "codexauth-rotates-first-peer-gets-reused",
        "0.171-peer-rotates-first-writes-after-our-reused-answer",
        "0.171-peer-rotates-first-writes-before-our-reused-answer",
        "0.171-codexauth-rotates-first-peer-gets-reused",
    ],
)
def test_lockless_peer_racing_codexauth(
    codex_home: Path,
    token_server: TokenServer,
    peer_first: bool,
    write_lag: float,
    winner: str,
    style: str,
) -> None:
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh="rt-0")
    # Both requests arrive within the endpoint's delay; it rotates for whichever came first.
    token_server.delay = 0.5
    env = py_env(codex_home, token_server.url)
    with Racers(env) as peer_group, Racers(env) as ours:
        peer_group.spawn(
            script=CHILDREN / "codex_like_peer.py",
            args=[str(codex_home / "auth.json"), token_server.url, str(write_lag), style],
        )
        for _ in range(8):
            ours.spawn(["token"])
        first, second = (peer_group, ours) if peer_first else (ours, peer_group)
        second.wait_ready()
        first.release()
        time.sleep(0.2)  # the head start that decides who reaches the endpoint first
        second.release()
        results = ours.finish(timeout=CHILD_TIMEOUT)
        (peer_result,) = peer_group.finish(timeout=CHILD_TIMEOUT)

    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    assert not any("already used" in r.stderr for r in results)
    peer_outcome, _, peer_token = peer_result.stdout.strip().partition(" ")
    assert peer_outcome == ("won" if winner == "peer" else "lost"), peer_result.stderr
    tokens = stored(codex_home)
    final_access, final_refresh = tokens["access_token"], tokens["refresh_token"]
    assert {fp(r.stdout.strip()) for r in results} == {fp(final_access)}
    if winner == "peer":
        assert fp(final_access) == fp(peer_token)
    survives = final_refresh in token_server.valid
    assert survives, "auth.json holds a refresh token the server spent"
    # The peer's POST plus at most one of ours; the loser was told refresh_token_reused.
    assert sorted(token_server.redacted_log()) == ["200", "401 refresh_token_reused"]


# One lock per real auth.json #################################################


@pytest.mark.slow
def test_two_homes_linking_one_auth_json_make_one_post(
    tmp_path: Path, token_server: TokenServer
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    target = write_auth_json(shared, access=access_token(time.time() - 60))
    homes = []
    for name in ("home-a", "home-b"):
        home = tmp_path / name / ".codex"
        home.mkdir(parents=True, mode=0o700)
        (home / "auth.json").symlink_to(target)
        homes.append(home)
    token_server.delay = 0.1

    with contextlib.ExitStack() as stack:
        groups = [stack.enter_context(Racers(py_env(h, token_server.url))) for h in homes]
        for group in groups:
            for _ in range(8):
                group.spawn(["token"])
        for group in groups:
            group.wait_ready()
        for group in groups:
            group.release()
        results = [r for group in groups for r in group.finish(timeout=CHILD_TIMEOUT)]

    assert [r.returncode for r in results] == [0] * 16, [r.stderr[-300:] for r in results]
    assert token_server.post_count == 1
    assert len({fp(r.stdout.strip()) for r in results}) == 1


def test_deleting_auth_lock_mid_refresh_does_not_allow_a_second_post(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home, access=access_token(time.time() - 60))
    token_server.delay = 1.0
    env = py_env(codex_home, token_server.url)
    with Racers(env) as first, Racers(env) as second:
        first.spawn(["token"])
        first.release()
        wait_until(lambda: token_server.post_count == 1)  # it holds the lock, mid-POST
        (codex_home / "auth.lock").unlink()  # someone "cleans up" the lock
        second.spawn(["token"])
        second.release()
        results = first.finish(timeout=CHILD_TIMEOUT) + second.finish(timeout=CHILD_TIMEOUT)

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert token_server.post_count == 1
    assert len({fp(r.stdout.strip()) for r in results}) == 1


@pytest.mark.skipif(os.name != "posix", reason="flock(2) is POSIX")
def test_a_lock_file_replaced_between_its_open_and_its_lock_is_locked_again(
    codex_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A peer deletes auth.lock and another makes a new one while we wait on the old one:
    # a lock on a file the path no longer names keeps nobody out, so it is taken again.
    import fcntl

    write_auth_json(codex_home)
    lock_path = codex_home / "auth.lock"
    real_try_lock = codexauth._try_lock
    swapped: list[str] = []

    def replaced_then_lock(fd: int, path: str) -> bool:
        if path == str(lock_path) and not swapped:
            swapped.append(path)
            fresh = codex_home / "auth.lock.fresh"
            fresh.write_bytes(b"")
            os.replace(fresh, lock_path)
        return real_try_lock(fd, path)

    monkeypatch.setattr(codexauth, "_try_lock", replaced_then_lock)
    lock = codexauth.FileStore(codex_home).lock(CHILD_TIMEOUT, lambda: False)
    assert lock is not None and swapped
    try:
        fd = os.open(lock_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # held: by us, on the file named auth.lock
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        lock.release()


@pytest.mark.skipif(os.name != "posix", reason="flock(2) is POSIX")
def test_a_wait_for_auth_json_keeps_auth_lock_free_for_the_codex_cli(codex_home: Path) -> None:
    # auth.json is locked by a process that did not take this auth.lock (codexauth through
    # another CODEX_HOME linking the same file): auth.lock, taken first, is let go while we
    # wait, and after we give up, so that the Codex CLI can still write.
    import fcntl

    write_auth_json(codex_home)
    holder = os.open(codex_home / "auth.json", os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(codexauth.LockTimeoutError):
            codexauth.FileStore(codex_home).lock(0.3, lambda: False)
        fd = os.open(codex_home / "auth.lock", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no BlockingIOError
        finally:
            os.close(fd)
    finally:
        os.close(holder)


@pytest.mark.skipif(os.name != "posix", reason="flock(2) is POSIX")
def test_a_filesystem_without_locks_is_an_error_not_a_wait(
    codex_home: Path, token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ENOLCK (an NFS mount without a lock daemon) is not "held by another": waiting out the
    # lock timeout would hide the cause.  One line naming the file, before any request.
    import fcntl

    write_auth_json(codex_home, access=access_token(time.time() - 60))

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    start = time.monotonic()
    with pytest.raises(AuthFileError, match="cannot lock"):
        CodexAuth(codex_home, lock_timeout=5.0).get_token()
    assert time.monotonic() - start < 2.5
    assert token_server.post_count == 0


# Waking lock waiters: the kernel tells them, no poll ###########################


@contextlib.contextmanager
def held_exclusively(*paths: Path) -> Iterator[list[int]]:
    """Hold flock(LOCK_EX) on `paths` through open files of our own, as another process
    would (flock belongs to the open file); let go on exit, or earlier by closing."""
    import fcntl

    fds = [os.open(path, os.O_RDONLY) for path in paths]
    try:
        for fd in fds:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield fds
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def lock_in_thread(
    store: codexauth.FileStore, looks: list[float]
) -> tuple[threading.Thread, list[Any]]:
    taken: list[Any] = []

    def done_elsewhere() -> bool:
        looks.append(time.monotonic())
        return False

    thread = threading.Thread(
        target=lambda: taken.append(store.lock(CHILD_TIMEOUT, done_elsewhere))
    )
    thread.start()
    return thread, taken


@pytest.mark.skipif(os.name != "posix", reason="flock(2) is POSIX")
@pytest.mark.parametrize("held", ["auth.lock and auth.json", "auth.lock only (the Codex CLI)"])
def test_a_lock_wait_is_woken_by_the_release_not_by_a_poll(
    codex_home: Path, monkeypatch: pytest.MonkeyPatch, held: str
) -> None:
    # Polls as far apart as 60 s: a wait that looks while the lock is held is polling.
    monkeypatch.setattr(codexauth, "LOCK_WAKE_POLL", 60.0)
    write_auth_json(codex_home)
    (codex_home / "auth.lock").touch()
    paths = [codex_home / "auth.lock"]
    if held.startswith("auth.lock and"):
        paths.append(codex_home / "auth.json")
    looks: list[float] = []
    with held_exclusively(*paths):
        thread, taken = lock_in_thread(codexauth.FileStore(codex_home), looks)
        wait_until(lambda: len(looks) >= 1)
        time.sleep(0.3)
        # Asleep in the kernel: one look, where polling from 1 ms up would have made 8.
        assert taken == [] and len(looks) == 1
        released = time.monotonic()
    thread.join(CHILD_TIMEOUT)
    assert taken and taken[0] is not None, "the lock was not taken"
    taken[0].release()
    assert time.monotonic() - released < CHILD_TIMEOUT / 2  # not the 60 s poll


@pytest.mark.skipif(os.name != "posix", reason="flock(2) is POSIX")
def test_waiting_threads_share_one_watch_and_leave_no_shared_lock_behind(
    codex_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import _thread

    monkeypatch.setattr(codexauth, "LOCK_WAKE_POLL", 60.0)
    write_auth_json(codex_home)
    (codex_home / "auth.lock").touch()
    threads_before = _thread._count()
    looks: list[float] = []
    with held_exclusively(codex_home / "auth.lock", codex_home / "auth.json"):
        waiters = [lock_in_thread(codexauth.FileStore(codex_home), looks) for _ in range(4)]
        wait_until(lambda: len(looks) >= 4 and len(codexauth._watchers) == 1)
        # The 4 waiters, and one thread watching auth.json for all of them.
        assert _thread._count() == threads_before + 4 + 1
    for _ in waiters:  # each in turn, each woken by the release before
        wait_until(lambda: any(taken and taken[0] for _, taken in waiters))
        holder = next(taken for _, taken in waiters if taken and taken[0])
        holder[0].release()
        holder[0] = None
    for thread, taken in waiters:
        thread.join(CHILD_TIMEOUT)
        assert taken == [None]  # taken, and let go
    wait_until(lambda: not codexauth._watchers and not codexauth._held_files)
    # No shared lock lingers that would keep the Codex CLI from writing.
    with held_exclusively(codex_home / "auth.lock", codex_home / "auth.json"):
        pass


FORK_DURING_A_WATCH = """
import os, sys, time, codexauth
home = os.environ["CODEX_HOME"]
codexauth.LOCK_POLL_MIN = codexauth.LOCK_WAKE_POLL = 0.05
store = codexauth.FileStore(home)
pid = [None]
def done_elsewhere():
    if codexauth._watchers and pid[0] is None:
        pid[0] = os.fork()
        if pid[0] == 0:  # the child: lives on, holding nothing, until told
            os.close(1)  # the test reads the parent's lines to their end
            sys.stdin.read()
            os._exit(0)
        print("forked", flush=True)
    return False
lock = store.lock(60, done_elsewhere)
lock.release()
print("taken", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_during_a_watch_keeps_no_shared_lock(codex_home: Path) -> None:
    write_auth_json(codex_home)
    (codex_home / "auth.lock").touch()
    with held_exclusively(codex_home / "auth.lock", codex_home / "auth.json") as fds:
        proc = subprocess.Popen(
            [sys.executable, "-c", FORK_DURING_A_WATCH],
            env=py_env(codex_home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "forked\n"
            for fd in fds:
                os.close(fd)  # let go: the parent's watch takes and drops its shared lock
            assert proc.stdout.readline() == "taken\n"
            # The child is alive and still has its copies of whatever was open then.
            with held_exclusively(codex_home / "auth.lock", codex_home / "auth.json"):
                pass
        finally:
            proc.communicate("", timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0


def test_lock_timeout_message_does_not_invite_deleting_the_lock(codex_home: Path) -> None:
    write_auth_json(codex_home, access=access_token(time.time() - 60))
    holder = subprocess.Popen(
        [sys.executable, *child("hold_lock")],
        env=py_env(codex_home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        result = run_py(
            ["-m", "codexauth", "--lock-timeout", "0.3", "token"], codex_home=codex_home
        )
    finally:
        holder.communicate("go\n", timeout=CHILD_TIMEOUT)
    assert result.returncode == 5
    message = one_line(result.stderr)
    assert "another process" in message
    assert not any(word in message.lower() for word in ("delete", "remove", "rm "))


# fork() ######################################################################


def test_a_forked_child_neither_keeps_nor_inherits_the_refresh_lock(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home)
    result = run_py(
        child("fork_child"), codex_home=codex_home, token_url=token_server.url, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    # Another process refreshes while the worker lives; so does the worker itself.
    assert report["other"] == [0, ""]
    assert report["worker"] is True
    assert token_server.post_count == 2


# Special files where ours should be ##########################################


@pytest.mark.parametrize("command", ["status", "token", "header"])
def test_a_fifo_at_auth_json_is_an_error_not_a_hang(codex_home: Path, command: str) -> None:
    os.mkfifo(codex_home / "auth.json", 0o600)
    result = run_py(["-m", "codexauth", command], codex_home=codex_home, timeout=CHILD_TIMEOUT)
    assert result.returncode == 1
    assert "not a regular file" in one_line(result.stderr)


def test_a_fifo_at_auth_lock_is_an_error_not_a_hang(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home, access=access_token(time.time() - 60))
    os.mkfifo(codex_home / "auth.lock", 0o600)
    result = run_py(
        ["-m", "codexauth", "token"], codex_home=codex_home, token_url=token_server.url
    )
    assert result.returncode == 1
    assert "auth.lock" in one_line(result.stderr)
    assert token_server.post_count == 0


# Root, and the user's files ##################################################


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_a_refresh_run_as_root_leaves_the_users_files_theirs(token_server: TokenServer) -> None:
    # Not under tmp_path: its 0700 parents would keep the user from their own login.
    base = Path(tempfile.mkdtemp(prefix="codexauth-root-"))
    base.chmod(0o755)
    codex_home = base / "user" / ".codex"
    codex_home.mkdir(parents=True, mode=0o700)

    def users_login(refresh: str) -> None:
        path = write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=refresh)
        for p in (codex_home.parent, codex_home, path):
            os.chown(p, NOBODY, NOBODY)

    def sudo_token() -> subprocess.CompletedProcess[str]:
        cli = ["-m", "codexauth", "token"]
        return run_py(cli, codex_home=codex_home, token_url=token_server.url)

    try:
        users_login("rt-0")
        token_server.fail_next(500, {"error": "temporary"})
        assert sudo_token().returncode == 5  # root creates auth.lock and the state file
        token_server.issue("rt-1")
        users_login("rt-1")
        refreshed = sudo_token()  # root rewrites auth.json
        assert refreshed.returncode == 0, refreshed.stderr

        owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in codex_home.iterdir()}
        assert set(owners) == SIDECARS
        assert set(owners.values()) == {(NOBODY, NOBODY)}, owners
        way = bound_by_modes()
        if way is not None and way[0] == "nobody":  # and the user can still use the login
            argv, kwargs = _child_argv("nobody", ["-m", "codexauth", "token"])
            env = py_env(codex_home, token_server.url)
            as_user = subprocess.run(argv, env=env, capture_output=True, text=True, **kwargs)
            assert as_user.returncode == 0, as_user.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_login_with_an_api_key_in_a_read_only_home_makes_the_file_owner_only(
    read_only_home: ReadOnlyHome, token_server: TokenServer
) -> None:
    path = read_only_home.write_auth(0o644)
    result = read_only_home.run(token_server, "login", "--api-key", stdin="sk-new-key\n")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes())["OPENAI_API_KEY"] == "sk-new-key"


# A stopped process, a dripping server #########################################


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP/SIGCONT")
def test_answer_that_arrived_while_stopped_is_used_after_the_deadline(
    codex_home: Path, token_server: TokenServer
) -> None:
    # The process is stopped (SIGSTOP, a debugger) while the answer arrives, and resumed
    # after its --timeout ran out: the answer is complete, the token is spent, so it must
    # be used. Discarding it would lose the login.
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh="rt-0")
    token_server.delay = 0.3  # the answer comes while the child is stopped
    child = subprocess.Popen(
        [sys.executable, "-m", "codexauth", "--timeout", "2", "token"],
        env=py_env(codex_home, token_server.url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: token_server.post_count == 1 or child.poll() is not None)
        assert child.poll() is None, "the child ended before it was stopped"
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGSTOP)
        wait_until(lambda: token_server.answered == 1)
        time.sleep(max(sent + 2 + 0.5 - time.monotonic(), 0))  # let the deadline pass
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait()

    issued = token_server.last_issued
    assert issued is not None
    assert child.returncode == 0, err.count("\n")  # a line count; stderr holds no token
    assert token_server.post_count == 1
    assert fp(out.strip()) == fp(issued["access_token"])
    assert fp(stored(codex_home)["refresh_token"]) == fp(issued["refresh_token"])


def _token_body() -> bytes:
    body = {"access_token": access_token(time.time() + 3600, seq="drip"), "refresh_token": "rt-d"}
    return json.dumps(body).encode()


class DripServer(RawServer):
    """A loopback token endpoint that answers 200 with `head` then `body`, trickling one of
    them a byte every `interval` seconds (each gap shorter than the client's per-read
    timeout). It stops when the client goes away, or at close()."""

    def __init__(self, head: bytes, body: bytes, *, drip: str, interval: float = 0.25) -> None:
        self.head, self.body, self.drip, self.interval = head, body, drip, interval
        self.requests = 0
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/token"

    def answer(self, conn: socket.socket) -> None:
        request = b""
        while not _whole_request(request):  # read it all: closing on unread bytes resets
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        self.requests += 1
        for part, name in ((self.head, "head"), (self.body, "body")):
            if name != self.drip:
                conn.sendall(part)
                continue
            for i in range(len(part)):
                if self.stopping.wait(self.interval):
                    return
                conn.sendall(part[i : i + 1])


def _whole_request(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def _head(status_line: bytes, headers: dict[str, str]) -> bytes:
    lines = [status_line, *(f"{k}: {v}".encode() for k, v in headers.items())]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _chunked(body: bytes) -> bytes:
    """`body` as HTTP/1.1 chunks of one byte each."""
    chunks = [b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body))]
    return b"".join(chunks) + b"0\r\n\r\n"


# (id, status line, headers besides Content-Type, body encoding)
DRIP_VARIANTS = [
    ("http11-keep-alive", b"HTTP/1.1 200 OK", {}, "length"),
    ("http11-connection-close", b"HTTP/1.1 200 OK", {"Connection": "close"}, "length"),
    ("http10", b"HTTP/1.0 200 OK", {}, "length"),
    ("http10-no-length", b"HTTP/1.0 200 OK", {}, "none"),
    ("http11-chunked", b"HTTP/1.1 200 OK", {"Transfer-Encoding": "chunked"}, "chunked"),
]


def _drip_server(status: bytes, headers: dict[str, str], framing: str, drip: str) -> DripServer:
    body = _token_body()
    if framing == "length":
        headers = {**headers, "Content-Length": str(len(body))}
    if framing == "chunked":
        body = _chunked(body)
    head = _head(status, {"Content-Type": "application/json", **headers})
    return DripServer(head, body, drip=drip)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "headers", "framing"),
    [v[1:] for v in DRIP_VARIANTS],
    ids=[v[0] for v in DRIP_VARIANTS],
)
def test_a_dripping_body_is_cut_at_the_timeout(
    status: bytes,
    headers: dict[str, str],
    framing: str,
    codex_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each byte comes sooner than the per-read timeout; all of them would take minutes.
    path = write_auth_json(codex_home, access=access_token(time.time() - 60), refresh="rt-0")
    before = file_digest(path)
    server = _drip_server(status, headers, framing, drip="body")
    monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
    outcome: dict[str, Any] = {}

    def refresh() -> None:
        try:
            outcome["value"] = CodexAuth(codex_home, timeout=1).get_token()
        except Exception as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=refresh, daemon=True)
    try:
        caller.start()
        caller.join(1 + 5)  # a hang check, not a timing benchmark
        finished = not caller.is_alive()
    finally:
        server.close()
    assert finished, "the refresh outlived its --timeout by more than 5 s"
    error = outcome.get("error")
    assert isinstance(error, TransientRefreshError), repr(error)
    assert "no complete answer within 1 s" in str(error)
    assert server.requests == 1
    assert file_digest(path) == before


@pytest.mark.slow
def test_headers_that_trickle_past_the_timeout_then_a_whole_answer_are_used(
    codex_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Response headers get only the per-read timeout (see _post_json): the request is not
    # abandoned while it may still succeed, and a complete answer is used even though it
    # came after --timeout.
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh="rt-0")
    body = _token_body()
    head = _head(b"HTTP/1.0 200 OK", {"Content-Length": str(len(body)), "X-Pad": "x" * 8})
    server = DripServer(head, body, drip="head", interval=2.5 / len(head))  # 2.5 s in all
    monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
    try:
        token = CodexAuth(codex_home, timeout=1).get_token()
    finally:
        server.close()

    issued = json.loads(body)
    assert fp(token) == fp(issued["access_token"])
    assert fp(stored(codex_home)["refresh_token"]) == fp(issued["refresh_token"])


def test_a_fork_while_another_thread_takes_the_lock_leaves_the_child_holding_nothing(
    codex_home: Path,
) -> None:
    write_auth_json(codex_home)
    result = run_py(child("fork_mid_lock"), codex_home=codex_home, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {"held_after_release": []}


def test_a_token_found_reused_is_not_spent_again_when_its_waiter_died(
    codex_home: Path, token_server: TokenServer
) -> None:
    # A lockless peer spent rt-0 and never wrote. Our process that got "reused" announced
    # its wait for that peer's write, and was killed during it. Whoever comes after the
    # wait must not POST rt-0 once more: it is dead, and that is all there is to say.
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh="rt-0")
    codex_peer.refresh(token_server.url, "rt-0")
    state = codex_home / "codexauth-state.json"
    waiter = subprocess.Popen(
        [sys.executable, "-m", "codexauth", "token"],
        env=py_env(codex_home, token_server.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: state.exists() and json.loads(state.read_bytes())["peer_until"] > 0)
    finally:
        waiter.kill()
        waiter.wait()
    assert token_server.post_count == 2  # the peer's, and the waiter's answered "reused"
    time.sleep(codexauth.REUSE_WINDOW + 0.2)  # its wait is over; nobody recorded the verdict

    result = run_py(
        ["-m", "codexauth", "token"], codex_home=codex_home, token_url=token_server.url
    )

    assert result.returncode == 4, result.stderr
    assert "already used" in one_line(result.stderr)
    assert token_server.post_count == 2
