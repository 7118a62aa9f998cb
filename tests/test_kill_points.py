"""Kill points and plain readers, with real faults: SIGKILL injected by strace at every
syscall of a refresh's write path, readers that parse auth.json as Codex does beside
refreshes, the real ``codex login status`` beside refreshes, and a logout after a kill.

Children are real ``python -m codexauth`` processes; every token endpoint is a loopback
TokenServer in this process, one per kill point so that each starts from ``rt-0``. strace
runs with ``-s 0``: its logs show paths and byte counts, never a buffer, so never a token.
Tokens are compared through fp() only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from codex_cli import login_status, run_cli
from support import (
    TokenServer,
    access_token,
    fp,
    make_jwt,
    py_env,
    run_py,
    stored,
    write_auth_json,
)

from codexauth import CodexAuth, NotLoggedInError, PermanentRefreshError

CHILD_TIMEOUT = 30.0
OUTBOX = "codexauth-outbox.json"
SPENT = "rt-0"  # the refresh token every kill point's login starts with
# What CODEX_HOME may hold once a login is settled: the login, Codex's lock, our state.
SETTLED_FILES = {"auth.json", "auth.lock", "codexauth-state.json"}

# The syscalls a kill is injected at, one class at a time (strace counts each one
# separately). "?" lets strace skip a name this architecture lacks (rename on arm64).
KILL_SYSCALLS = (
    "openat",
    "read",
    "write",
    "pwrite64",
    "fsync",
    "fdatasync",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "ftruncate",
    "close",
    "connect",
    "sendto",
    "recvfrom",
)
TRACED = ",".join(f"?{name}" for name in KILL_SYSCALLS)
# How many kill points a sweep may take in all: Python's start-up alone makes ~300 openat.
MAX_KILL_POINTS = 3000
FAST_BUDGET = 60.0  # seconds for the sampled sweep
FULL_BUDGET = 900.0  # seconds for the full sweep (marked slow)
WORKERS = 2  # kill points run in parallel; each has its own CODEX_HOME and TokenServer


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require(found: bool, missing: str) -> None:
    """Skip a test whose tool is `missing`, except in CI, where every test must run."""
    if found:
        return
    if _in_ci():
        pytest.fail(f"{missing}; CI must install it", pytrace=False)
    pytest.skip(missing)


# Running a refresh under strace ##############################################


def new_home(base: Path) -> Path:
    """An expired login with refresh token rt-0 in ``base/.codex``; a private runtime dir."""
    home = base / ".codex"
    home.mkdir(parents=True, mode=0o700)
    (base / ".run").mkdir(mode=0o700)
    write_auth_json(home, access=old_access_token(), refresh=SPENT)
    return home


def old_access_token() -> str:
    """An expired access token longer than any the server issues: a writer that
    overwrote auth.json in place would leave the old file's tail after the new one."""
    return make_jwt({"exp": int(time.time() - 60), "seq": "old", "pad": "x" * 512})


def private_dirs(home: Path) -> dict[str, str | None]:
    """The environment of one kill point's children: its own per-user dirs, and no
    bytecode written, so that every run makes the same syscalls in the same order."""
    base = home.parent
    return {
        "PYTHONDONTWRITEBYTECODE": "1",
        "XDG_RUNTIME_DIR": str(base / ".run"),
        "XDG_STATE_HOME": str(base / ".local" / "state"),
        "XDG_CACHE_HOME": str(base / ".cache"),
        "XDG_CONFIG_HOME": str(base / ".config"),
        "XDG_DATA_HOME": str(base / ".local" / "share"),
    }


