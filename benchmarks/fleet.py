"""Many machines on one Redis store: what one login costs a fleet, measured on one host.

    python benchmarks/fleet.py            # 8 machines x 16 processes, about 100 s on 2 cores
    python benchmarks/fleet.py --quick    # 4 machines x 4 processes, a smoke run

A "machine" is a CODEX_HOME (and HOME) of its own: codexauth's per-machine file lock and
sidecars live there, so processes with different homes coordinate only through the store,
as processes on different hosts would. One invocation starts a real redis-server on a free
loopback port (tests/redis_server.py) and measures, printing a plain-text table:

1. the fleet: every process of every machine released together on an expired login pushed
   into the store, the token endpoint answering slowly: POSTs, failures, wall time, and how
   far apart the processes finish;
2. the same processes merely reading a fresh token from the store;
3. no shared store: every machine holds its own copy of the same auth.json (what copying
   ~/.codex around gives), the same processes released together;
4. the warm path in process: ``CodexAuth(store=redis_url).get_token()`` against the file
   store's, and the Redis commands it sent;
5. wake-up: how soon after the refresher's commit every other process has its token.

Children are ``codexauth token`` (codexauth.main) with redis-py imported before the barrier,
as a long-lived process has its store's client already; the refresher imports requests after
it, as codexauth does. Each prints one JSON line: its exit code, when it returned, a
fingerprint of its token (never the token), and when codexauth logged the steps named in
STEPS (the log's format strings only, never their arguments). The refresher's "refresh
succeeded; storing it" is the commit marker (logged once its outbox is written): the commit
is the one Redis command after it.
Needs redis-py and redis-server; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# bench.py puts the working tree and tests/ first on sys.path, and gives every TokenServer
# a listen backlog of 128.
from bench import (
    TARGET_FLEET_RATIO,
    TARGET_IN_PROCESS_US,
    TARGET_SPREAD_MS,
    child_env,
    machine_info,
    percentile,
    verdict,
    wait_out_racy_window,
)
from redis_server import RedisServer, redis_server_path
from support import EXHAUSTED_MESSAGE, Racers, TokenServer, access_token, fp, write_auth_json

import codexauth

READY_TIMEOUT = 180.0  # 128 interpreters importing redis-py on 2 busy cores
RACE_TIMEOUT = 60.0  # from the release to the last exit
TARGET_WAKE_MS = 50.0
PRE_IMPORT = "import redis"  # the store's client: a long-lived process has it at start-up

# codexauth's debug lines, by format string, and the name each step gets here.
STEPS = {
    "refresh started: POST %s": "posted",
    "refresh succeeded; storing it in %s": "answered",
    "refresh adopted from a peer after %.0f ms": "adopted",
    "refresh skipped: a peer already refreshed": "skipped",
}


# Child processes ###############################################################

_CHILD = f"""\
import contextlib, hashlib, io, json, logging, os, re, sys, time
home = sys.argv[1]
os.environ["CODEX_HOME"] = home  # this process's machine
os.environ["HOME"] = os.path.dirname(home)
import codexauth
{PRE_IMPORT}
STEPS = {STEPS!r}
steps = {{}}
class Steps(logging.Handler):
    def emit(self, record):
        name = STEPS.get(record.msg)
        if name is not None:
            steps.setdefault(name, record.created)
log = logging.getLogger("codexauth")
log.addHandler(Steps())
log.setLevel(logging.DEBUG)
log.propagate = False
out, err = io.StringIO(), io.StringIO()
wait_at_barrier()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = codexauth.main(["token"])
done = time.time()
result = {{"code": code, "done": done, "steps": steps}}
if code == 0:
    result["fp"] = hashlib.sha256(out.getvalue().strip().encode()).hexdigest()[:12]
