"""How much codexauth costs, measured against what a user would do without it.

    python benchmarks/bench.py            # full run, under a minute on 2 cores
    python benchmarks/bench.py --quick    # fewer runs and processes

One invocation measures, and prints as a plain-text table:

1. the warm path as a whole process, in a fresh venv as users have one: ``codexauth
   token`` (pip's wrapper), ``python -m codexauth token`` and a vendored copy run by
   path, with a valid token, against ``python -c "import requests, platformdirs"``
   (what a refresh imports) and ``python -c "import json"``, interleaved, plus a check
   that it imported neither;
2. the warm path in process: repeated ``CodexAuth.get_token()`` and ``codexauth.get_token()``;
3. waiters: 12 processes released together on an expired token, server answering slowly;
4. scale: N processes released together on an expired token, codexauth against a naive
   lockless refresher (read, POST with urllib, truncate-then-write), and against N
   processes that only read a fresh token.

Many machines on one Redis store: benchmarks/fleet.py.

Stdlib only, plus tests/support.py's loopback TokenServer (no request leaves 127.0.0.1)
and its Racers, which release racing children together. Children print a fingerprint
of the token they got, never the token.

Children get a private PYTHONPYCACHEPREFIX, so that every module runs from cached
bytecode as it would from an installed package, even where PYTHONDONTWRITEBYTECODE is set.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"
sys.path[:0] = [str(REPO_ROOT), str(TESTS_DIR)]  # the working tree wins over an install

# These imports need the sys.path line above.
import support  # noqa: E402
from support import Racers, TokenServer, access_token, fp, py_env, write_auth_json  # noqa: E402

import codexauth  # noqa: E402

# The server's listen backlog defaults to 5: 64 clients connecting at once would see
# connection resets that a real endpoint does not give. Every TokenServer here gets 128.
support.ThreadingHTTPServer.request_queue_size = 128

EAGER = ("requests", "platformdirs")  # portalocker too, on Windows only
CHILD_TIMEOUT = 60.0  # seconds for any one child process or race
WAITERS = 12

# Targets, each compared with a ratio or figure measured in this run: issue 4's, with
# the warm path (issue 18) and the herd at N = 64 (issue 15) tightened since.
TARGET_VS_EAGER = 0.4
TARGET_VS_JSON = 1.2
TARGET_IN_PROCESS_US = 20.0
TARGET_SPREAD_MS = 50.0
TARGET_SCALE_RATIO = 1.1
# The fleet's expired herd over its fresh one, wall time (issue 17).
TARGET_FLEET_RATIO = 1.3


# Child processes ###############################################################

# Prepended to every racing child, which runs as support.Racers' `code`: Racers provides
# wait_at_barrier(), which reports ready, then blocks until the parent opens the gate,
# waking every child in the same instant.
_PRELUDE = """\
import os, sys, time, hashlib
def report(token):
    done = time.time()
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]
    print(f"OK {done:.6f} {digest}")
"""

# A script asking codexauth for its token. `pre_import` runs before the barrier.
_CODEXAUTH_CHILD = """\
import codexauth
{pre_import}
wait_at_barrier()
try:
    token = codexauth.get_token()
except codexauth.CodexAuthError as exc:
    print("FAIL", type(exc).__name__)
    sys.exit(1)
