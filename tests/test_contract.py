"""The store contract: one set of protocol cases, run against every store.

CodexAuth's refresh protocol is written once over the Store interface and never asks which
store it has; what is written once is proven here once per store: the file store, Redis (a
real redis-server), the keyring (a real Secret Service on a private D-Bus bus), and
MemoryStore below, which implements the interface and nothing more.

Each case shares one login between several CodexAuth objects, as separate processes would:
every object gets its own Store object from the `store` factory, pointing at the same login
and the same machine-local directory (CODEX_HOME). Outcomes are what a user sees: requests
at the loopback TokenServer, the tokens handed out and stored (compared through fp()), the
errors raised, the warnings logged, and the outbox on disk.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from support import TokenServer, access_token, fp, id_token

import codexauth
from codexauth import (
    AuthDotJson,
    CodexAuth,
    FileStore,
    KeyringStore,
    NotLoggedInError,
    PermanentRefreshError,
    RedisStore,
    RefreshTokenFailedReason,
    Store,
    StoreUnreachableError,
    TokenData,
    TransientRefreshError,
    parse_id_token,
)

STORES = ["file", "redis", "keyring", "memory"]
ACCOUNT = "acct-123"
LOCK_TIMEOUT = 15.0  # a hang guard for every CodexAuth here; never a measure
FAST = 2 * 3600.0  # item 9 of issue 15: a clock two hours ahead of the issuer's


# An in-memory store ############################################################


class MemoryStore(Store):
    """One login in a dict shared by every MemoryStore of a factory: the Store interface and
    nothing more (no method or public attribute beyond Store's; see the test below)."""

    def __init__(self, shared: dict[str, Any], local: FileStore) -> None:
        self._shared = shared  # "login" (auth.json bytes), "state" (bytes), two locks
        self.local = local
        self.outbox = codexauth._Outbox(local, "codexauth-outbox-memory.json")
        self.location = "memory"

    def read(self, *, force: bool = False) -> codexauth._Snapshot | None:
        return self.read_with_state()[0]

    def read_with_state(
        self, *, force: bool = True
    ) -> tuple[codexauth._Snapshot | None, codexauth._SharedState]:
        with self._shared["mutex"]:
            doc, state = self._shared["login"], self._shared["state"]
        snapshot = None if doc is None else codexauth._Snapshot(codexauth._parse_auth_bytes(doc))
        return snapshot, codexauth._SharedState.from_json(state)

    def lock(self, timeout: float, done_elsewhere: Callable[[], bool]) -> Any:
        lock: threading.Lock = self._shared["lock"]
        deadline = time.monotonic() + timeout
        while not lock.acquire(timeout=0.01):
            if done_elsewhere():
                return None
            if time.monotonic() >= deadline:
                raise codexauth.LockTimeoutError("memory store: the lock is held elsewhere")
        return lock  # its release() is the held lock's

    def commit(
        self, spent: str, account: str | None, new: AuthDotJson
    ) -> tuple[bool, codexauth._Snapshot | None]:
        with self._shared["mutex"]:
            doc = self._shared["login"]
            current = (
                None if doc is None else codexauth._Snapshot(codexauth._parse_auth_bytes(doc))
            )
            if not codexauth._holds(current, spent, account):
                return False, current
            self._shared["login"] = codexauth._serialize_auth(new)
            return True, None

    def save(self, auth: AuthDotJson) -> None:
        with self._shared["mutex"]:
            self._shared["login"] = codexauth._serialize_auth(auth)

    def delete(self) -> bool:
        with self._shared["mutex"]:
            had, self._shared["login"] = self._shared["login"] is not None, None
        return had

    def record(self, refresh_token: str, **facts: Any) -> None:
        state = codexauth._SharedState(codexauth._fingerprint(refresh_token), **facts)
        with self._shared["mutex"]:
            doc = self._shared["login"]
            stored = None if doc is None else codexauth._parse_auth_bytes(doc).tokens
            if stored is not None and stored.refresh_token == refresh_token:
                self._shared["state"] = state.to_json()  # only while it holds that token


def test_the_memory_store_implements_the_store_interface_and_nothing_more(
    codex_home: Path,
) -> None:
    extra_methods = {name for name in vars(MemoryStore) if not name.startswith("__")} - set(
        dir(Store)
    )
    store = MemoryStore(new_shared(), FileStore(codex_home))
    public = {name for name in vars(store) if not name.startswith("_")}
    assert (extra_methods, public) == (set(), {"local", "outbox", "location"})


def new_shared() -> dict[str, Any]:
    return {"login": None, "state": None, "mutex": threading.Lock(), "lock": threading.Lock()}


# The stores ####################################################################


class Stores:
    """Makes a new Store object, for the same login and machine, at each call."""

    def __init__(self, kind: str, make: Callable[[], Store]) -> None:
        self.kind, self._make = kind, make

    def __call__(self) -> Store:
        return self._make()

    def __repr__(self) -> str:
        return f"<Stores {self.kind}>"

    def auth(self, **options: Any) -> CodexAuth:
        """A CodexAuth over a Store object of its own, as another process would have."""
        return CodexAuth(store=self(), lock_timeout=LOCK_TIMEOUT, **options)

    def seed(self, auth: AuthDotJson) -> None:
        """A new login, as `codex login` (or `codexauth push`) stores it."""
        store = self()
        with store.locked(LOCK_TIMEOUT):
            store.save(auth)

    def held(self) -> TokenData | None:
        """The tokens the store holds now, read by a new Store object."""
        snapshot = self().read(force=True)
        return None if snapshot is None else snapshot.auth.tokens


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, codex_home: Path) -> Stores:
    kind = request.param
    if kind == "file":
        return Stores(kind, lambda: FileStore(codex_home))
    if kind == "redis":
        request.getfixturevalue("redis_py")
        url = request.getfixturevalue("redis_url")
        return Stores(kind, lambda: RedisStore(url, codex_home, namespace="contract"))
    if kind == "keyring":
        request.getfixturevalue("secret_service")
        return Stores(kind, lambda: KeyringStore(codex_home))
    shared = new_shared()
    return Stores(kind, lambda: MemoryStore(shared, FileStore(codex_home)))


