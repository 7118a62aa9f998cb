# ruff: noqa: E501  # the snippets are codexauth.py lines, exactly as written there
"""Hand-written mutants of codexauth.py's protocol, state, write and lock code: does the
test suite notice each real-bug-shaped change?

    python benchmarks/mutants.py                 # every mutant, each against its own tests
    python benchmarks/mutants.py --only D1,S2    # some of them
    python benchmarks/mutants.py --suite fast    # each against the whole fast suite
    python benchmarks/mutants.py --list          # what the mutants are

The repository is copied to a temporary directory once; each mutant is applied there to a
pristine codexauth.py by an exact, unique replacement (a snippet that is not found, or found
twice, is an error: the mutant no longer fits the code), its tests run with a timeout, and
the file is put back.  A mutant is killed when the tests fail (or time out), survives when
they pass.  The working tree is never touched.  Not run in CI: it takes a while.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
MODULE = "codexauth.py"
FAST = ["-m", "not slow", "tests"]


class Mutant(NamedTuple):
    id: str
    description: str
    old: str  # exact text in codexauth.py, found once
    new: str
    tests: list[str]  # pytest arguments: node ids, files, "-k EXPR"


PARSING = "tests/test_parsing.py"
STORE = "tests/test_store.py"
REFRESH = "tests/test_refresh.py"
FAULTS = "tests/test_faults.py"
KILLS = "tests/test_kill_points.py"
DECIDE = "-k decide or settle"  # the decision and settle tables, in test_parsing.py

MUTANTS = [
    # _decide: the protocol's one decision ####################################
    Mutant(
        "D1",
        "_decide: no account check (another account's tokens adopted or refreshed)",
        "if current is None or expected is None or _account(current) != expected:",
        "if current is None:",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D2",
        "_decide: state trusted about a token no longer stored (no fingerprint comparison)",
        "if not state.fingerprint or state.fingerprint != _fingerprint(current.refresh_token):",
        "if not state.fingerprint:",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D3",
        "_decide: DEAD before the reuse window ends (no wait for a lockless peer)",
        "    if state.peer_until > now:\n",
        "    if False:\n",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D4",
        "_decide: retry_after ignored (no backoff after a transient failure)",
        "left = _remaining(state.retry_after, now, TRANSIENT_BACKOFF)",
        "left = 0.0",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D5",
        "_decide: sent_until ignored (a flight in progress elsewhere is POSTed over)",
        "    if state.sent_until > now:\n",
        "    if False:\n",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D6",
        "_decide: ADOPT without `usable` (a peer's expired tokens adopted)",
        "if current.refresh_token != start.refresh_token and usable:",
        "if current.refresh_token != start.refresh_token:",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D7",
        "_decide: a remembered permanent failure ignored (no fail-fast)",
        "    if state.reason is not None:\n        return _Action.FAIL",
        "    if False:\n        return _Action.FAIL",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D8",
        "_decide: peer_until trusted beyond REUSE_WINDOW (a clock far ahead blocks everyone)",
        "min(state.peer_until, now + REUSE_WINDOW)",
        "state.peer_until",
        [PARSING, DECIDE],
    ),
    Mutant(
        "D9",
        "_decide: sent_until trusted beyond MAX_REQUEST_WAIT",
        "min(state.sent_until, now + MAX_REQUEST_WAIT)",
        "state.sent_until",
        [PARSING, DECIDE],
    ),
    # _settle / _holds: whether an outbox is still to be committed ############
    Mutant(
        "S1",
        "_holds: account ignored (an outbox committed over another account's login)",
        "        and _account(tokens) == account\n",
        "",
        [f"{PARSING}::test_settle", STORE],
    ),
    Mutant(
        "S2",
        "_settle: no login treated as 'commit' (an outbox undoes a logout)",
        "    return _holds(current, record.spent, record.account)",
        "    return current is None or _holds(current, record.spent, record.account)",
        [f"{PARSING}::test_settle", STORE],
    ),
    Mutant(
        "S3",
        "_settle: compared with the new token instead of the spent one",
        "    return _holds(current, record.spent, record.account)",
        "    assert record.auth.tokens is not None\n"
        "    new = _fingerprint(record.auth.tokens.refresh_token)\n"
        "    return _holds(current, new, record.account)",
        [f"{PARSING}::test_settle", STORE],
    ),
    Mutant(
        "S4",
        "_holds: an account with no id taken to be the same account",
        "        and account is not None\n",
        "",
        [PARSING, DECIDE],
    ),
    # _Outbox #################################################################
    Mutant(
        "O1",
        "_post_and_commit: outbox put after the commit instead of before",
        "            self.store.outbox.put(record)  # first: the answer is the only copy until then\n"
        '            _log(_DEBUG, "refresh succeeded; storing it in %s", self.store.location)\n'
        "            self._snapshot = self._commit(record, None)\n",
        "            self._snapshot = self._commit(record, None)\n"
        "            self.store.outbox.put(record)\n",
        [f"{STORE}::test_every_write_is_on_disk_before_the_next_step", STORE, KILLS],
    ),
    Mutant(
        "O2",
        "_write_new: no fsync of the new file before its rename",
        "            _write_all(fd, data)\n            os.fsync(fd)\n",
        "            _write_all(fd, data)\n",
        [f"{STORE}::test_every_write_is_on_disk_before_the_next_step"],
    ),
    Mutant(
        "O3",
        "_Outbox.clear: removes any record, not only its own",
        "if found is None or (found.spent, found.auth) == (record.spent, record.auth):",
        "if True:",
        [STORE],
    ),
    Mutant(
        "O4",
        "_Outbox.load: the fallback path (runtime dir, a full disk) ignored",
        "        for path in self.paths():\n            data = _read_sidecar(path, MAX_AUTH_FILE_BYTES * 2)\n"
        "            if data is not None:\n",
        "        for path in self.paths()[:1]:\n"
        "            data = _read_sidecar(path, MAX_AUTH_FILE_BYTES * 2)\n"
        "            if data is not None:\n",
        [f"{STORE}::test_a_full_disk_after_the_post_loses_no_tokens", STORE],
    ),
    Mutant(
        "O5",
        "_Outbox.prepare: temp files a killed outbox writer left are not removed",
        "        for path in self.paths():\n            _remove_temps_of(path)\n",
        "",
        [f"{STORE}::test_temp_files_a_killed_outbox_writer_left_are_removed", STORE, KILLS],
    ),
    Mutant(
        "O6",
        "_Outbox.nearby: the in-memory record (nothing could be written) ignored",
        "            self._memory is not None\n            or self.where is not None\n",
        "            self.where is not None\n",
        [f"{STORE}::test_a_login_only_memory_could_hold_is_stored_once_the_disk_takes_it", STORE],
    ),
    Mutant(
        "O7",
        "_Outbox.put: an older record at the other path is left behind",
        "                    with contextlib.suppress(OSError):\n"
        "                        os.unlink(other)  # an older record: this one replaces it\n",
        "                    pass\n",
        [STORE],
    ),
    # FileStore: the write ####################################################
    Mutant(
        "W1",
        "_write_file: always in place (a reader meets half a file)",
        "if st is not None and _is_mount_point(target):",
        "if st is not None:",
        [STORE, KILLS],
    ),
    Mutant(
        "W2",
        "_write_new: no fsync of the directory after the rename",
        "        raise\n    _fsync_dir(directory)\n",
        "        raise\n",
        [f"{STORE}::test_every_rename_is_on_disk_before_the_next_step"],
    ),
    Mutant(
        "W3",
        "_write_file: temp files a killed writer left are never removed",
        "        _remove_temps_of(target)\n        if st is not None and _is_mount_point(target):",
        "        if st is not None and _is_mount_point(target):",
        [STORE, FAULTS],
    ),
    Mutant(
        "W4",
        "_write_file: the owner is not kept when run as root",
        "_write_new(target, data, st or owner)",
        "_write_new(target, data, None)",
        [f"{FAULTS}::test_a_refresh_run_as_root_leaves_the_users_files_theirs", FAULTS],
    ),
    Mutant(
        "W5",
        "_write_new: the new file is created 0644, not 0600",
        "fd = _open_regular(tmp, flags, 0o600)",
        "fd = _open_regular(tmp, flags, 0o644)",
        [STORE],
    ),
    Mutant(
        "W6",
        "Store.commit: no comparison, always writes (a logout or switch undone)",
        "        if not _holds(current, spent, account):\n            return False, current\n",
        "",
        [STORE, REFRESH],
    ),
    Mutant(
        "W7",
        "_write_in_place: no truncate (a shorter file keeps a stale tail)",
        "        _pwrite_all(fd, data, 0)\n        os.ftruncate(fd, len(data))\n",
        "        _pwrite_all(fd, data, 0)\n",
        [STORE],
    ),
    # CodexAuth: the protocol #################################################
    Mutant(
        "C1",
        "_read_settled: the outbox is not settled under the lock",
        "        record = self.store.outbox.load()\n        if record is None:\n"
        "            return snapshot, state\n",
        "        record = None\n        if record is None:\n            return snapshot, state\n",
        [STORE, KILLS],
    ),
    Mutant(
        "C2",
        "_commit: the outbox dropped when the store cannot be written",
        "            return _Snapshot(record.auth, replaces=record.spent)\n"
        "        self.store.outbox.clear(record)\n",
        "            self.store.outbox.clear(record)\n"
        "            return _Snapshot(record.auth, replaces=record.spent)\n"
        "        self.store.outbox.clear(record)\n",
        [f"{STORE}::test_a_full_disk_after_the_post_loses_no_tokens", STORE],
    ),
    Mutant(
        "C3",
        "_post_and_commit: the commit keyed on the POSTed token, not snapshot.replaces",
        "spent = snapshot.replaces or _fingerprint(refresh_token)",
        "spent = _fingerprint(refresh_token)",
        [f"{STORE}::test_a_pair_no_file_could_take_is_refreshed_from_its_own_token", STORE],
    ),
    Mutant(
        "C4",
        "_post_and_commit: peer_until recorded without the window (reused -> dead at once)",
        "peer_until=self._now() + REUSE_WINDOW",
        "peer_until=self._now()",
        [REFRESH],
    ),
    Mutant(
        "C5",
        "_await_peer: returns at once (busy re-reads, the deadline never checked)",
        "        end = time.monotonic() + max(until - self._now(), 0.0)\n",
        "        return\n        end = time.monotonic() + max(until - self._now(), 0.0)\n",
        [
            f"{REFRESH}::test_a_wait_for_a_peers_result_ends_at_the_lock_timeout_as_transient",
            REFRESH,
        ],
    ),
    Mutant(
        "C6",
        "logout: the outbox is not cleared (a refresh not yet stored undoes the logout)",
        "            if record is not None:\n"
        "                self.store.outbox.clear(record)  # a logout wins over a refresh not yet stored\n",
        "",
        [KILLS, STORE, REFRESH],
    ),
    Mutant(
        "C7",
        "_require: no settling before 'not logged in'",
        "if snapshot is None and self.store.outbox.nearby():",
        "if False:",
        [STORE, KILLS],
    ),
    Mutant(
        "C8",
        "_credentials: a due outbox is not settled (a fresh-looking spent login served)",
        "        snapshot = self._require()\n        if self._outbox_due:\n"
        "            with contextlib.suppress(LockTimeoutError):  # a peer is at it: it settles it\n"
        "                snapshot = self._settled()\n        auth = snapshot.auth\n",
        "        snapshot = self._require()\n        auth = snapshot.auth\n",
        [f"{STORE}::test_a_fresh_token_reader_settles_a_waiting_outbox", STORE],
    ),
    Mutant(
        "C9",
        "_post_and_commit: the clock skew recorded before the outbox (a longer window)",
        "        with _interrupts_deferred():\n"
        "            self.store.outbox.put(record)  # first: the answer is the only copy until then\n",
        "        if skew is not None and skew != self.store.clock_skew():\n"
        "            self.store.record_clock_skew(skew)\n"
        "        with _interrupts_deferred():\n"
        "            self.store.outbox.put(record)  # first: the answer is the only copy until then\n",
        [f"{KILLS}::test_the_window_holds_only_the_answer_and_the_outbox_write", KILLS],
    ),
    Mutant(
        "C10",
        "_read: an outbox laid over the login whatever the store holds (a logout undone)",
        "if record is not None and _settle(record, snapshot):",
        "if record is not None:",
        [STORE, KILLS],
    ),
    Mutant(
        "C11",
        "_post_and_commit: a transient failure not recorded (no shared backoff)",
        "            self.store.record(refresh_token, retry_after=self._now() + TRANSIENT_BACKOFF)\n",
        "",
        [REFRESH],
    ),
    Mutant(
        "C12",
        "_post_and_commit: a permanent failure not recorded (peers spend it again)",
        "            self.store.record(refresh_token, reason=exc.reason)\n            raise\n",
        "            raise\n",
        [REFRESH],
    ),
    Mutant(
        "C13",
        "_refresh: DEAD raised without recording EXHAUSTED",
        "                self.store.record(spent, reason=RefreshTokenFailedReason.EXHAUSTED)\n",
        "                pass\n",
        [f"{REFRESH}::test_a_dead_login_is_remembered_so_the_next_caller_fails_fast", REFRESH],
    ),
    # The lock ################################################################
    Mutant(
        "L1",
        "_after_fork_in_child: the child keeps its copies of the parent's lock files",
        "    for fd in list(_held_files):\n        with contextlib.suppress(OSError):\n"
        "            os.close(fd)\n    _held_files.clear()\n",
        "",
        [f"{FAULTS}::test_a_forked_child_neither_keeps_nor_inherits_the_refresh_lock"],
    ),
    Mutant(
        "L2",
        "_after_fork_in_child: the thread locks are kept (the child believes it holds them)",
        "    _thread_locks.clear()\n    _thread_locks_guard = _thread.allocate_lock()\n",
        "    _thread_locks_guard = _thread.allocate_lock()\n",
        [
            f"{FAULTS}::test_a_fork_while_another_thread_takes_the_lock_leaves_the_child_holding_nothing",
            FAULTS,
        ],
    ),
    Mutant(
        "L3",
        "_try_lock: every OSError (ENOLCK) taken for 'held by another'",
        "            except BlockingIOError:\n                return False\n            return True\n",
        "            except OSError:\n                return False\n            return True\n",
        [f"{FAULTS}::test_a_filesystem_without_locks_is_an_error_not_a_wait", FAULTS],
    ),
    Mutant(
        "L4",
        "_try_all: no re-check that the path still names the locked file",
        "locked = _try_lock(fd, path) and _same_file(fd, path)",
        "locked = _try_lock(fd, path)",
        [
            f"{FAULTS}::test_a_lock_file_replaced_between_its_open_and_its_lock_is_locked_again",
            FAULTS,
        ],
    ),
    Mutant(
        "L5",
        "_ReleaseWatch.pause: never watches (waiters poll the lock, as before)",
        "        if self._woken is None:\n            self._woken = _watch_release(self._paths)\n",
        "",
        [f"{FAULTS}::test_a_lock_wait_is_woken_by_the_release_not_by_a_poll", FAULTS],
    ),
    Mutant(
        "L8",
        "_watch_release: the watching thread's file not registered (a fork's child keeps it)",
        "                _held_files.add(fd)\n                _thread.start_new_thread",
        "                _thread.start_new_thread",
        [f"{FAULTS}::test_a_child_forked_during_a_watch_keeps_no_shared_lock"],
    ),
    Mutant(
        "L6",
        "release: the thread lock on the key is never released",
        "            self._threads.release()\n            with _held_files_guard:\n",
        "            with _held_files_guard:\n",
        [REFRESH],
    ),
    Mutant(
        "L7",
        "_try_all: already-taken locks kept when a later one is busy (no _close_all)",
        "            if not locked:\n                _held_files.discard(fd)\n"
        "                os.close(fd)\n                self._close_all()\n",
        "            if not locked:\n                _held_files.discard(fd)\n"
        "                os.close(fd)\n",
        [f"{FAULTS}::test_a_wait_for_auth_json_keeps_auth_lock_free_for_the_codex_cli", FAULTS],
    ),
    # State ###################################################################
    Mutant(
        "T1",
        "FileStore._save_state: the clock skew dropped when peers are told something",
        "        state.clock_skew = self.local_state().clock_skew  # this machine's: kept\n",
        "",
        [f"{REFRESH}::test_the_clock_skew_survives_telling_peers_of_a_failure", REFRESH],
    ),
    Mutant(
        "T2",
        "Store.record: any error raised (a refresh fails because peers could not be told)",
        "            self._save_state(state)\n"
        "        except CodexAuthError as exc:\n"
        '            _log(_WARNING, "could not tell peers: %s", exc)',
        "            self._save_state(state)\n        except CodexAuthError as exc:\n            raise",
        [
            f"{REFRESH}::test_a_state_file_that_cannot_be_written_does_not_change_the_outcome",
            REFRESH,
        ],
    ),
    Mutant(
        "T3",
        "RedisStore.record: only AuthFileError tolerated (Redis unreachable fails the refresh)",
        "        except CodexAuthError as exc:\n"
        '            _log(_WARNING, "could not tell peers: %s", exc)\n            return\n',
        "        except AuthFileError as exc:\n"
        '            _log(_WARNING, "could not tell peers: %s", exc)\n            return\n',
        ["tests/test_redis_store.py"],
    ),
    Mutant(
        "T4",
        "FileStore.save_local_state: starts from an empty state (peers' facts wiped)",
        "        state = self.local_state()\n        state.clock_skew = skew\n",
        "        state = _SharedState()\n        state.clock_skew = skew\n",
        [REFRESH],
    ),
]


def apply(source: str, mutant: Mutant) -> str:
    count = source.count(mutant.old)
    if count != 1:
        where = "not found" if count == 0 else f"found {count} times"
        raise SystemExit(f"mutant {mutant.id}: its snippet is {where} in {MODULE}")
    return source.replace(mutant.old, mutant.new)


def copy_repo(into: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".git", ".tox", ".ci-venv*", "__pycache__", ".pytest_cache", ".mypy_cache", "*.egg-info"
    )
    target = into / "repo"
    shutil.copytree(REPO, target, symlinks=True, ignore=ignore)
    return target


def run_tests(repo: Path, args: list[str], timeout: float) -> tuple[str, float]:
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    start = time.monotonic()
    try:
        result = subprocess.run(
            argv, cwd=repo, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return "killed (timeout)", time.monotonic() - start
    elapsed = time.monotonic() - start
    if result.returncode == 0:
        return "survived", elapsed
    if result.returncode == 1:
        return "killed", elapsed
    # 2: interrupted or a collection error, 5: no tests ran: the selection is broken.
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-5:])
    raise SystemExit(f"pytest exited {result.returncode} for {args}:\n{tail}")


def pytest_args(mutant: Mutant, suite: str) -> list[str]:
    if suite == "fast":
        return FAST
    args: list[str] = []
    for test in dict.fromkeys(mutant.tests):
        args += test.split(" ", 1) if test.startswith("-k ") else [test]
    return ["-m", "not slow", *args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant ids")
    parser.add_argument(
        "--suite",
        choices=["own", "fast"],
        default="own",
        help="each mutant's own tests (default), or the whole fast suite",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        wanted = [m.strip() for m in args.only.split(",") if m.strip()]
        unknown = set(wanted) - {m.id for m in MUTANTS}
        if unknown:
            parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
        mutants = [m for m in MUTANTS if m.id in wanted]
    pristine = (REPO / MODULE).read_text(encoding="utf-8")
    for mutant in mutants:
        apply(pristine, mutant)  # every snippet still fits, before anything runs
    if args.list:
        for mutant in mutants:
            print(f"{mutant.id:4} {mutant.description}")
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="codexauth-mutants-") as tmp:
        repo = copy_repo(Path(tmp))
        module = repo / MODULE
        for mutant in mutants:
            module.write_text(apply(pristine, mutant), encoding="utf-8")
            try:
                outcome, elapsed = run_tests(repo, pytest_args(mutant, args.suite), args.timeout)
            finally:
                module.write_text(pristine, encoding="utf-8")
            rows.append((mutant, outcome))
            print(f"{mutant.id:4} {outcome:17} {elapsed:6.1f} s  {mutant.description}", flush=True)

    killed = sum(outcome.startswith("killed") for _, outcome in rows)
    print()
    print(f"{'id':4} {'outcome':17} description")
    for mutant, outcome in rows:
        print(f"{mutant.id:4} {outcome:17} {mutant.description}")
    print(f"\nscore: {killed}/{len(rows)} killed ({args.suite} tests)")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