report(token)
"""

# What a user writes without codexauth, and what the Codex CLI does: no lock, refresh when
# the access token is about to expire, write the file back by truncate-then-write.
_NAIVE_CHILD = """\
import base64, json, urllib.error, urllib.request
wait_at_barrier()
path = os.path.join(os.environ["CODEX_HOME"], "auth.json")
try:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    tokens = doc["tokens"]
    payload = tokens["access_token"].split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    if exp < time.time() + 300:
        body = json.dumps({
            "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "openid profile email",
        }).encode()
        request = urllib.request.Request(
            os.environ["CODEX_REFRESH_TOKEN_URL_OVERRIDE"],
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                new = json.load(response)
        except urllib.error.HTTPError as exc:
            error = json.load(exc).get("error") or {}
            print("FAIL", error.get("code") if isinstance(error, dict) else error)
            sys.exit(1)
        tokens.update({k: v for k, v in new.items() if k in tokens})
        with open(path, "w", encoding="utf-8") as f:  # truncate, then write
            json.dump(doc, f, indent=2)
except Exception as exc:  # a torn read, mostly; the class name holds no token
    print("FAIL", type(exc).__name__)
    sys.exit(1)
report(tokens["access_token"])
"""


# The wrapper pip generates for a console_scripts entry point.
_CONSOLE_SCRIPT = """\
import re
import sys
from codexauth import _program
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(_program())
"""


def child_env(codex_home: Path, token_url: str, pyc_dir: str, *, no_site: bool = False) -> dict:
    """py_env() plus a private bytecode cache; with `no_site`, site-packages by PYTHONPATH."""
    env = py_env(codex_home, token_url)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pyc_dir
    if no_site:  # python -S skips site and its .pth hooks; keep the packages importable
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], *site.getsitepackages()])
    return env


class Outcome:
    """What one race produced: times, fingerprints and failures, never a token."""

    def __init__(
        self, results: Sequence[subprocess.CompletedProcess[str]], wall: float, after: float
    ) -> None:
        self.wall = wall  # first spawn to last exit
        self.after = after  # release to last exit
        self.done: list[float] = []
        self.fps: list[str] = []
        self.failures: Counter[str] = Counter()
        for result in results:
            code, out, err = result.returncode, result.stdout, result.stderr
            words = out.split()
            if code == 0 and len(words) == 3 and words[0] == "OK":
                self.done.append(float(words[1]))
                self.fps.append(words[2])
            elif words[:1] == ["FAIL"]:
                self.failures[" ".join(words[1:2]) or "?"] += 1
            else:  # a crash: name the exception class only
                last = (err.strip().splitlines() or [f"exit {code}"])[-1]
                self.failures[re.split(r"[:\s]", last, maxsplit=1)[0][:40]] += 1

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def spread(self) -> float:
        return max(self.done) - min(self.done) if self.done else float("nan")


def race(env: dict, scripts: Sequence[str]) -> Outcome:
    """Run `scripts` as children released together; every wait is bounded by CHILD_TIMEOUT."""
    with Racers(env) as racers:
        started = time.monotonic()
        for script in scripts:
            racers.spawn(code=_PRELUDE + script)
        released = racers.release(ready_timeout=CHILD_TIMEOUT)
        results = racers.finish(timeout=CHILD_TIMEOUT)
        end = time.monotonic()
    return Outcome(results, end - started, end - released)


# Helpers #######################################################################


@contextlib.contextmanager
def codex_home(parent: str, name: str) -> Iterator[Path]:
    home = Path(parent) / name
    home.mkdir(mode=0o700)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def expire(home: Path, refresh: str = "rt-0") -> None:
    write_auth_json(home, access=access_token(time.time() - 60), refresh=refresh)


def stored(home: Path) -> tuple[str | None, str | None]:
    """fp of the stored access token, and the refresh token itself (never printed)."""
    auth = codexauth.load_auth_dot_json(home)
    if auth is None or auth.tokens is None:
        return None, None
    return fp(auth.tokens.access_token), auth.tokens.refresh_token


def wait_out_racy_window(path: Path) -> None:
    """Sleep until `path`'s ctime is older than codexauth.RACY_STAT_WINDOW (bounded)."""
    limit = codexauth.RACY_STAT_WINDOW + 0.05
    for _ in range(100):
        age = (time.time_ns() - os.stat(path).st_ctime_ns) / 1e9
        if age > limit:
            return
        time.sleep(min(limit - age + 0.01, 0.5))
    raise RuntimeError(f"{path} never aged past the racy-stat window")


def run_timed(argv: Sequence[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    return time.perf_counter() - started, result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def same(values: Sequence[Any]) -> str:
    """One value if all repeats agree, else all of them."""
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def importtime(stderr: str) -> dict[str, int]:
    """{module: self µs} for every import, nested too, in `-X importtime` output."""
    rows = {}
    for line in stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            rows[parts[2].strip()] = int(parts[0].split(":")[1])
    return rows


# 1. Warm path, whole process ###################################################


def user_venv(tmp: str) -> Path:
    """A fresh venv, as a user has after `pip install codexauth`: site runs, with nothing
    in site-packages but a .pth line naming this tree (and, for `import requests`, this
    interpreter's packages). Not this interpreter: an editable install's finder or a
    coverage hook in its site-packages would import half the stdlib before either side
    of the comparison starts."""
    venv = Path(tmp) / "user-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    packages = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    lines = [str(REPO_ROOT), *site.getsitepackages()]
    (Path(packages) / "codexauth-bench.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return python


def bench_process(tmp: str, pyc_dir: str, runs: int) -> list[str]:
    out = ["1. Warm path, whole process: median wall time, runs interleaved, in a fresh venv"]
    python = str(user_venv(tmp))
    with codex_home(tmp, "warm") as home:
        write_auth_json(home)  # an access token valid for an hour
        expected = fp(codexauth.load_auth_dot_json(home).tokens.access_token)
        # What pip writes for the `codexauth` console script, run against this tree.
        script = Path(tmp) / "codexauth-script.py"
        script.write_text(_CONSOLE_SCRIPT, encoding="utf-8")
        vendored = Path(tmp) / "vendored" / "codexauth.py"
        vendored.parent.mkdir()
        shutil.copy(REPO_ROOT / "codexauth.py", vendored)
        commands = {
            "script": [script, "token"],
            "-m": ["-m", "codexauth", "token"],
            "by-path": [vendored, "token"],
            "eager": ["-c", "import " + ", ".join(EAGER)],
            "json": ["-c", "import json"],
        }
        labels = {
            "script": "codexauth token (pip's console-script wrapper)",
            "-m": "python -m codexauth token",
            "by-path": "python vendored/codexauth.py token",
            "eager": f'python -c "import {", ".join(EAGER)}"',
            "json": 'python -c "import json"',
        }
        env = child_env(home, codexauth.REFRESH_TOKEN_URL, pyc_dir)
        del env["PYTHONPATH"]  # the venv's .pth line finds the tree, after the stdlib
        times: dict[str, list[float]] = {key: [] for key in commands}
        bad = []
        for i in range(runs + 2):  # two warm-up rounds fill the bytecode cache
            for key, args in commands.items():
                elapsed, result = run_timed([python, *map(str, args)], env)
                if result.returncode != 0:
                    bad.append(f"{key}: exit {result.returncode}")
                if key in ("script", "-m", "by-path") and fp(result.stdout.strip()) != expected:
                    bad.append(f"{key}: printed another token")
                if i >= 2:
                    times[key].append(elapsed)

        # The same commands once more, watched: which modules did they import?
        traced = {
            key: run_timed([python, "-X", "importtime", *map(str, commands[key])], env)[1].stderr
            for key in ("script", "-m", "json")
        }
        lock_created = (home / codexauth.LOCK_FILE_NAME).exists()

    med = {key: statistics.median(values) * 1000 for key, values in times.items()}
    for key, label in labels.items():
        out.append(f"   {label:<56}{med[key]:>7.1f} ms")
    for key, who in (("script", "script"), ("-m", "-m")):
        for name, other, target in (
            ("eager", "eager imports", TARGET_VS_EAGER),
            ("json", "import json", TARGET_VS_JSON),
        ):
            ratio = med[key] / med[name]
            out.append(
                f"   {f'ratio {who} / {other}':<42}{f'target <= {target}':>14}"
                f"{ratio:>6.2f} {verdict(ratio, target)}"
            )
    out.append(
        f"   ratio by-path / import json (no target: Python compiles a script run by its"
        f" path on every start) {med['by-path'] / med['json']:.2f}"
    )

    # Every line, nested imports too: a dependency imported by a dependency still counts.
    every = {
        line.split("|")[2].strip().split(".")[0]
        for key, stderr in traced.items()
        if key != "json"
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    found = sorted(every & set(EAGER))
    out.append(
        f"   warm path imported {', '.join(found) if found else 'none'} of {', '.join(EAGER)}"
        f"; lock file created: {'yes' if lock_created else 'no'}"
        f"; token printed matches auth.json: {'no: ' + '; '.join(bad[:3]) if bad else 'yes'}"
    )
    by_json = importtime(traced["json"])
    for key in ("script", "-m"):
        extra = sorted(
            ((name, us) for name, us in importtime(traced[key]).items() if name not in by_json),
            key=lambda row: -row[1],
        )
        out.append(
            f"   imports of {key} beyond `import json`, self time: "
            + ", ".join(f"{name} {us / 1000:.1f}" for name, us in extra[:8])
            + " ms"
        )
    return out


# 2. Warm path in process ########################################################


def bench_in_process(tmp: str, calls: int) -> list[str]:
    out = [f"2. Warm path in process: {calls} calls each, per-call latency"]
    with codex_home(tmp, "inproc") as home:
        path = write_auth_json(home)
        wait_out_racy_window(path)
        auth = codexauth.CodexAuth(home)
        candidates = {
            "CodexAuth.get_token()": auth.get_token,
            "codexauth.get_token(home)": lambda: codexauth.get_token(home),
            "os.stat(auth.json), for scale": lambda: os.stat(path),
        }
        rows = []
        for label, call in candidates.items():
            call()  # the first call reads and parses the file
            samples = []
            clock = time.perf_counter_ns
            for _ in range(calls):
                started = clock()
                call()
                samples.append(clock() - started)
            rows.append(
                (label, statistics.median(samples) / 1000, percentile(samples, 0.99) / 1000)
            )

        # A peer's write must show at once, trusted snapshot or not.
        before = fp(auth.get_token())
        write_auth_json(home)  # a new access token, atomically
        after = fp(auth.get_token())
        expected = stored(home)[0]
        fresh = after == expected and after != before

    out.append(f"   {'':<40}{'median':>10}{'p99':>10}")
    for label, median, p99 in rows:
        mark = (
            f"  target <= {TARGET_IN_PROCESS_US:g} us {verdict(median, TARGET_IN_PROCESS_US)}"
            if "get_token" in label
            else ""
        )
        out.append(f"   {label:<40}{median:>7.2f} us{p99:>7.2f} us{mark}")
    out.append(
        f"   new token seen on the first call after a peer's write: {'yes' if fresh else 'NO'}"
    )
    return out


# 3. Waiters ####################################################################


def bench_waiters(tmp: str, pyc_dir: str, repeats: int, delay: float) -> list[str]:
    out = [
        f"3. Waiters: {WAITERS} processes released together, expired token, "
        f"server delay {delay:g} s ({repeats} repeats)"
    ]
    # The refresh imports are paid before the barrier: this measures waking, not importing.
    script = _CODEXAUTH_CHILD.format(pre_import="import requests")
    # The same herd with nothing to wait for: how far apart as many processes finish on
    # this machine, now, when they all become runnable at once.
    herd = _CODEXAUTH_CHILD.format(pre_import="")
    spreads, herds, lags, posts, failed, tokens = [], [], [], [], [], []
    offsets: list[float] = []
    for i in range(repeats):
        with TokenServer() as server, codex_home(tmp, f"waiters{i}") as home:
            server.delay = delay
            expire(home)
            outcome = race(child_env(home, server.url, pyc_dir), [script] * WAITERS)
            written = os.stat(home / codexauth.AUTH_FILE_NAME).st_mtime
            stored_fp = stored(home)[0]
            spreads.append(outcome.spread * 1000)
            lags.append((max(outcome.done, default=written) - written) * 1000)
            posts.append(server.post_count)
            failed.append(outcome.failed + sum(f != stored_fp for f in outcome.fps))
            tokens.append(len(set(outcome.fps)))
            if spreads[-1] >= max(spreads):
                offsets = [(t - min(outcome.done)) * 1000 for t in sorted(outcome.done)]
        with TokenServer() as server, codex_home(tmp, f"herd{i}") as home:
            write_auth_json(home)
            herds.append(race(child_env(home, server.url, pyc_dir), [herd] * WAITERS).spread)
    median, worst = statistics.median(spreads), max(spreads)
    out.append(
        f"   finish-time spread: median {median:.1f} ms {verdict(median, TARGET_SPREAD_MS)},"
        f" worst {worst:.1f} ms {verdict(worst, TARGET_SPREAD_MS)}"
        f"  (target <= {TARGET_SPREAD_MS:g} ms)"
    )
    out.append("   finish offsets in the worst run, ms: " + " ".join(f"{t:.0f}" for t in offsets))
    out.append(
        f"   last finish after the refresher's write: median {statistics.median(lags):.0f} ms;"
        f" same herd reading a fresh token (no waiting): spread median"
        f" {statistics.median(herds) * 1000:.1f} ms"
    )
    out.append(
        f"   POSTs {same(posts)}  failed or wrong token {same(failed)}"
        f"  distinct tokens {same(tokens)}"
        f"  {'PASS' if set(posts) == {1} and set(failed) == {0} else 'MISS'}"
    )
    return out


# 4. Scale ######################################################################


def bench_scale(
    tmp: str, pyc_dir: str, sizes: Sequence[int], repeats: int, delay: float
) -> list[str]:
    out = [
        f"4. Scale: N processes released together, server delay {delay:g} s "
        f"({repeats} repeats; wall = first spawn to last exit, median)"
    ]
    modes = {
        "fresh read": ("fresh", _CODEXAUTH_CHILD.format(pre_import="")),
        "codexauth, expired": ("expired", _CODEXAUTH_CHILD.format(pre_import="")),
        "naive, expired": ("expired", _NAIVE_CHILD),
    }
    results: dict[tuple[int, str], list[tuple[Outcome, int, int, bool]]] = {}
    for rep in range(repeats):
        for n in sizes:
            for mode, (start, script) in modes.items():
                with TokenServer() as server, codex_home(tmp, f"scale{rep}-{n}") as home:
                    server.delay = delay
                    if start == "fresh":
                        write_auth_json(home)
                    else:
                        expire(home)
                    outcome = race(child_env(home, server.url, pyc_dir), [script] * n)
                    stored_access, stored_refresh = stored(home)
                    wrong = sum(f != stored_access for f in outcome.fps)
                    alive = stored_refresh in server.valid or (
                        start == "fresh" and server.post_count == 0
                    )
                    results.setdefault((n, mode), []).append(
                        (outcome, server.post_count, wrong, alive)
                    )

    header = (
        f"   {'N':>3}  {'mode':<20}{'POSTs':>9}{'failed':>9}{'stale':>7}"
        f"{'login':>7}{'wall':>10}{'after barrier':>15}"
    )
    out.append(header)
    notes = []
    for n in sizes:
        for mode in modes:
            runs = results[n, mode]
            wall = statistics.median(o.wall for o, _, _, _ in runs) * 1000
            after = statistics.median(o.after for o, _, _, _ in runs) * 1000
            out.append(
                f"   {n:>3}  {mode:<20}{same([p for _, p, _, _ in runs]):>9}"
                f"{same([o.failed for o, _, _, _ in runs]):>9}"
                f"{same([w for _, _, w, _ in runs]):>7}"
                f"{same(['ok' if a else 'dead' for _, _, _, a in runs]):>7}"
                f"{wall:>7.0f} ms{after:>12.0f} ms"
            )
            kinds = sum((o.failures for o, _, _, _ in runs), Counter())
            if kinds:
                listed = ", ".join(f"{k} x{v}" for k, v in kinds.most_common())
                notes.append(f"N={n} {mode}: {listed}")
    out.append(
        "   failed: exited non-zero; stale: succeeded with a token other than the one stored"
        " at the end;\n   login: the refresh token left in auth.json still works (this server"
        " keeps it valid after a reuse; after refresh_token_reused Codex says sign in again)"
    )
    out.extend(f"   failures, all repeats, {note}" for note in notes)
    top = max(sizes)
    expired = statistics.median(o.wall for o, _, _, _ in results[top, "codexauth, expired"])
    fresh = statistics.median(o.wall for o, _, _, _ in results[top, "fresh read"])
    ok = all(
        p == 1 and o.failed == 0 and w == 0 and a
        for n in sizes
        for o, p, w, a in results[n, "codexauth, expired"]
    )
    out.append(
        f"   ratio codexauth-expired / fresh-read wall at N={top}: {expired / fresh:.2f}"
        f"  target <= {TARGET_SCALE_RATIO:g} {verdict(expired / fresh, TARGET_SCALE_RATIO)}"
        f"; codexauth 1 POST and every process correct at every N: {'yes' if ok else 'NO'}"
    )
    return out


def warm_up(tmp: str, pyc_dir: str) -> None:
    """Run every kind of child once, untimed, so that all of them start from cached bytecode."""
    scripts = {
        "fresh": _CODEXAUTH_CHILD.format(pre_import="import " + ", ".join(EAGER)),
        "expired": _CODEXAUTH_CHILD.format(pre_import=""),
        "naive": _NAIVE_CHILD,
    }
    for name, script in scripts.items():
        with TokenServer() as server, codex_home(tmp, f"warm-up-{name}") as home:
            if name == "fresh":
                write_auth_json(home)
            else:
                expire(home)
            outcome = race(child_env(home, server.url, pyc_dir), [script])
            if outcome.failed:
                raise RuntimeError(f"warm-up child {name} failed: {dict(outcome.failures)}")


# Main ##########################################################################


def machine_info() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    env_note = (
        "PYTHONDONTWRITEBYTECODE is set here; children use a private bytecode cache instead"
        if os.environ.get("PYTHONDONTWRITEBYTECODE")
        else "children use a private bytecode cache"
    )
    return [
        f"machine: nproc {os.cpu_count()} (usable {affinity}), {platform.machine()},"
        f" {platform.system()} {platform.release()}, load average {load}",
        f"python: {platform.python_implementation()} {platform.python_version()}"
        f" ({sys.executable}); {env_note}",
        f"codexauth: {codexauth.__version__} from {codexauth.__file__}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and processes")
    parser.add_argument(
        "--delay", type=float, default=0.2, help="token server delay for the waiters, s"
    )
    parser.add_argument(
        "--scale-delay", type=float, default=0.0, help="token server delay for scale, s"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("process", "inproc", "waiters", "scale"),
        help="run only this section (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        runs, calls, waiter_repeats, sizes, repeats = 10, 5000, 1, (1, 4, 16), 1
    else:
        runs, calls, waiter_repeats, sizes, repeats = 30, 20000, 3, (1, 4, 16, 64), 2

    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    lines = [f"codexauth benchmark ({mode} mode, python benchmarks/bench.py)", *machine_info()]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="codexauth-bench-") as tmp:
        pyc_dir = os.path.join(tmp, "pycache")
        warm_up(tmp, pyc_dir)
        sections = {
            "process": lambda: bench_process(tmp, pyc_dir, runs),
            "inproc": lambda: bench_in_process(tmp, calls),
            "waiters": lambda: bench_waiters(tmp, pyc_dir, waiter_repeats, args.delay),
            "scale": lambda: bench_scale(tmp, pyc_dir, sizes, repeats, args.scale_delay),
        }
        for name, section in sections.items():
            if not args.only or name in args.only:
                print("\n" + "\n".join(section()), flush=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"\ntotal {time.monotonic() - started:.1f} s; load average at the end {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