@dataclass
class Call:
    """One line of an strace log: ``PID name(args) = ret``."""

    name: str
    args: str
    ret: str

    @property
    def done(self) -> bool:
        return self.ret != "?" and not self.ret.startswith("-1")

    def describe(self) -> str:
        """The call with its paths (CODEX_HOME and the temp names' random part elided)."""
        fd = re.match(r"\d+<([^>]*)>", self.args)  # -y: the file an fd argument names
        names = [os.path.basename(p) for p in re.findall(r'"(/[^"]*)"', self.args)]
        if fd is not None:
            names.insert(0, "socket" if fd[1].startswith("socket:") else os.path.basename(fd[1]))
        text = _TEMP_NAME.sub(".<hex>.tmp", " -> ".join(dict.fromkeys(names)))
        return f"{self.name}({text})"


_TEMP_NAME = re.compile(r"\.[0-9a-f]{12}\.tmp")


_LINE = re.compile(r"^(?P<pid>\d+) +(?P<name>\w+)\((?P<args>.*)\) += (?P<ret>\S+)")
# With more than one thread, a call another thread interrupts is logged in two halves.
_UNFINISHED = re.compile(r"^(?P<pid>\d+) +(?P<name>\w+)\((?P<args>.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(
    r"^(?P<pid>\d+) +<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)\) += (?P<ret>\S+)"
)


def parse_log(path: Path) -> list[Call]:
    """The calls of an strace log in the order they began, each once."""
    calls: list[Call] = []
    pending: dict[tuple[str, str], Call] = {}
    for line in path.read_text(errors="replace").splitlines():
        if match := _LINE.match(line):
            calls.append(Call(match["name"], match["args"], match["ret"]))
        elif match := _UNFINISHED.match(line):
            call = Call(match["name"], match["args"], "?")
            pending[match["pid"], match["name"]] = call
            calls.append(call)
        elif match := _RESUMED.match(line):
            call = pending.pop((match["pid"], match["name"]), None)
            if call is not None:
                call.args += match["args"]
                call.ret = match["ret"]
    return calls


def killed_call(calls: list[Call], syscall: str) -> Call:
    """The call a kill was injected at: the last one of `syscall` that never returned."""
    killed = [call for call in calls if call.name == syscall and call.ret == "?"]
    assert killed, f"no {syscall} in the log was killed"
    return killed[-1]


def is_outbox_rename(call: Call) -> bool:
    return call.name.startswith("rename") and call.args.rstrip().endswith(f'/{OUTBOX}"')


def is_auth_rename(call: Call) -> bool:
    return call.name.startswith("rename") and call.args.rstrip().endswith('/auth.json"')


def traced_token(
    strace: str, home: Path, server: TokenServer, inject: Sequence[str] = ()
) -> tuple[subprocess.CompletedProcess[str], list[Call]]:
    """``python -m codexauth token`` under strace (the KILL_SYSCALLS traced); its log."""
    log = home.parent / "strace.log"
    argv = [strace, "-f", "-qq", "-s", "0", "-y", "-o", str(log), "-e", f"trace={TRACED}"]
    for spec in inject:
        argv += ["-e", f"inject={spec}"]
    result = subprocess.run(
        [*argv, sys.executable, "-m", "codexauth", "token"],
        env=py_env(home, server.url, private_dirs(home)),
        cwd=home.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    return result, parse_log(log)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.005)


def live(server: TokenServer) -> set[str | None]:
    """Fingerprints of the refresh tokens the server would still accept."""
    return {fp(token) for token in server.valid}


def presented_twice(server: TokenServer) -> list[str | None]:
    """Fingerprints of the refresh tokens the server was sent more than once."""
    sent = Counter(
        body["refresh_token"]
        for body in server.requests
        if isinstance(body, dict) and isinstance(body.get("refresh_token"), str)
    )
    return [fp(token) for token, count in sent.items() if count > 1]