def login(
    refresh: str = "rt-0", *, expires_in: float = -60.0, issued_at: float | None = None
) -> AuthDotJson:
    """A ChatGPT login whose access token expires `expires_in` seconds from now."""
    now = time.time()
    tokens = TokenData(
        parse_id_token(id_token(account_id=ACCOUNT)),
        access_token(now + expires_in, iat=issued_at),
        refresh,
        ACCOUNT,
    )
    return AuthDotJson(None, tokens, datetime.now(timezone.utc) - timedelta(days=1))


def spend(server: TokenServer, refresh: str) -> AuthDotJson:
    """What a peer that takes no lock (the Codex CLI) does first: spend `refresh` at the
    server; the login it will write, later."""
    body = json.dumps({"grant_type": "refresh_token", "refresh_token": refresh}).encode()
    request = urllib.request.Request(
        server.url, body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        fields = json.loads(answer.read())
    tokens = TokenData(
        parse_id_token(fields["id_token"]),
        fields["access_token"],
        fields["refresh_token"],
        ACCOUNT,
    )
    return AuthDotJson(None, tokens, datetime.now(timezone.utc))


def issued(server: TokenServer) -> tuple[str | None, str | None]:
    """The last pair the server issued, as digests."""
    assert server.last_issued is not None, "the server issued nothing"
    return fp(server.last_issued["access_token"]), fp(server.last_issued["refresh_token"])


def pair(tokens: TokenData | None) -> tuple[str | None, str | None] | None:
    return None if tokens is None else (fp(tokens.access_token), fp(tokens.refresh_token))


def refresh_of(tokens: TokenData | None) -> str | None:
    return None if tokens is None else fp(tokens.refresh_token)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "codexauth" and r.levelno >= logging.WARNING
    ]


# The contract ##################################################################


def test_an_expired_login_is_refreshed_once_and_a_second_object_reads_it_with_no_request(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login())

    token = store.auth().get_token()

    assert token_server.post_count == 1
    assert fp(token) == issued(token_server)[0]
    assert pair(store.held()) == issued(token_server)
    assert fp(store.auth().get_token()) == fp(token)
    assert token_server.post_count == 1


def test_a_herd_of_objects_on_threads_refreshes_once(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login())
    token_server.delay = 0.2  # the herd arrives while the request is out
    auths = [store.auth() for _ in range(8)]
    tokens: list[str | None] = [None] * len(auths)

    def run(i: int) -> None:
        tokens[i] = fp(auths[i].get_token())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(auths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOCK_TIMEOUT)

    assert token_server.post_count == 1
    assert tokens == [issued(token_server)[0]] * len(auths)
    assert pair(store.held()) == issued(token_server)


