"""A model of codexauth's refresh protocol: an outbox, a token-keyed commit and one decision
(issues 15, 16, 17; README: "How it works" and "The model").

Every action below names, in a comment, the codexauth function it models; a change to the
protocol shows which action must change in the same commit.  Actors: codexauth processes on the
file store (one machine, an OS lock that dies with its process) or on the Redis store (one machine
each, a local lock plus a fleet lock whose TTL can lapse); the lockless Codex CLI 0.171 peer; an
older Codex peer that truncates and writes with no lock; a user who logs out or switches account
once; the rotating, single-use token server; and faults (kill -9, a pause past the lock's TTL, a
Redis restart without persistence, a Redis outage, a full disk).

Abstracted away:
- accounts beyond two (A, whose login is refreshed, and B, which a switch writes); API keys;
- tokens are numbers: rt n is A's n-th refresh token; a login's access token is usable exactly
  when the login is newer than the one a refresh started from;
- time: only "this deadline has passed or not" (REUSE_WINDOW, TRANSIENT_BACKOFF, a flight's
  announced end), each passing as its own step; a peer's answer comes within REUSE_WINDOW and a
  running holder's within its announced flight (the bounds the design relies on);
- the stat cache, TLS, exact timings, clock skew, logging and warnings, the adapters, the CLI;
- the keyring: it behaves as the file store, with an in-place compare-and-update under the file
  lock, so the file configurations stand for it;
- the outbox's two places (beside the sidecars, the runtime dir): one durable record per machine,
  or, while the disk is full, a record in the process's memory only (``durable=False``);
- torn-read retry: a reader meeting the old peer's truncated file waits until it is whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

A, B = "A", "B"

# Process program counters, in the order one refresh walks them.
IDLE = "idle"  # between refreshes
READ = "read"  # CodexAuth._refresh: the unlocked read and _decide
WAIT = "wait"  # CodexAuth._await_peer
LOCK = "lock"  # Store.lock
SETTLE = "settle"  # CodexAuth._read_settled
SETTLE_STATE = "settle-state"  # the old second round trip (variant redis_two_round_trips)
SETTLE_WRITE = "settle-write"  # Store.commit of the outbox, inside _read_settled
BEGIN = "begin"  # RedisStore.begin_request
POST = "post"  # CodexAuth._post_and_commit: POST rt
ANSWERED = "answered"  # the answer is in memory only
COMMIT = "commit"  # Store.commit: the compare
COMMIT_WRITE = "commit-write"  # Store.commit: the rename (FileStore) or the script's write
DONE = "done"
DEAD = "dead"


@dataclass(frozen=True)
class Variant:
    """Switches that restore old behaviour; each must be found as a violation."""

    unsaved_whole_doc_compare: bool = False  # issue 15 item 4
    pending_restores_after_logout: bool = False  # issue 15 item 5
    exhausted_trusted_without_reread: bool = False  # issue 15 item 7
    redis_two_round_trips: bool = False  # issue 17 item 1
    redis_commit_on_version: bool = False  # issue 17 items 3, 4
    # The protocol's first draft, where the model found it wrong (see test_model.py):
    empty_store_drops_outbox: bool = False  # _settle/commit: "no login -> DROP" on Redis too
    strict_i1: bool = False  # I1 without the client-timeout window the first draft did not name


@dataclass(frozen=True)
class Config:
    name: str
    store: str = "file"  # "file" or "redis"
    processes: int = 2
    machines: tuple[int, ...] = ()  # machine of each process; default: file 0s, redis 0, 1, ...
    rounds: tuple[int, ...] = ()  # refreshes each process makes (a long-lived object: 2)
    peer_posts: int = 0  # lockless Codex 0.171 peer: POSTs it may make
    old_peer: bool = False  # Codex before 0.171: truncates and writes, no lock
    user: bool = False  # one logout or account switch
    user_takes_lock: bool = False  # does `codex logout`/`codex login` take auth.lock? (unknown)
    kills: int = 0
    lapses: int = 0  # Redis: a holder paused past the fleet lock's TTL
    restarts: int = 0  # Redis: restart without persistence
    outages: int = 0  # Redis: commands fail for a while
    disk_full: int = 0  # the store and the outbox cannot be written for a while
    failures: int = 0  # token server 5xx (nothing rotated)
    timeouts: int = 0  # the client gives up after the server rotated
    variant: Variant = Variant()

    def machine_of(self, i: int) -> int:
        if self.machines:
            return self.machines[i]
        return i if self.store == "redis" else 0

    def rounds_of(self, i: int) -> int:
        return self.rounds[i] if self.rounds else 1


class Proc(NamedTuple):
    pc: str = IDLE
    rounds: int = 1  # refreshes left, this one included
    start: int | None = None  # the token the refresh started from
    tok: int | None = None  # the token decided on, POSTed or waited on
    base: int | None = None  # the store's token an outbox record replaces
    new: int | None = None  # the token received
    ans: str | None = None  # "ok", "reused" or "5xx"
    mem: tuple[int, int] | None = None  # non-durable outbox: (replaces, new)
    seen: tuple | None = None  # the login read in the first of two round trips (variant 4)
    paused: bool = False  # stopped past the fleet lock's TTL (Redis), until its next step
    outcome: str | None = None


class Peer(NamedTuple):
    pc: str = "read"  # read -> post -> answered -> (write) -> read | done
    posts: int = 0  # POSTs left
    tok: int | None = None
    new: int | None = None  # None after "reused"


class World(NamedTuple):
    store: object  # None (no login), "TORN", or (account, n, writer)
    shared: tuple | None  # (n, kind, over): kind "exhausted" | "backoff" | "peer"
    flight: tuple | None  # Redis in-flight record: (n, owner, over)
    lock: object | None  # file: auth.lock holder (proc index or "peer"); redis: fleet lock
    local: tuple  # Redis: each machine's local lock holder
    outbox: tuple  # each machine's durable record: (replaces, new) or None
    server: int  # the token server's live refresh token for A
    procs: tuple
    peer: Peer
    old: Peer
    user_left: bool
    budget: tuple  # kills, lapses, restarts, outages, disk_full, failures, timeouts
    outage: bool
    disk_full: bool
    # Ghosts, for the invariants only:
    posted: frozenset  # tokens codexauth POSTed
    excused: frozenset  # tokens inside a named window (I1, I2, I3)
    received: frozenset  # tokens codexauth received
    stored: frozenset  # tokens codexauth wrote to the store
    lost: frozenset  # tokens every holder of which died before the outbox was durable
    logged_out: bool
    events: tuple  # (invariant, message) noticed at a step


KILLS, LAPSES, RESTARTS, OUTAGES, DISK, FAILURES, TIMEOUTS = range(7)


# Pure functions the design names ##################################################


def _settle(record: tuple | None, store: object, variant: Variant, redis: bool) -> str:
    """_settle(record, snapshot) -> "COMMIT" | "DROP" | "NONE"."""
    if record is None:
        return "NONE"
    if variant.pending_restores_after_logout:
        return "COMMIT"  # old: a pending copy was finished whatever the file held
    if store is None and redis and not variant.empty_store_drops_outbox:
        return "COMMIT"  # an emptied Redis (restart, eviction) is refilled from the outbox
    if isinstance(store, tuple) and store[0] == A and store[1] == record[0]:
        return "COMMIT"
    return "DROP"


def _holds(store: object, n: int, redis: bool, variant: Variant) -> bool:
    """Store.commit's compare: the store still holds rt n for A (an empty Redis is refilled)."""
    if store is None and redis and not variant.empty_store_drops_outbox:
        return True
    return isinstance(store, tuple) and store[0] == A and store[1] == n