@dataclass
class Baseline:
    """An uninjected traced refresh: how many calls of each syscall come before the
    request has left, how many in all, and how many sendto make the request."""

    before: Counter[str]
    total: Counter[str]
    sends: int
    window: list[Call]  # from the request's last send to the outbox's rename, both excluded

    @classmethod
    def measure(cls, strace: str, base: Path) -> Baseline:
        home = new_home(base)
        with TokenServer() as server:
            result, calls = traced_token(strace, home, server)
            assert result.returncode == 0, result.stderr[-500:]
            assert server.post_count == 1
        sends = [i for i, call in enumerate(calls) if call.name == "sendto"]
        outbox = [i for i, call in enumerate(calls) if is_outbox_rename(call)]
        assert sends and len(outbox) == 1, "no request, or not one outbox rename, in the log"
        before = Counter(call.name for call in calls[: sends[-1]])
        total = Counter(call.name for call in calls)
        return cls(before, total, len(sends), calls[sends[-1] + 1 : outbox[0]])


# One kill point ##############################################################


@dataclass
class KillPoint:
    syscall: str
    n: int
    call: str  # the killed call, described
    phase: str  # "before the request", "window", "after the outbox"


BEFORE, WINDOW, AFTER = "before the request", "window", "after the outbox"


def kill_point(strace: str, base: Path, syscall: str, n: int, sends: int) -> KillPoint | None:
    """Kill `python -m codexauth token` at the n-th `syscall`, check what it left, and run
    the next `codexauth token` unless the kill fell in the window; None if it was not
    killed (fewer than n such calls)."""
    home = new_home(base / f"{syscall}-{n}")
    with TokenServer() as server:
        spec = f"?{syscall}:signal=SIGKILL:when={n}"
        result, calls = traced_token(strace, home, server, [spec])
        if result.returncode == 0:
            assert fp(result.stdout.strip()) == fp(stored(home)["access_token"])
            assert server.redacted_log() == ["200"]
            return None
        where = f"{syscall} #{n}"
        assert result.returncode == -9, f"{where}: exit {result.returncode}"
        killed = killed_call(calls, syscall)
        where = f"{where} = {killed.describe()}"
        sent = sum(call.done for call in calls if call.name == "sendto")
        request_left = sent == sends
        outbox_durable = any(is_outbox_rename(call) and call.done for call in calls)
        phase = AFTER if outbox_durable else WINDOW if request_left else BEFORE
        # Whatever reached the server has been answered before we look.
        wait_until(lambda: len(server.redacted_log()) == (1 if sent else 0))

        # (a) auth.json is whole: plain JSON, as Codex reads it.
        doc = json.loads((home / "auth.json").read_bytes())
        assert isinstance(doc.get("tokens"), dict), where
        spent = SPENT in server.used
        assert spent == request_left, f"{where}: spent={spent}, request left={request_left}"
        lost = (
            spent
            and not (home / OUTBOX).exists()
            and fp(doc["tokens"]["refresh_token"]) == fp(SPENT)
        )
        # The login is lost exactly when the kill came after the request left and before
        # the outbox's rename: the one named window.
        assert lost == (phase == WINDOW), f"{where}: lost={lost} in phase {phase}"
        if phase == WINDOW:
            return KillPoint(syscall, n, killed.describe(), phase)

        # (b) the next `codexauth token` exits 0 with the live token...
        after = run_py(
            ["-m", "codexauth", "token"],
            codex_home=home,
            env=private_dirs(home),
            token_url=server.url,
            timeout=CHILD_TIMEOUT,
        )
        assert after.returncode == 0, (
            f"{where}: next token exit {after.returncode}: " + (after.stderr[-300:])
        )
        tokens = stored(home)
        assert fp(after.stdout.strip()) == fp(tokens["access_token"]), where
        assert server.last_issued is not None
        assert fp(tokens["access_token"]) == fp(server.last_issued["access_token"]), where
        assert fp(tokens["refresh_token"]) in live(server), f"{where}: stored a spent token"
        # (c) ...and no refresh token was POSTed twice; one refresh in all.
        assert presented_twice(server) == [], where
        assert server.redacted_log().count("200") == 1, f"{where}: {server.redacted_log()}"
        left = {p.name for p in home.iterdir()} - SETTLED_FILES
        assert left == set(), f"{where}: left behind {sorted(left)}"
    return KillPoint(syscall, n, killed.describe(), phase)