else:  # what went wrong, in a word: the message is Codex's, never a token
    reused = {EXHAUSTED_MESSAGE!r} in err.getvalue()
    result["why"] = "refresh_token_reused" if reused else f"exit {{code}}"
    if not reused:  # codexauth's one-line message, tokens masked should one ever slip in
        result["message"] = re.sub(r"eyJ[\\w.-]+|rt-\\d+", "***", err.getvalue().strip())[:160]
print(json.dumps(result))
sys.exit(code)
"""


class Child:
    """What one child reported, or how it died; never a token."""

    def __init__(self, machine: int, result: subprocess.CompletedProcess[str]) -> None:
        self.machine = machine
        self.code = result.returncode
        self.done = float("nan")
        self.fp: str | None = None
        self.steps: dict[str, float] = {}
        self.message = ""
        try:
            doc = json.loads(result.stdout.strip().splitlines()[-1])
            self.done, self.steps = float(doc["done"]), doc["steps"]
            self.fp = doc.get("fp")
            self.why = str(doc.get("why", ""))
            self.message = str(doc.get("message", ""))
        except (ValueError, KeyError, IndexError):  # a crash: name the exception class only
            last = (result.stderr.strip().splitlines() or [f"exit {self.code}"])[-1]
            self.why = re.split(r"[:\s]", last, maxsplit=1)[0][:40]

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.fp is not None


class Race:
    """One herd: every child, and the parent's view of the times."""

    def __init__(
        self, children: list[Child], wall: float, after: float, released_at: float
    ) -> None:
        self.children = children
        self.wall = wall  # first spawn to last exit
        self.after = after  # release to last exit
        self.released_at = released_at  # epoch s, to compare with the children's clocks
        self.posts = 0
        self.answered_at: list[float] = []  # the token server's answers, epoch s
        self.stale = 0  # succeeded with a token other than the one stored at the end
        self.logins = ""  # whether the refresh token left in the store(s) still works
        self.commands: Counter[str] = Counter()  # Redis commands the children sent

    @property
    def failures(self) -> Counter[str]:
        return Counter(c.why for c in self.children if not c.ok)

    @property
    def done(self) -> list[float]:
        return [c.done for c in self.children if c.ok]

    @property
    def last_token(self) -> float:
        """Release to the last return from `codexauth token`, token or error: the herd
        without its interpreters' teardown."""
        finished = [c.done for c in self.children if c.done == c.done]  # not NaN: it reported
        return max(finished) - self.released_at if finished else float("nan")

    @property
    def spread(self) -> float:
        return max(self.done) - min(self.done) if self.done else float("nan")

    def refresher(self) -> Child | None:
        posted = [c for c in self.children if "posted" in c.steps]
        return posted[0] if len(posted) == 1 else None


def race(env: dict[str, str], homes: Sequence[Path], per_machine: int) -> Race:
    """`per_machine` children on each of `homes`, released together; every wait bounded."""
    with Racers(env) as racers:
        started = time.monotonic()
        machines = []
        for machine, home in enumerate(homes):
            for _ in range(per_machine):
                racers.spawn(code=_CHILD, args=[str(home)])
                machines.append(machine)
        released = racers.release(ready_timeout=READY_TIMEOUT)
        released_at = time.time() - (time.monotonic() - released)  # as the gate opened
        results = racers.finish(timeout=RACE_TIMEOUT)
        end = time.monotonic()
    children = [Child(m, r) for m, r in zip(machines, results)]
    return Race(children, end - started, end - released, released_at)