def _decide(
    start: int | None, login: object, shared: tuple | None, flight, variant: Variant
) -> str:
    """_decide(start_rt, start_account, current, usable, state, now) -> action."""
    if start is None or not isinstance(login, tuple) or login[0] != A:
        return "OTHER"
    n = login[1]
    if n > start:
        return "ADOPT"  # a later login is fresh in this model
    if variant.exhausted_trusted_without_reread and shared and shared[1] == "exhausted":
        return "FAIL-EXHAUSTED"  # old: a recorded verdict trusted whatever the store holds
    if shared is not None and shared[0] == n:  # state trusted only about the current token
        kind, over = shared[1], shared[2]
        if kind == "exhausted":
            return "FAIL-EXHAUSTED"
        if kind == "backoff" and not over:
            return "FAIL"
        if kind == "peer":
            return "DEAD" if over else "WAIT"
    if flight is not None and flight[0] == n and not flight[2]:
        return "WAIT"
    return "POST"


# The model ##########################################################################


class ProtocolModel:
    def __init__(self, config: Config):
        self.c = config
        self.v = config.variant
        self.redis = config.store == "redis"
        self.invariants = [
            ("I1", self.i1_no_double_post),
            ("I2", self.i2_pair_reaches_store),
            ("I3", self.i3_no_false_sign_in_again),
            ("I5", self.i5_never_torn_by_us),
            ("I6", self.i6_logout_never_undone),
        ]

    # -- state helpers ---------------------------------------------------------------

    def initial(self) -> World:
        c = self.c
        machines = {c.machine_of(i) for i in range(c.processes)}
        nm = max(machines) + 1
        return World(
            store=(A, 0, "user"),
            shared=None,
            flight=None,
            lock=None,
            local=(None,) * nm,
            outbox=(None,) * nm,
            server=0,
            procs=tuple(Proc(rounds=c.rounds_of(i)) for i in range(c.processes)),
            peer=Peer(posts=c.peer_posts, pc="read" if c.peer_posts else "done"),
            old=Peer(posts=1, pc="read" if c.old_peer else "done"),
            user_left=c.user,
            budget=(
                c.kills,
                c.lapses,
                c.restarts,
                c.outages,
                c.disk_full,
                c.failures,
                c.timeouts,
            ),
            outage=False,
            disk_full=False,
            posted=frozenset(),
            excused=frozenset(),
            received=frozenset(),
            stored=frozenset(),
            lost=frozenset(),
            logged_out=False,
            events=(),
        )

    @staticmethod
    def _set(w: World, i: int, **kw) -> World:
        procs = list(w.procs)
        procs[i] = procs[i]._replace(paused=False, **kw)
        return w._replace(procs=tuple(procs))

    def _record(self, w: World, i: int, p: Proc) -> tuple | None:
        """_Outbox.load(): this object's in-memory record first, else its machine's file."""
        return p.mem or w.outbox[self.c.machine_of(i)]

    def _effective(self, w: World, i: int, p: Proc) -> tuple[object, int | None]:
        """The login a read works on: the store, or the outbox's pair where _settle says COMMIT.

        Returns (login, the store token an outbox record replaces, or None)."""
        record = self._record(w, i, p)
        if _settle(record, w.store, self.v, self.redis) == "COMMIT" and record is not None:
            return (A, record[1], "outbox"), record[0]
        return w.store, None

    def _with_outbox(self, w: World, i: int, record: tuple | None, durable: bool) -> World:
        w.procs[i]
        m = self.c.machine_of(i)
        if durable:
            outbox = list(w.outbox)
            outbox[m] = record
            return self._set(w._replace(outbox=tuple(outbox)), i, mem=None)
        return self._set(w, i, mem=record)

    def _clear_outbox(self, w: World, i: int) -> World:
        """_Outbox.clear()."""
        return self._with_outbox(w, i, None, durable=True)

    def _release(self, w: World, i: int) -> World:
        """Store.lock's release: a lapsed fleet lock is not ours to release."""
        if w.lock == i:
            w = w._replace(lock=None)
        if self.redis:
            m = self.c.machine_of(i)
            if w.local[m] == i:
                local = list(w.local)
                local[m] = None
                w = w._replace(local=tuple(local))
        return w

    def _holds_lock(self, w: World, i: int) -> bool:
        if self.redis:
            return w.local[self.c.machine_of(i)] == i
        return w.lock == i

    def _finish(self, w: World, i: int, outcome: str) -> World:
        """The end of one CodexAuth._refresh; a long-lived object may refresh again."""
        w = self._release(w, i)
        p = w.procs[i]
        if p.rounds > 1:
            return self._set(w, i, pc=IDLE, rounds=p.rounds - 1, outcome=outcome, ans=None)
        if p.mem is not None:  # exit with a record in memory only: lost, as the warning says
            w = w._replace(lost=w.lost | {p.mem[1]}, excused=w.excused | {p.mem[0]})
        return self._set(w, i, pc=DONE, rounds=0, outcome=outcome, mem=None)

    def _record_state(self, w: World, n: int, kind: str) -> World:
        """Store.record(rt, ...): only while the store holds rt."""
        if isinstance(w.store, tuple) and w.store[:2] == (A, n):
            return w._replace(shared=(n, kind, False))
        return w

    def _readable(self, w: World) -> bool:
        return w.store != "TORN" and not (self.redis and w.outage)

    def _event(self, w: World, name: str, message: str) -> World:
        return w._replace(events=(*w.events, (name, message)))

    def _verdict_exhausted(self, w: World, i: int) -> World:
        """Check I3 at the moment a process says "sign in again"."""
        holder = self.live_holder(w)
        if holder and w.server not in w.excused:
            w = self._event(
                w, "I3", f"p{i + 1} says sign in again while {holder} has rt{w.server}"
            )
        return self._finish(w, i, "exhausted")

    # -- steps -----------------------------------------------------------------------

    def steps(self, w: World) -> list[tuple[str, World]]:
        out: list[tuple[str, World]] = []
        for i, p in enumerate(w.procs):
            if p.pc not in (DONE, DEAD):
                out.extend(self._proc_steps(w, i, p))
        out.extend(self._peer_steps(w))
        out.extend(self._old_peer_steps(w))
        out.extend(self._user_steps(w))
        out.extend(self._time_steps(w))
        out.extend(self._fault_steps(w))
        return out

    def _proc_steps(self, w: World, i: int, p: Proc) -> list[tuple[str, World]]:
        name = f"p{i + 1}"
        v = self.v
        pc = p.pc
        if pc == IDLE:
            # CodexAuth._refresh entry: the login this object holds is stale.
            if not self._readable(w):
                return []
            login, _ = self._effective(w, i, p)
            start = login[1] if isinstance(login, tuple) and login[0] == A else None
            return [
                (
                    f"{name}: CodexAuth._refresh starts from rt{start}",
                    self._set(w, i, pc=READ, start=start),
                )
            ]

        if pc in (READ, WAIT) or (pc == LOCK and not self._lock_free(w, i)):
            # CodexAuth._refresh's unlocked read (CodexAuth._read) and _decide; in WAIT,
            # CodexAuth._await_peer polls the same read; in LOCK, Store.lock's done_elsewhere,
            # looked at any moment: on the holder's release (_ReleaseWatch), or a poll.
            if not self._readable(w):
                return []
            login, _ = self._effective(w, i, p)
            action = _decide(p.start, login, w.shared, w.flight, self.v)
            if pc == WAIT and action == "WAIT":
                return []  # still waiting: only the store changing or a deadline ends it
            if pc == LOCK and action in ("POST", "DEAD"):
                return []  # keep waiting for the lock (a WAIT joins the wait, lock-free)
            where = {
                READ: "CodexAuth._refresh",
                WAIT: "CodexAuth._await_peer",
                LOCK: "Store.lock done_elsewhere",
            }[pc]
            label = f"{name}: {where} reads {self._show(login)} -> {action}"
            return [(label, self._after_decide(w, i, p, action, login, locked=False))]

        if pc == LOCK:
            # CodexAuth._locked_step: Store.lock (file: auth.lock, which Codex takes too;
            # Redis: the local lock, then the fleet lock), then read, settle and decide.
            w2 = w
            if self.redis:
                local = list(w.local)
                local[self.c.machine_of(i)] = i
                w2 = w._replace(local=tuple(local), lock=i)
            else:
                w2 = w._replace(lock=i)
            return [(f"{name}: Store.lock acquired", self._set(w2, i, pc=SETTLE))]

        if pc == SETTLE:
            # CodexAuth._read_settled: Store.read_with_state + _Outbox.load + _settle.
            if not self._readable(w):
                return []
            if self.redis and v.redis_two_round_trips:
                # old: HGETALL for the login, the shared state in a later HGET
                return [
                    (
                        f"{name}: RedisStore.read HGETALL login {self._show(w.store)}",
                        self._set(w, i, pc=SETTLE_STATE, seen=(w.store,)),
                    )
                ]
            return self._settled(w, i, p, w.store, f"{name}: CodexAuth._read_settled")

        if pc == SETTLE_STATE:
            if not self._readable(w):
                return []
            assert p.seen is not None
            return self._settled(w, i, p, p.seen[0], f"{name}: RedisStore.read HGET state")

        if pc == SETTLE_WRITE:
            # Store.commit of the outbox's pair, then _Outbox.clear (inside _read_settled).
            record = self._record(w, i, p)
            assert record is not None
            w2 = w._replace(store=(A, record[1], "cx"), stored=w.stored | {record[1]})
            if self.redis:
                w2 = w2._replace(shared=None, flight=None)
            w2 = self._set(self._clear_outbox(w2, i), i, pc=SETTLE)
            return [(f"{name}: Store.commit writes the outbox's rt{record[1]}; _Outbox.clear", w2)]

        if pc == BEGIN:
            # RedisStore.begin_request: fenced on the fleet lock's owner and the fingerprint.
            if w.outage:
                return []
            # old (variant redis_two_round_trips): the announcement was not fenced on the
            # login's fingerprint, only written; the fence alone masks the two round trips.
            fenced = v.redis_two_round_trips or _holds(w.store, p.base, False, v)
            if w.lock == i and fenced:
                w2 = w._replace(flight=(p.tok, i, False))
                return [
                    (
                        f"{name}: RedisStore.begin_request announces rt{p.tok}",
                        self._set(w2, i, pc=POST),
                    )
                ]
            return [
                (
                    f"{name}: RedisStore.begin_request refused (lock lapsed)",
                    self._finish(w, i, "transient"),
                )
            ]

        if pc == POST:
            # CodexAuth._post_and_commit: POST rt to the token server.
            return self._post(w, i, p)

        if pc == ANSWERED:
            return self._answered(w, i, p)

        if pc == COMMIT:
            # Store.commit(spent, account, new): the compare (FileStore: under the lock;
            # RedisStore: inside the Lua script, so COMMIT and COMMIT_WRITE are one step there).
            return self._commit(w, i, p)

        if pc == COMMIT_WRITE:
            # Store.commit on a FileStore (_write_file): temp file + fsync + rename; then
            # _Outbox.clear and release.
            w2 = w._replace(store=(A, p.new, "cx"), stored=w.stored | {p.new})
            w2 = self._clear_outbox(w2, i)
            return [
                (
                    f"{name}: FileStore.commit renames rt{p.new} in; _Outbox.clear",
                    self._finish(w2, i, "ok"),
                )
            ]
        raise AssertionError(pc)

    def _lock_free(self, w: World, i: int) -> bool:
        if self.redis:
            if w.outage:
                return False
            m = self.c.machine_of(i)
            return w.local[m] in (None, i) and w.lock is None
        return w.lock is None

    def _after_decide(self, w: World, i: int, p: Proc, action: str, login, locked: bool):
        if action == "ADOPT":
            return self._finish(w, i, "ok")
        if action == "OTHER":
            return self._finish(w, i, "other")
        if action == "FAIL":
            return self._finish(w, i, "transient")
        if action == "FAIL-EXHAUSTED":
            return self._verdict_exhausted(w, i)
        if action == "WAIT":
            w = self._release(w, i) if locked else w
            return self._set(w, i, pc=WAIT, tok=login[1])
        if not locked:  # POST or DEAD: take the lock and decide again on a fresh read
            return self._set(w, i, pc=LOCK)
        if action == "DEAD":
            # Store.record(rt, reason=EXHAUSTED) only while the store holds rt; then raise.
            w = self._record_state(w, login[1], "exhausted")
            return self._verdict_exhausted(w, i)
        raise AssertionError(action)

    def _settled(self, w: World, i: int, p: Proc, login: object, label: str):
        """_read_settled's body and the _decide after it, under the lock."""
        v = self.v
        record = self._record(w, i, p)
        settle = _settle(record, login, v, self.redis)
        base = None
        if settle == "COMMIT" and record is not None:
            if w.disk_full or (self.redis and w.outage):
                # Store.commit failed: keep the outbox, its pair is the effective login
                login, base = (A, record[1], "outbox"), record[0]
            else:
                return [(f"{label}: _settle -> COMMIT", self._set(w, i, pc=SETTLE_WRITE))]
        elif settle == "DROP":
            w = self._clear_outbox(w, i)
            label += " : _settle -> DROP"
        action = _decide(p.start, login, w.shared, w.flight, self.v)
        label = f"{label} reads {self._show(login)} -> {action}"
        if action != "POST":
            return [(label, self._after_decide(w, i, p, action, login, locked=True))]
        n = login[1]
        if base is None:
            base = n
        nxt = BEGIN if self.redis else POST
        return [(label, self._set(w, i, pc=nxt, tok=n, base=base))]

    def _post(self, w: World, i: int, p: Proc) -> list[tuple[str, World]]:
        name = f"p{i + 1}"
        n = p.tok
        assert n is not None
        failed = w  # a 5xx rotated nothing: the token was not used, so it does not count
        if n in w.posted and n not in w.excused:
            w = self._event(w, "I1", f"p{i + 1} POSTs rt{n} a second time")
        w = w._replace(posted=w.posted | {n})
        if n != w.server:
            return [(f"{name}: POST rt{n} -> reused", self._set(w, i, pc=ANSWERED, ans="reused"))]
        out = [
            (
                f"{name}: POST rt{n} -> rt{n + 1}",
                self._set(w._replace(server=n + 1), i, pc=ANSWERED, ans="ok", new=n + 1),
            )
        ]
        w = failed
        if w.budget[FAILURES]:
            out.append(
                (
                    f"{name}: POST rt{n} -> 5xx (nothing rotated)",
                    self._set(self._spend(w, FAILURES), i, pc=ANSWERED, ans="5xx"),
                )
            )
        return out

    def _answered(self, w: World, i: int, p: Proc) -> list[tuple[str, World]]:
        name = f"p{i + 1}"
        n = p.tok
        out = []
        if p.ans == "ok":
            # _Outbox.put(spent, account, new): right after the 2xx answer is parsed.
            w2 = w._replace(received=w.received | {p.new})
            record = (p.base, p.new)
            durable = not w.disk_full
            if self.redis and self.v.redis_commit_on_version:  # old: no outbox on Redis
                w2 = self._set(w2, i, pc=COMMIT)
                out.append((f"{name}: receives rt{p.new} (no outbox)", w2))
            else:
                w2 = self._set(self._with_outbox(w2, i, record, durable), i, pc=COMMIT)
                where = "durable" if durable else "in memory only: disk full"
                out.append((f"{name}: receives rt{p.new}; _Outbox.put ({where})", w2))
            if w.budget[TIMEOUTS]:
                # the client gave up before the answer came: the rotation happened unseen
                w3 = self._spend(w, TIMEOUTS)
                w3 = self._record_state(w3, n, "backoff")
                if not self.v.strict_i1:
                    w3 = w3._replace(excused=w3.excused | {n})
                out.append(
                    (
                        f"{name}: times out (the server rotated rt{n}); records backoff",
                        self._finish(w3, i, "transient"),
                    )
                )
        elif p.ans == "reused":
            # Store.record(rt, peer_until=now+REUSE_WINDOW); release; WAIT.
            w2 = self._record_state(w, n, "peer")
            w2 = self._release(w2, i)
            out.append(
                (
                    f"{name}: reused -> Store.record peer_until; CodexAuth._await_peer",
                    self._set(w2, i, pc=WAIT),
                )
            )
        else:
            w2 = self._record_state(w, n, "backoff")
            out.append(
                (
                    f"{name}: 5xx -> Store.record retry_after; raise transient",
                    self._finish(w2, i, "transient"),
                )
            )
        return out

    def _commit(self, w: World, i: int, p: Proc) -> list[tuple[str, World]]:
        name = f"p{i + 1}"
        v = self.v
        if w.store == "TORN":
            return []  # torn-read retry
        unreachable = w.disk_full or (self.redis and w.outage)
        if unreachable:
            if self.redis and v.redis_commit_on_version:
                # old: the pair is dropped when the store stays unreachable past the flight
                return [
                    (
                        f"{name}: Store.commit unreachable; pair dropped",
                        self._finish(w, i, "transient"),
                    )
                ]
            # keep the outbox; warn once; return the new token
            return [
                (
                    f"{name}: Store.commit fails; the outbox keeps rt{p.new}",
                    self._finish(w, i, "ok"),
                )
            ]
        key = p.tok if v.unsaved_whole_doc_compare else p.base
        if self.redis and v.redis_commit_on_version:
            holds = isinstance(w.store, tuple) and w.store[:2] == (A, key)
        else:
            holds = _holds(w.store, key, self.redis, v)
        if holds:
            if self.redis:  # one Lua script: compare and write; the state goes with it
                w2 = w._replace(store=(A, p.new, "cx"), shared=None, flight=None)
                w2 = w2._replace(stored=w.stored | {p.new})
                w2 = self._clear_outbox(w2, i)
                return [
                    (
                        f"{name}: RedisStore.commit script writes rt{p.new}",
                        self._finish(w2, i, "ok"),
                    )
                ]
            return [(f"{name}: Store.commit finds rt{key}", self._set(w, i, pc=COMMIT_WRITE))]
        w2 = self._clear_outbox(w, i)
        w2 = self._set(w2, i, mem=None)
        if isinstance(w.store, tuple) and w.store[0] == A:
            return [
                (
                    f"{name}: Store.commit finds {self._show(w.store)}; _Outbox.clear",
                    self._finish(w2, i, "ok"),
                )
            ]
        return [
            (
                f"{name}: Store.commit finds {self._show(w.store)}; _Outbox.clear; OTHER",
                self._finish(w2, i, "other"),
            )
        ]

    # -- the other actors --------------------------------------------------------------

    def _peer_steps(self, w: World) -> list[tuple[str, World]]:
        """Codex CLI 0.171, lockless: POST with no lock, then a guarded write under auth.lock."""
        q = w.peer
        if q.pc == "done":
            return []
        if q.pc == "read":
            if w.store == "TORN":
                return []
            if not (isinstance(w.store, tuple) and w.store[0] == A) or q.posts == 0:
                return [
                    ("peer: reads no login of A; stops", w._replace(peer=q._replace(pc="done")))
                ]
            n = w.store[1]
            return [(f"peer: codex reads rt{n}", w._replace(peer=q._replace(pc="post", tok=n)))]
        if q.pc == "post":
            n = q.tok
            q2 = q._replace(pc="answered", posts=q.posts - 1)
            if n == w.server:
                return [
                    (
                        f"peer: codex POST rt{n} -> rt{n + 1} (answer on its way)",
                        w._replace(server=n + 1, peer=q2._replace(new=n + 1)),
                    )
                ]
            return [(f"peer: codex POST rt{n} -> reused", w._replace(peer=q2._replace(new=None)))]
        # answered
        nxt = "read" if q.posts else "done"
        if q.new is None:
            return [
                ("peer: codex gives up on reused", w._replace(peer=Peer(pc=nxt, posts=q.posts)))
            ]
        if w.lock is not None or w.store == "TORN":
            return []  # waits for auth.lock
        if isinstance(w.store, tuple) and w.store[:2] == (A, q.tok):
            w2 = w._replace(store=(A, q.new, "peer"))
            label = f"peer: codex takes auth.lock, writes rt{q.new} (guard rt{q.tok} holds)"
        else:
            w2 = w
            label = f"peer: codex takes auth.lock, guard fails ({self._show(w.store)}); no write"
        return [(label, w2._replace(peer=Peer(pc=nxt, posts=q.posts)))]

    def _old_peer_steps(self, w: World) -> list[tuple[str, World]]:
        """An older Codex: POST, then truncate and write auth.json with no lock (two steps)."""
        q = w.old
        if q.pc == "done":
            return []
        if q.pc == "read":
            if not (isinstance(w.store, tuple) and w.store[0] == A):
                return (
                    []
                    if w.store == "TORN"
                    else [("old: reads no login; stops", w._replace(old=q._replace(pc="done")))]
                )
            return [
                (
                    f"old: codex reads rt{w.store[1]}",
                    w._replace(old=q._replace(pc="post", tok=w.store[1])),
                )
            ]
        if q.pc == "post":
            n = q.tok
            if n == w.server:
                return [
                    (
                        f"old: POST rt{n} -> rt{n + 1}",
                        w._replace(server=n + 1, old=q._replace(pc="truncate", new=n + 1)),
                    )
                ]
            return [(f"old: POST rt{n} -> reused; stops", w._replace(old=q._replace(pc="done")))]
        if q.pc == "truncate":
            return [
                ("old: truncates auth.json", w._replace(store="TORN", old=q._replace(pc="write")))
            ]
        # Unguarded, it can undo a logout itself; what we do with its login after is no undoing.
        return [
            (
                f"old: writes rt{q.new}",
                w._replace(store=(A, q.new, "old"), logged_out=False, old=q._replace(pc="done")),
            )
        ]

    def _user_steps(self, w: World) -> list[tuple[str, World]]:
        """codex logout (deletes the login, no lock) or codex login as account B (a rename)."""
        if not w.user_left or w.store == "TORN":
            return []
        if self.c.user_takes_lock and w.lock is not None:
            return []
        w2 = w._replace(user_left=False, logged_out=True, shared=None)
        return [
            ("user: codex logout", w2._replace(store=None)),
            ("user: codex login as account B", w2._replace(store=(B, 0, "user"))),
        ]

    def _time_steps(self, w: World) -> list[tuple[str, World]]:
        out = []
        s = w.shared
        if s is not None and not s[2] and s[1] in ("peer", "backoff"):
            n = s[0]
            # REUSE_WINDOW is longer than a lockless peer's answer takes: it cannot pass while
            # the peer's answer to rt n is on its way.  The old grace was shorter (variant 3).
            peer_busy = (
                w.peer.pc == "answered" and w.peer.tok == n and w.peer.new is not None
            ) or (w.old.pc in ("truncate", "write") and w.old.tok == n)
            if s[1] == "backoff" or not peer_busy or self.v.exhausted_trusted_without_reread:
                what = "REUSE_WINDOW" if s[1] == "peer" else "TRANSIENT_BACKOFF"
                out.append((f"time: {what} for rt{n} passes", w._replace(shared=(n, s[1], True))))
        if self.redis and isinstance(w.lock, int) and w.procs[w.lock].pc == DEAD:
            out.append(
                (f"time: dead p{w.lock + 1}'s fleet lock TTL passes", w._replace(lock=None))
            )
        f = w.flight
        if f is not None and not f[2]:
            owner = w.procs[f[1]]
            # a running holder gets its answer within the flight; a paused or dead one may not
            flying = owner.pc in (POST, ANSWERED, COMMIT)
            if owner.paused or not flying:
                w2 = w._replace(flight=(f[0], f[1], True))
                if owner.paused and flying:
                    w2 = w2._replace(excused=w2.excused | {f[0], f[0] + 1})
                out.append((f"time: p{f[1] + 1}'s announced flight end for rt{f[0]} passes", w2))
        return out

    def _spend(self, w: World, k: int) -> World:
        budget = list(w.budget)
        budget[k] -= 1
        return w._replace(budget=tuple(budget))

    def _fault_steps(self, w: World) -> list[tuple[str, World]]:
        out = []
        b = w.budget
        for i, p in enumerate(w.procs):
            if p.pc in (DONE, DEAD):
                continue
            if b[KILLS]:
                out.append((f"fault: kill -9 p{i + 1}", self._kill(self._spend(w, KILLS), i, p)))
            if b[LAPSES] and self.redis and w.lock == i:
                w2 = self._spend(w, LAPSES)._replace(lock=None)
                procs = list(w2.procs)
                procs[i] = p._replace(paused=True)
                out.append(
                    (
                        f"fault: p{i + 1} paused past the fleet lock's TTL",
                        w2._replace(procs=tuple(procs)),
                    )
                )
        if b[RESTARTS] and self.redis:
            w2 = self._spend(w, RESTARTS)._replace(store=None, shared=None, flight=None, lock=None)
            out.append(("fault: Redis restarts without persistence", w2))
        if self.redis and b[OUTAGES] and not w.outage:
            out.append(("fault: Redis unreachable", self._spend(w, OUTAGES)._replace(outage=True)))
        if w.outage:
            out.append(("fault: Redis reachable again", w._replace(outage=False)))
        if b[DISK] and not w.disk_full:
            out.append(("fault: disk full", self._spend(w, DISK)._replace(disk_full=True)))
        if w.disk_full:
            out.append(("fault: disk space back", w._replace(disk_full=False)))
        return out

    def _kill(self, w: World, i: int, p: Proc) -> World:
        """kill -9: the OS lock goes with the process (a fleet lock stays until its TTL)."""
        if not self.redis and w.lock == i:
            w = w._replace(lock=None)
        if self.redis:
            m = self.c.machine_of(i)
            if w.local[m] == i:
                local = list(w.local)
                local[m] = None
                w = w._replace(local=tuple(local))
        if p.pc == ANSWERED:  # the named window: the request left, its answer is not in the outbox
            w = w._replace(excused=w.excused | {p.tok, p.base})
            if p.ans == "ok":
                w = w._replace(lost=w.lost | {p.new})
        if p.mem is not None:  # a record in memory only dies with the process
            w = w._replace(lost=w.lost | {p.mem[1]}, excused=w.excused | {p.mem[0], p.tok})
        procs = list(w.procs)
        procs[i] = p._replace(pc=DEAD, mem=None, paused=False)
        return w._replace(procs=tuple(procs))

    # -- invariants ---------------------------------------------------------------------

    def live_holder(self, w: World) -> str | None:
        """Who holds, or will write, A's live login (the token server's current rt)."""
        n = w.server
        if isinstance(w.store, tuple) and w.store[:2] == (A, n):
            return "the store"
        if any(r is not None and r[1] == n for r in w.outbox):
            return "an outbox"
        for j, p in enumerate(w.procs):
            if p.pc == DEAD:
                continue
            if p.mem is not None and p.mem[1] == n:
                return f"p{j + 1}'s memory"
            if p.pc in (ANSWERED, COMMIT, COMMIT_WRITE) and p.ans == "ok" and p.new == n:
                return f"p{j + 1}"
        if w.peer.pc == "answered" and w.peer.new == n:
            return "the lockless peer (its write is on its way)"
        if w.old.pc in ("truncate", "write") and w.old.new == n:
            return "the old peer"
        return None

    def i1_no_double_post(self, w: World) -> str | None:
        """I1: no refresh token POSTed twice by codexauth, except in the named windows."""
        for name, message in w.events:
            if name == "I1":
                return message
        return None

    def quiescent(self, w: World) -> bool:
        return (
            all(p.pc in (DONE, DEAD) for p in w.procs)
            and w.peer.pc == "done"
            and w.old.pc == "done"
        )

    def i2_pair_reaches_store(self, w: World) -> str | None:
        """I2: a pair codexauth received reaches the store (once every actor is finished)."""
        n = w.server
        if not self.quiescent(w) or n not in w.received or n in w.lost | w.stored or w.logged_out:
            return None
        if self.live_holder(w) in ("the store", "an outbox"):
            return None
        return f"rt{n}, received by codexauth, is in neither the store nor an outbox"

    def i3_no_false_sign_in_again(self, w: World) -> str | None:
        """I3: no "sign in again" while the store holds, or will hold, a live login."""
        for name, message in w.events:
            if name == "I3":
                return message
        return None

    def i5_never_torn_by_us(self, w: World) -> str | None:
        """I5: our writes are renames; only the old peer's truncation is ever seen torn."""
        if w.store == "TORN" and w.old.pc != "write":
            return "auth.json is not JSON and the old peer is not writing it"
        return None

    def i6_logout_never_undone(self, w: World) -> str | None:
        """I6: after a logout or switch, we never write the logged-out account's login back."""
        if w.logged_out and isinstance(w.store, tuple) and w.store[0] == A and w.store[2] == "cx":
            return "codexauth wrote account A's login after the logout/switch"
        return None

    def stuck(self, w: World) -> str | None:
        """I4: a state with no step left while a process is not finished is a deadlock."""
        waiting = [
            f"p{i + 1} in {p.pc}" for i, p in enumerate(w.procs) if p.pc not in (DONE, DEAD)
        ]
        if w.peer.pc != "done":
            waiting.append(f"peer in {w.peer.pc}")
        return "deadlock: " + ", ".join(waiting) if waiting else None

    @staticmethod
    def _show(login: object) -> str:
        if login is None:
            return "no login"
        if login == "TORN":
            return "a torn file"
        assert isinstance(login, tuple)
        return f"{login[0]}:rt{login[1]}" if login[0] == A else f"account {login[0]}"