# The sweep ###################################################################


def sweep(
    strace: str,
    base: Path,
    baseline: Baseline,
    plan: Callable[[str], Iterable[int]],
    budget: float,
) -> dict[str, list[KillPoint]]:
    """For each syscall, the kill points `plan(syscall)` (which runs past the baseline's last
    call), then one more at a time until a run is not killed.  WORKERS at a time, bounded by
    MAX_KILL_POINTS and `budget`."""
    deadline = time.monotonic() + budget
    found: dict[str, list[KillPoint]] = {}
    runs = 0
    with ThreadPoolExecutor(WORKERS) as pool:
        for syscall in KILL_SYSCALLS:
            batch = sorted(set(plan(syscall)))
            points: list[KillPoint] = []
            while batch:
                runs += len(batch)
                assert runs <= MAX_KILL_POINTS, f"over {MAX_KILL_POINTS} kill points"
                assert time.monotonic() < deadline, f"over the {budget:.0f} s budget at {syscall}"

                def run(n: int, syscall: str = syscall) -> KillPoint | None:
                    return kill_point(strace, base, syscall, n, baseline.sends)

                outcomes = list(pool.map(run, batch))
                points += [point for point in outcomes if point is not None]
                # Done once a run was not killed: there is no n-th call.
                batch = [] if outcomes[-1] is None else [batch[-1] + 1]
            found[syscall] = points
    return found


def full_plan(baseline: Baseline) -> Callable[[str], Iterable[int]]:
    """Every kill point: n = 1, 2, ... past the last call."""
    return lambda syscall: range(1, baseline.total[syscall] + 2)


def sampled_plan(baseline: Baseline, samples: int = 3) -> Callable[[str], Iterable[int]]:
    """A few kill points during start-up, then every one from just before the request."""

    def plan(syscall: str) -> list[int]:
        before = baseline.before[syscall]
        early = [1 + k * before // samples for k in range(samples)] if before else []
        return [*early, *range(max(before - 1, 1), baseline.total[syscall] + 2)]

    return plan


def check_sweep(found: dict[str, list[KillPoint]], baseline: Baseline) -> list[KillPoint]:
    """The window the sweep found: exactly the calls between the request's last send and
    the outbox's rename (that rename included).  Returns it."""
    for syscall, points in found.items():
        before = baseline.before[syscall]
        contiguous = [p for p in points if p.n >= before - 1]
        if before >= 1 and contiguous:  # the sweep began before the request had left
            assert contiguous[0].phase == BEFORE, f"{syscall} #{contiguous[0].n}"
    window = sorted(
        (p for points in found.values() for p in points if p.phase == WINDOW),
        key=lambda p: (p.syscall, p.n),
    )
    print("the window:", ", ".join(f"{p.syscall} #{p.n} {p.call}" for p in window))
    expected = Counter(call.name for call in baseline.window)
    expected[next(p.syscall for p in window if p.call.startswith("rename"))] += 1
    killed = Counter(p.syscall for p in window)
    # The answer arrives in one recvfrom or two, as the server's writes fall: any number.
    assert killed.pop("recvfrom", 0) >= 1
    expected.pop("recvfrom", None)
    assert killed == expected
    assert any(p.call.startswith("rename") and OUTBOX in p.call for p in window)
    return window


def test_kill_at_every_write_path_syscall_loses_only_inside_the_window(
    strace: str, tmp_path: Path
) -> None:
    """Every kill point from just before the request to the end (and a few in start-up):
    auth.json whole, the next run serves the live token with no second POST, except in
    the window from the request's last send to the outbox's rename."""
    baseline = Baseline.measure(strace, tmp_path / "baseline")
    found = sweep(strace, tmp_path, baseline, sampled_plan(baseline), FAST_BUDGET)
    assert sum(map(len, found.values())) >= 40
    check_sweep(found, baseline)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("CODEXAUTH_SWEEP_STARTUP"),
    reason="set CODEXAUTH_SWEEP_STARTUP=1 to sweep Python's start-up too (about 1,070 runs, "
    "3 minutes on 2 cores); the sweep above covers every point from the lock on",
)
def test_kill_at_every_syscall_of_a_refresh(strace: str, tmp_path: Path) -> None:
    """The same at every kill point n = 1, 2, ... of every traced syscall, start-up too."""
    baseline = Baseline.measure(strace, tmp_path / "baseline")
    found = sweep(strace, tmp_path, baseline, full_plan(baseline), FULL_BUDGET)
    for syscall, points in found.items():
        assert [p.n for p in points] == list(range(1, len(points) + 1)), syscall
    check_sweep(found, baseline)