def test_an_object_holding_the_old_login_adopts_a_peers_refresh_with_no_request(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login())
    a = store.auth()
    assert fp(a.get_token_data().refresh_token) == fp("rt-0")  # a holds the old snapshot

    b_token = store.auth().get_token()
    token = a.refresh_token()

    assert token_server.post_count == 1
    assert fp(token) == fp(b_token) == issued(token_server)[0]


def test_a_peers_expired_tokens_are_not_adopted_but_refreshed_from_its_refresh_token(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login())
    a = store.auth()
    a.get_token_data()  # a holds rt-0
    token_server.issue("rt-peer")
    store.seed(login("rt-peer", expires_in=-60.0))  # a peer's pair, already expired

    token = a.refresh_token()

    assert token_server.post_count == 1
    assert [fp(r["refresh_token"]) for r in token_server.requests] == [fp("rt-peer")]
    assert fp(token) == issued(token_server)[0]
    assert pair(store.held()) == issued(token_server)


def test_another_account_in_the_store_is_neither_refreshed_nor_adopted(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login())
    a = store.auth()
    a.get_token_data()  # a holds acct-123's login
    other = login("rt-other", expires_in=3600.0)
    assert other.tokens is not None
    other.tokens = TokenData(
        parse_id_token(id_token(account_id="acct-other")),
        other.tokens.access_token,
        "rt-other",
        "acct-other",
    )
    store.seed(other)  # a switch: `codex login` with another workspace

    with pytest.raises(PermanentRefreshError) as raised:
        a.refresh_token()

    assert raised.value.reason is RefreshTokenFailedReason.OTHER
    assert token_server.post_count == 0
    assert refresh_of(store.held()) == fp("rt-other")


def test_a_permanent_failure_is_remembered_until_a_new_login(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login("rt-revoked"))  # the server does not know it: refresh_token_invalidated

    with pytest.raises(PermanentRefreshError) as first:
        store.auth().get_token()
    started = time.monotonic()
    with pytest.raises(PermanentRefreshError) as second:
        store.auth().get_token()

    assert first.value.reason is second.value.reason is RefreshTokenFailedReason.REVOKED
    assert token_server.post_count == 1
    assert time.monotonic() - started < 2.0  # at once, not after a wait

    store.seed(login("rt-0"))
    token = store.auth().get_token()
    assert token_server.post_count == 2
    assert fp(token) == issued(token_server)[0]


def test_a_transient_failure_backs_off_for_every_object_then_is_retried(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login())
    token_server.fail_next(500, b"upstream trouble")

    with pytest.raises(TransientRefreshError):
        store.auth().get_token()
    with pytest.raises(TransientRefreshError, match="try again in"):
        store.auth().get_token()
    assert token_server.post_count == 1

    later = store.auth(now=lambda: time.time() + codexauth.TRANSIENT_BACKOFF + 1)
    token = later.get_token()
    assert token_server.post_count == 2
    assert fp(token) == issued(token_server)[0]
    assert pair(store.held()) == issued(token_server)


def test_reused_beside_a_lockless_peer_waits_for_its_write_and_adopts_it(
    store: Stores, token_server: TokenServer
) -> None:
    store.seed(login())
    peer_login = spend(token_server, "rt-0")  # the peer's request came first
    written = threading.Event()

    def peer() -> None:
        # The peer's write lands after our "reused" answer, as a slow Codex CLI's does.
        deadline = time.monotonic() + LOCK_TIMEOUT
        while token_server.post_count < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        store().save(peer_login)
        written.set()

    thread = threading.Thread(target=peer)
    thread.start()
    try:
        started = time.monotonic()
        token = store.auth().get_token()
        waited = time.monotonic() - started
    finally:
        thread.join(LOCK_TIMEOUT)

    assert written.is_set()
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused"]
    assert pair(store.held()) == issued(token_server)
    assert peer_login.tokens is not None
    assert fp(token) == fp(peer_login.tokens.access_token)
    # Woken by the write, not by the end of the window.
    assert waited < codexauth.REUSE_WINDOW / 2