class AnswerClock(TokenServer):
    """A TokenServer that notes when it answered each POST (after its delay)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered_at: list[float] = []

    def _handle_post(
        self, raw: bytes, user_agent: str = ""
    ) -> tuple[int, bytes, str, dict[str, str]] | None:
        response = super()._handle_post(raw, user_agent)
        self.answered_at.append(time.time())
        return response


# Helpers #######################################################################


def command_counts(server: RedisServer) -> Counter[str]:
    """Calls per command since the server started (INFO commandstats), INFO itself left out."""
    info = server.command("INFO", "commandstats")
    assert isinstance(info, bytes)
    counts: Counter[str] = Counter()
    for line in info.decode().splitlines():
        found = re.match(r"cmdstat_([\w|]+):calls=(\d+)", line)
        if found and found.group(1) != "info":
            counts[found.group(1)] = int(found.group(2))
    return counts


def push(url: str, namespace: str, scratch: Path, *, expired: bool) -> None:
    """Put a login into the store, as `codexauth push` would (rt-0, the server's valid one)."""
    exp = time.time() + (-60 if expired else 3600)
    write_auth_json(scratch, access=access_token(exp), refresh="rt-0")
    auth = codexauth.load_auth_dot_json(scratch)
    assert auth is not None
    codexauth.RedisStore(url, scratch, namespace=namespace).save(auth)


def make_homes(tmp: str, name: str, machines: int) -> list[Path]:
    """One CODEX_HOME per machine, each inside a HOME of its own."""
    homes = []
    for machine in range(machines):
        home = Path(tmp) / name / f"machine{machine}" / ".codex"
        home.mkdir(mode=0o700, parents=True)
        homes.append(home)
    return homes


def ms(values: Sequence[float]) -> str:
    """p50 / p99 / max of `values` (seconds), in ms."""
    if not values:
        return "n/a"
    cells = (statistics.median(values), percentile(values, 0.99), max(values))
    return " / ".join(f"{v * 1000:.0f}" for v in cells)


def env_for(base: dict[str, str], store: str, namespace: str = "") -> dict[str, str]:
    env = dict(base)
    env[codexauth.STORE_ENV_VAR] = store
    env.pop(codexauth.NAMESPACE_ENV_VAR, None)
    if namespace:
        env[codexauth.NAMESPACE_ENV_VAR] = namespace
    return env


# 1, 2 and 5. The fleet on one Redis store ######################################


def fleet_race(
    server: RedisServer,
    base: dict[str, str],
    tmp: str,
    name: str,
    shape: tuple[int, int],
    *,
    expired: bool,
    delay: float,
) -> Race:
    machines, per_machine = shape
    url = server.url()
    scratch = Path(tmp) / name / "pusher"
    scratch.mkdir(parents=True)
    homes = make_homes(tmp, name, machines)
    with AnswerClock() as tokens:
        tokens.delay = delay
        push(url, name, scratch, expired=expired)
        before = command_counts(server)
        env = env_for(base, url, name)
        env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = tokens.url
        result = race(env, homes, per_machine)
        result.commands = command_counts(server) - before
        result.posts, result.answered_at = tokens.post_count, list(tokens.answered_at)
        snapshot = codexauth.RedisStore(url, scratch, namespace=name).read(force=True)
        assert snapshot is not None and snapshot.auth.tokens is not None
        stored = snapshot.auth.tokens
        result.stale = sum(c.fp != fp(stored.access_token) for c in result.children if c.ok)
        result.logins = "ok" if stored.refresh_token in tokens.valid else "dead"
    shutil.rmtree(Path(tmp) / name, ignore_errors=True)
    return result


# 3. Every machine with its own copy of auth.json ###############################


def copies_race(
    base: dict[str, str], tmp: str, name: str, shape: tuple[int, int], *, delay: float
) -> Race:
    machines, per_machine = shape
    homes = make_homes(tmp, name, machines)
    login = access_token(time.time() - 60)
    for home in homes:  # the same login, copied to every machine
        write_auth_json(home, access=login, refresh="rt-0")
    with AnswerClock() as tokens:
        tokens.delay = delay
        env = env_for(base, "file")
        env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = tokens.url
        result = race(env, homes, per_machine)
        result.posts, result.answered_at = tokens.post_count, list(tokens.answered_at)
        alive, stale = 0, 0
        for machine, home in enumerate(homes):
            auth = codexauth.load_auth_dot_json(home)
            assert auth is not None and auth.tokens is not None
            alive += auth.tokens.refresh_token in tokens.valid
            stale += sum(
                c.fp != fp(auth.tokens.access_token)
                for c in result.children
                if c.ok and c.machine == machine
            )
        result.stale = stale
        result.logins = f"{alive}/{machines}"
    shutil.rmtree(Path(tmp) / name, ignore_errors=True)
    return result


def bench_races(
    server: RedisServer,
    base: dict[str, str],
    tmp: str,
    shapes: tuple[tuple[int, int], tuple[int, int]],
    repeats: int,
    delay: float,
) -> list[str]:
    (machines, per_machine), small = shapes
    n = machines * per_machine
    out = [
        f"1-3. {machines} machines x {per_machine} processes = {n}, released together;"
        f" token endpoint delay {delay:g} s"
    ]
    expired = [
        fleet_race(server, base, tmp, f"expired{i}", shapes[0], expired=True, delay=delay)
        for i in range(repeats)
    ]
    fresh = fleet_race(server, base, tmp, "fresh", shapes[0], expired=False, delay=delay)
    copies = copies_race(base, tmp, "copies", shapes[0], delay=delay)
    rows = {
        "1. one Redis store, expired": expired,
        "2. one Redis store, fresh read": [fresh],
        "3. a copy of auth.json each, expired": [copies],
    }
    out.append(
        f"   {'':<38}{'POSTs':>6}{'failed':>7}{'stale':>6}{'login':>6}"
        f"{'wall':>10}{'last exit':>11}{'last return':>13}{'cmds':>6}"
    )
    for label, runs in rows.items():
        for run in runs:
            cmds = f"{sum(run.commands.values()) / n:>6.1f}" if run.commands else f"{'-':>6}"
            out.append(
                f"   {label:<38}{run.posts:>6}{sum(run.failures.values()):>7}{run.stale:>6}"
                f"{run.logins:>6}{run.wall * 1000:>7.0f} ms{run.after * 1000:>8.0f} ms"
                f"{run.last_token * 1000:>10.0f} ms{cmds}"
            )
    out += [
        "   wall: first spawn to last exit (interpreter start-up, imports and teardown included);",
        "   last exit, last return: from the release to the last exit, and to the last return",
        "   from codexauth.main (token or error); cmds: Redis commands per process;",
        "   stale: succeeded with a token other than the one its store holds at the end;",
        "   login: the refresh token left there still works (per machine for 3.)",
    ]
    for label, runs in rows.items():
        kinds = sum((run.failures for run in runs), Counter())
        if kinds:
            listed = ", ".join(f"{k} x{v}" for k, v in kinds.most_common())
            exits = Counter(c.code for run in runs for c in run.children if not c.ok)
            codes = ", ".join(f"exit {k} x{v}" for k, v in sorted(exits.items()))
            out.append(f"   failures, {label[3:]}: {listed} ({codes})")
        said = Counter(c.message for run in runs for c in run.children if c.message)
        out.extend(f"     x{v}: {k}" for k, v in said.most_common(3))

    spreads = [run.spread * 1000 for run in expired]
    out.append(
        f"   1. finish spread, all {n} (max - min): "
        + ", ".join(f"{s:.0f} ms {verdict(s, TARGET_SPREAD_MS)}" for s in spreads)
        + f" (target <= {TARGET_SPREAD_MS:g} ms); the same herd reading a fresh token (2.):"
        f" {fresh.spread * 1000:.0f} ms"
    )
    ok = all(run.posts == 1 and not run.failures and run.stale == 0 for run in expired)
    wall = statistics.median(run.wall for run in expired) / fresh.wall
    last = statistics.median(run.last_token for run in expired) / fresh.last_token
    out.append(
        f"   ratio 1. / 2.: wall {wall:.2f} {verdict(wall, TARGET_FLEET_RATIO)}"
        f" (target <= {TARGET_FLEET_RATIO:g}), last return {last:.2f};"
        f" 1 POST and every process correct: {'yes' if ok else 'NO'}"
    )
    per: Counter[str] = Counter()
    for run in expired:
        per.update(run.commands)
    for label, counts, runs in (("1.", per, repeats), ("2.", fresh.commands, 1)):
        top = ", ".join(f"{k} {v / n / runs:.1f}" for k, v in counts.most_common(5))
        out.append(f"   {label} Redis commands per process: {top}")
    rate = statistics.median(sum(run.commands.values()) / run.last_token for run in expired)
    out.append(
        f"   1. Redis load from release to last return: {rate:,.0f} commands/s"
        " (every waiting process polls the store)"
    )

    # The same wake-up with few processes per machine: what the protocol costs when the
    # host's two cores are not shared by the whole fleet.
    few = [
        fleet_race(server, base, tmp, f"few{i}", small, expired=True, delay=delay)
        for i in range(3)
    ]
    out.extend(wake_up({shapes[0]: expired, small: few}))
    return out


def wake_up(herds: dict[tuple[int, int], list[Race]]) -> list[str]:
    """5: each other process's return after the commit, by where it ran; and when it noticed."""
    columns = []
    for runs in herds.values():
        rows: dict[str, list[float]] = {
            "same machine as the refresher": [],
            "other machines": [],
            "all, from the commit": [],
            "all, from the endpoint's answer": [],
            "all, commit to noticing it": [],
        }
        for run in runs:
            refresher = run.refresher()
            if refresher is None or "answered" not in refresher.steps:
                continue  # no single refresher to time from: counted in the table above
            commit = refresher.steps["answered"]
            for child in run.children:
                if child is refresher or not child.ok:
                    continue
                where = "same machine as the refresher"
                if child.machine != refresher.machine:
                    where = "other machines"
                rows[where].append(child.done - commit)
                rows["all, from the commit"].append(child.done - commit)
                if len(run.answered_at) == 1:
                    rows["all, from the endpoint's answer"].append(child.done - run.answered_at[0])
                noticed = [child.steps[k] for k in ("adopted", "skipped") if k in child.steps]
                if noticed:
                    rows["all, commit to noticing it"].append(noticed[0] - commit)
        columns.append(rows)
    heads = [
        f"{m} x {p}, {len(runs)} run{'s' * (len(runs) > 1)}" for (m, p), runs in herds.items()
    ]
    out = [
        "5. Wake-up: each other process's return from codexauth.main after the refresher's"
        " commit (p50 / p99 / max, ms)",
        f"   {'':<38}" + "".join(f"{h:>22}" for h in heads),
    ]
    for label in columns[0]:
        out.append(f"   {label:<38}" + "".join(f"{ms(col[label]):>22}" for col in columns))
    verdicts = []
    for head, col in zip(heads, columns):
        values = col["all, from the commit"]
        if values:
            p50, p99 = statistics.median(values) * 1000, percentile(values, 0.99) * 1000
            verdicts.append(
                f"{head.split(',')[0]}: p50 {verdict(p50, TARGET_WAKE_MS)},"
                f" p99 {verdict(p99, TARGET_WAKE_MS)}"
            )
    out.append(f"   target <= {TARGET_WAKE_MS:g} ms: " + "; ".join(verdicts))
    out.append(
        "   commit: the refresher's 'refresh succeeded; storing it' log line (its outbox is on"
        " disk; its one Redis commit follows);\n   noticing: its 'adopted from a peer' or"
        " 'skipped: a peer already"
        " refreshed' line"
    )
    return out


# 4. Warm path in process #######################################################


def bench_in_process(server: RedisServer, tmp: str, calls: int) -> list[str]:
    out = [f"4. Warm path in process: {calls} calls each, per-call latency"]
    url, namespace = server.url(), "inproc"
    home = Path(tmp) / "inproc" / ".codex"
    home.mkdir(parents=True)
    push(url, namespace, home, expired=False)  # also writes home/auth.json, fresh
    wait_out_racy_window(home / codexauth.AUTH_FILE_NAME)
    redis_auth = codexauth.CodexAuth(home, store=url, namespace=namespace)
    file_auth = codexauth.CodexAuth(home, store="file")
    import redis

    client = redis.Redis.from_url(url)
    key = f"codexauth:{{{namespace}}}:login"
    candidates = {
        "CodexAuth(store=redis_url).get_token()": redis_auth.get_token,
        "CodexAuth(store='file').get_token()": file_auth.get_token,
        "one HGETALL round trip, for scale": lambda: client.hgetall(key),
    }
    rows, sent = [], {}
    for label, call in candidates.items():
        call()  # the first call reads the login
        before = command_counts(server)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            started = clock()
            call()
            samples.append(clock() - started)
        sent[label] = sum((command_counts(server) - before).values())
        rows.append((label, statistics.median(samples) / 1000, percentile(samples, 0.99) / 1000))
    out.append(f"   {'':<42}{'median':>10}{'p99':>10}{'Redis cmds':>12}")
    for label, median, p99 in rows:
        mark = (
            f"  target <= {TARGET_IN_PROCESS_US:g} us {verdict(median, TARGET_IN_PROCESS_US)}"
            if "get_token" in label
            else ""
        )
        out.append(f"   {label:<42}{median:>7.2f} us{p99:>7.2f} us{sent[label]:>12}{mark}")
    shutil.rmtree(Path(tmp) / "inproc", ignore_errors=True)
    return out


# Main ##########################################################################


def warm_up(server: RedisServer, base: dict[str, str], tmp: str) -> None:
    """One small race of each kind, untimed, so that every child starts from cached bytecode."""
    runs = [
        fleet_race(server, base, tmp, "warm-up", (2, 1), expired=True, delay=0.0),
        copies_race(base, tmp, "warm-up-copies", (1, 1), delay=0.0),
    ]
    for run in runs:
        if run.failures:
            raise RuntimeError(f"warm-up children failed: {dict(run.failures)}")


def redis_version() -> str:
    found = subprocess.run(
        [redis_server_path() or "redis-server", "--version"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    version = re.search(r"v=(\S+)", found)
    import redis

    return f"redis-server {version.group(1) if version else '?'}, redis-py {redis.__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 x 4 processes, fewer calls")
    parser.add_argument("--machines", type=int, help="machines (default 8; --quick 4)")
    parser.add_argument("--per-machine", type=int, help="processes each (default 16; quick 4)")
    parser.add_argument("--repeats", type=int, help="runs of the expired race (default 2)")
    parser.add_argument("--delay", type=float, default=0.2, help="token endpoint delay, s")
    args = parser.parse_args(argv)
    if redis_server_path() is None:
        print("fleet.py needs redis-server on PATH (apt-get install redis-server)")
        return 2
    quick = args.quick
    machines = args.machines or (4 if quick else 8)
    shapes = ((machines, args.per_machine or (4 if quick else 16)), (machines, 2))
    repeats = args.repeats or (1 if quick else 2)
    calls = 5000 if quick else 20000

    started = time.monotonic()
    mode = "quick" if quick else "full"
    lines = [
        f"codexauth fleet benchmark ({mode} mode, python benchmarks/fleet.py)",
        *machine_info(),
        redis_version(),
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="codexauth-fleet-") as tmp, RedisServer() as server:
        # Children get a private bytecode cache; their CODEX_HOME is set per machine.
        base = child_env(Path(tmp), codexauth.REFRESH_TOKEN_URL, os.path.join(tmp, "pycache"))
        warm_up(server, base, tmp)
        print("\n" + "\n".join(bench_in_process(server, tmp, calls)), flush=True)
        print("\n" + "\n".join(bench_races(server, base, tmp, shapes, repeats, args.delay)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntotal {time.monotonic() - started:.1f} s; load average at the end {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