# The window names only what must be in it.
_WINDOW_CALLS = re.compile(r"^(recvfrom|read|close)\(socket\)$|codexauth-outbox\.json")


def test_the_window_holds_only_the_answer_and_the_outbox_write(
    strace: str, tmp_path: Path
) -> None:
    """Between the request's last send and the outbox's rename: reading the answer and
    writing the outbox, nothing else (no import, no directory listing): each call there
    is one more place where a kill loses the login."""
    baseline = Baseline.measure(strace, tmp_path)
    extra = [
        call.describe() for call in baseline.window if not _WINDOW_CALLS.search(call.describe())
    ]
    assert extra == [], "calls in the window besides the answer and the outbox: " + ", ".join(
        extra
    )


# Plain readers beside refreshes ##############################################

# Refreshes with one long-lived CodexAuth until `stop` exists or `limit` are done; prints
# how many.  argv: stop, limit.
WRITER = """
import os, sys
import codexauth
stop, limit = sys.argv[1], int(sys.argv[2])
auth = codexauth.CodexAuth()
done = 0
while done < limit and not os.path.exists(stop):
    auth.refresh_token()
    done += 1
print(done)
"""

# Reads auth.json as a plain program does (open, read, json.loads) until `stop` exists or
# `seconds` pass; prints its counts as JSON.  argv: path, stop, seconds.
READER = """
import json, os, sys, time
path, stop, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
reads = bad = missing = 0
end = time.monotonic() + seconds
print("ready", flush=True)
while not os.path.exists(stop) and time.monotonic() < end:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        missing += 1
        continue
    reads += 1
    try:
        json.loads(data)
    except ValueError:
        bad += 1
print(json.dumps({"reads": reads, "bad": bad, "missing": missing}))
"""

REFRESHES = 40
READERS = 2
STATUS_RUNS = 20