def test_reused_with_no_peer_write_is_exhausted_after_the_window(
    store: Stores, token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codexauth, "REUSE_WINDOW", 0.5)
    store.seed(login())
    spend(token_server, "rt-0")  # a peer spent it, and never writes

    started = time.monotonic()
    with pytest.raises(PermanentRefreshError) as first:
        store.auth().get_token()
    waited = time.monotonic() - started
    with pytest.raises(PermanentRefreshError) as second:
        store.auth().get_token()

    assert first.value.reason is second.value.reason is RefreshTokenFailedReason.EXHAUSTED
    assert waited >= 0.5  # a verdict only after the whole window
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused"]
    assert refresh_of(store.held()) == fp("rt-0")


def test_a_clock_two_hours_fast_refreshes_once_for_a_dozen_objects(
    store: Stores, token_server: TokenServer
) -> None:
    """Item 9 of issue 15: the clock's offset is this machine's, for every store."""
    store.seed(login(expires_in=3600.0, issued_at=time.time()))  # valid by the issuer's clock

    tokens = [fp(store.auth(now=lambda: time.time() + FAST).get_token()) for _ in range(12)]

    assert token_server.post_count == 1
    assert tokens == [issued(token_server)[0]] * 12
    assert store().clock_skew() == pytest.approx(FAST, abs=5)


def lose_the_commit(store: Store, monkeypatch: pytest.MonkeyPatch, times: int = 1) -> None:
    """`store`'s next `times` commits fail as an unreachable or unwritable store's do."""
    commit = store.commit
    failure = "the login store is unreachable (as the test wants)"
    failures = [StoreUnreachableError(failure) for _ in range(times)]

    def failing(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return commit(*args)

    monkeypatch.setattr(store, "commit", failing)


def test_a_lost_commit_still_returns_the_token_and_the_next_object_stores_the_outbox(
    store: Stores,
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.seed(login())
    a = store.auth()
    lose_the_commit(a.store, monkeypatch)

    with caplog.at_level(logging.WARNING, logger="codexauth"):
        token = a.get_token()

    assert fp(token) == issued(token_server)[0]
    [warning] = warnings(caplog)
    where = a.store.outbox.where
    assert where is not None and Path(where).is_file()
    assert where in warning
    assert refresh_of(store.held()) == fp("rt-0")

    assert fp(store.auth().get_token()) == fp(token)
    assert token_server.post_count == 1
    assert pair(store.held()) == issued(token_server)
    assert store().outbox.load() is None
    assert not Path(where).exists()


def test_an_outbox_left_behind_never_undoes_a_logout(
    store: Stores,
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.seed(login())
    a = store.auth()
    lose_the_commit(a.store, monkeypatch)
    a.get_token()
    assert store().outbox.load() is not None

    store().delete()  # `codex logout`, which knows nothing of the outbox

    with pytest.raises(NotLoggedInError):
        store.auth().get_token()
    with pytest.raises(PermanentRefreshError) as raised:
        a.refresh_token()  # a long-lived object, holding the outbox's login
    assert raised.value.reason is RefreshTokenFailedReason.OTHER
    assert token_server.post_count == 1
    assert store.held() is None
    assert store().outbox.load() is None


def test_logout_with_an_outbox_waiting_revokes_the_live_token_and_drops_both(
    store: Stores, token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.seed(login())
    a = store.auth()
    lose_the_commit(a.store, monkeypatch)
    a.get_token()

    assert store.auth().logout() is True

    assert [fp(r["token"]) for r in token_server.revoke_requests] == [issued(token_server)[1]]
    assert token_server.post_count == 1
    assert store.held() is None
    assert store().outbox.load() is None


def test_refreshing_a_login_that_waits_in_the_outbox_keys_its_commit_on_the_stored_token(
    store: Stores, token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store still holds rt-0 while rt-1 waits in the outbox: refreshing rt-1 spends it,
    and rt-2 replaces rt-0 in the store (issue 15 item 4)."""
    store.seed(login())
    a = store.auth()
    lose_the_commit(a.store, monkeypatch, times=2)  # the outbox's own commit fails too
    a.get_token()

    token = a.refresh_token()

    assert token_server.redacted_log() == ["200", "200"]  # rt-0, then rt-1: nothing reused
    assert fp(token) == issued(token_server)[0]
    assert pair(store.held()) == issued(token_server)
    assert store().outbox.load() is None