@contextlib.contextmanager
def running(argv: Sequence[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A child process with piped output, killed if still running at the end."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=CHILD_TIMEOUT)


def test_a_plain_reader_never_meets_a_non_json_auth_json(
    codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    """Two readers parse auth.json in a tight loop while one process refreshes 40 times:
    not one read finds anything but whole JSON (Codex's readers never do either)."""
    write_auth_json(codex_home, refresh=SPENT)
    stop = tmp_path / "stop"
    env = py_env(codex_home, token_server.url)
    reader_argv = ["-c", READER, str(codex_home / "auth.json"), str(stop), str(CHILD_TIMEOUT)]
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(running(reader_argv, env)) for _ in range(READERS)]
        for reader in readers:
            assert reader.stdout is not None and reader.stdout.readline() == "ready\n"
        writer = run_py(["-c", WRITER, str(stop), str(REFRESHES)], env=env, timeout=CHILD_TIMEOUT)
        stop.touch()
        counts = [json.loads(reader.communicate(timeout=CHILD_TIMEOUT)[0]) for reader in readers]
    assert writer.returncode == 0, writer.stderr[-300:]
    assert writer.stdout.strip() == str(REFRESHES)
    assert token_server.redacted_log() == ["200"] * REFRESHES
    assert fp(stored(codex_home)["access_token"]) == fp(token_server.last_issued["access_token"])
    for count in counts:
        assert (count["bad"], count["missing"]) == (0, 0), count
        assert count["reads"] >= REFRESHES, count  # they read while the writer wrote
    print(f"reads beside {REFRESHES} refreshes: {counts}")


def test_codex_login_status_never_fails_beside_refreshes(
    codex_home: Path, token_server: TokenServer, codex_bin: Path, tmp_path: Path
) -> None:
    """The real `codex login status`, run 20 times while refreshes run: exit 0 every time."""
    write_auth_json(codex_home, refresh=SPENT)
    stop = tmp_path / "stop"
    env = py_env(codex_home, token_server.url)
    with running(["-c", WRITER, str(stop), "2000"], env) as writer:
        wait_until(lambda: token_server.post_count >= 1 or writer.poll() is not None)
        before = token_server.post_count
        results = [login_status(codex_bin, codex_home) for _ in range(STATUS_RUNS)]
        during = token_server.post_count - before
        stop.touch()
        writer.wait(timeout=CHILD_TIMEOUT)
    assert writer.returncode == 0
    failures = [(r.returncode, r.stderr.strip()[-200:]) for r in results if r.returncode != 0]
    assert failures == []
    assert all("Logged in using ChatGPT" in r.stdout + r.stderr for r in results)
    assert during >= STATUS_RUNS, f"only {during} refreshes beside {STATUS_RUNS} status runs"
    assert set(token_server.redacted_log()) == {"200"}
    print(f"{STATUS_RUNS} `codex login status` beside {during} refreshes")


# A kill once the outbox is durable ###########################################


def kill_at_auth_json_rename(strace: str, codex_home: Path, server: TokenServer) -> None:
    """`codexauth token` killed at the rename of its temp file onto auth.json: the server
    has rotated, the successor waits in the outbox, auth.json still holds the spent token."""
    # The outbox's rename is the first, auth.json's the second (strace counts per syscall).
    spec = "?rename,?renameat,?renameat2:signal=SIGKILL:when=2"
    result, calls = traced_token(strace, codex_home, server, [spec])
    assert result.returncode == -9, f"not killed: exit {result.returncode}"
    killed = [call for call in calls if call.name.startswith("rename") and call.ret == "?"]
    assert killed and is_auth_rename(killed[-1]), "not killed at auth.json's rename"
    assert server.redacted_log() == ["200"]
    assert (codex_home / OUTBOX).exists()
    assert fp(stored(codex_home)["refresh_token"]) == fp(SPENT)


def test_a_kill_after_the_outbox_is_durable_loses_nothing(
    strace: str, codex_home: Path, token_server: TokenServer
) -> None:
    """Killed at auth.json's rename: the next `codexauth token` serves the successor from
    the outbox, with no second POST, and stores it."""
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=SPENT)
    kill_at_auth_json_rename(strace, codex_home, token_server)
    issued = token_server.last_issued
    assert issued is not None
    result = run_py(["-m", "codexauth", "token"], codex_home=codex_home, timeout=CHILD_TIMEOUT)
    assert result.returncode == 0, result.stderr[-300:]
    assert fp(result.stdout.strip()) == fp(issued["access_token"])
    assert token_server.post_count == 1
    tokens = stored(codex_home)
    assert fp(tokens["refresh_token"]) == fp(issued["refresh_token"])
    assert fp(tokens["access_token"]) == fp(issued["access_token"])
    left = {p.name for p in codex_home.iterdir()} - SETTLED_FILES
    assert left == set(), f"left behind: {sorted(left)}"


def logged_out_after_a_kill(
    strace: str, codex_home: Path, server: TokenServer, logout: str, request: pytest.FixtureRequest
) -> CodexAuth:
    """A CodexAuth that read the expired login; then a refresh killed at auth.json's
    rename; then auth.json deleted by `logout` ("codex logout", or "unlink")."""
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=SPENT)
    long_lived = CodexAuth(codex_home)
    assert long_lived.needs_refresh()  # it holds the expired login now
    kill_at_auth_json_rename(strace, codex_home, server)
    if logout == "codex logout":
        binary = request.getfixturevalue("codex_bin")
        result = run_cli(
            binary, codex_home, ["logout"], token_url=server.url, revoke_url=server.revoke_url
        )
        assert result.returncode == 0, result.stderr[-300:]
    else:
        (codex_home / "auth.json").unlink()
    assert not (codex_home / "auth.json").exists()
    return long_lived


LOGOUTS = ["codex logout", "unlink"]


@pytest.mark.parametrize("logout", LOGOUTS)
def test_a_logout_after_a_kill_is_never_undone(
    strace: str,
    codex_home: Path,
    token_server: TokenServer,
    logout: str,
    request: pytest.FixtureRequest,
) -> None:
    """Killed at auth.json's rename, then logged out: a CodexAuth that read the login
    before the kill refuses to refresh, makes no request and writes nothing back; nor
    does the next `codexauth token`."""
    long_lived = logged_out_after_a_kill(strace, codex_home, token_server, logout, request)
    with pytest.raises((NotLoggedInError, PermanentRefreshError)):
        long_lived.refresh_token()
    assert token_server.post_count == 1
    assert not (codex_home / "auth.json").exists(), "a logout was undone"

    after = run_py(["-m", "codexauth", "token"], codex_home=codex_home, timeout=CHILD_TIMEOUT)
    assert after.returncode == 3, after.stderr[-300:]  # not logged in
    assert token_server.post_count == 1
    assert not (codex_home / "auth.json").exists(), "a logout was undone"


@pytest.mark.parametrize("logout", LOGOUTS)
def test_a_logout_after_a_kill_leaves_no_live_token_behind(
    strace: str,
    codex_home: Path,
    token_server: TokenServer,
    logout: str,
    request: pytest.FixtureRequest,
) -> None:
    """The same, then what a user does next: `refresh_token()` on the old object,
    `codexauth token`, `codexauth logout`.  The outbox holds a refresh token the server
    still accepts (nobody revoked it): once the logout is seen, it must be gone."""
    long_lived = logged_out_after_a_kill(strace, codex_home, token_server, logout, request)
    issued = token_server.last_issued
    assert issued is not None
    with pytest.raises((NotLoggedInError, PermanentRefreshError)):
        long_lived.refresh_token()
    for command in ("token", "logout"):
        run_py(["-m", "codexauth", command], codex_home=codex_home, timeout=CHILD_TIMEOUT)
    assert fp(issued["refresh_token"]) in live(token_server)
    assert not (codex_home / OUTBOX).exists(), "a live refresh token outlived the logout"


def test_codexauth_logout_after_a_kill_revokes_the_login_in_force(
    strace: str, codex_home: Path, token_server: TokenServer
) -> None:
    """Killed at auth.json's rename, the login in force is the outbox's (`codexauth token`
    would serve it): `codexauth logout` must revoke that refresh token, not only the
    spent one auth.json still names."""
    write_auth_json(codex_home, access=access_token(time.time() - 60), refresh=SPENT)
    kill_at_auth_json_rename(strace, codex_home, token_server)
    issued = token_server.last_issued
    assert issued is not None
    result = run_py(
        ["-m", "codexauth", "logout"],
        codex_home=codex_home,
        env={"CODEX_REVOKE_TOKEN_URL_OVERRIDE": token_server.revoke_url},
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-300:]
    assert not (codex_home / "auth.json").exists()
    assert not (codex_home / OUTBOX).exists()
    assert token_server.post_count == 1
    assert fp(issued["refresh_token"]) not in live(token_server), (
        "the successor's refresh token is still live at the server after logout "
        f"(revokes: {token_server.redacted_revoke_log()})"
    )
