"""The file store on real files: round trips, unknown keys, modes, symlinks, planted links,
logout and API-key login, torn reads, corrupt files, rename failures and the stat cache.

Writers that race us are real processes; the token endpoint is the loopback TokenServer.
Tokens are compared through fp() only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import select
import shutil
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from support import (
    TokenServer,
    access_token,
    child,
    digest,
    fp,
    id_token,
    make_jwt,
    py_env,
    read_doc,
    run_py,
    write_auth_json,
)

import codexauth
from codexauth import (
    AuthDotJson,
    AuthFileError,
    CodexAuth,
    CodexAuthError,
    NotLoggedInError,
    PermanentRefreshError,
    TokenData,
)

GUARD_SECONDS = 20.0  # hang guard for what could wait on its own lock
EXTRA_TOP = {"auth_mode": "chatgpt", "future": {"nested": [1, 2.5, None]}}
EXTRA_TOKENS = {"future_tok": {"nested": [1, 2.5, None]}, "note": "kept"}
CHILD_TIMEOUT = 30.0


def redact(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the key and tokens replaced by fp(), fit for an assertion message."""
    out = dict(doc)
    if isinstance(out.get("OPENAI_API_KEY"), str):
        out["OPENAI_API_KEY"] = fp(out["OPENAI_API_KEY"])
    if isinstance(out.get("tokens"), dict):
        secret = ("id_token", "access_token", "refresh_token")
        out["tokens"] = {
            k: fp(v) if k in secret and isinstance(v, str) else v for k, v in out["tokens"].items()
        }
    return out


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(*directories: Path) -> list[str]:
    """Temp files a writer left behind."""
    return [p.name for d in directories for p in d.iterdir() if p.name.endswith(".tmp")]


def read_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """One line from a child's stdout, or fail instead of blocking forever."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"child printed nothing within {timeout} s"
    return proc.stdout.readline().strip()


def stop_child(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=CHILD_TIMEOUT)


# Round trip and unknown keys ##################################################


def test_save_then_load_round_trip(codex_home: Path) -> None:
    auth = AuthDotJson(
        None,
        TokenData(
            codexauth.parse_id_token(id_token(email="rt@example.com", plan="team")),
            access_token(time.time() + 3600),
            "rt-7",
            "acct-7",
            dict(EXTRA_TOKENS),
        ),
        datetime(2024, 5, 6, 7, 8, 9, 123_456, tzinfo=timezone.utc),
        dict(EXTRA_TOP),
    )
    codexauth.save_auth(codex_home, auth)
    loaded = codexauth.load_auth_dot_json(codex_home)
    assert loaded == auth  # reprs are redacted, so a failure prints no token
    assert loaded is not None and loaded.tokens is not None
    assert loaded.tokens.id_token.email == "rt@example.com"
    assert loaded.tokens.id_token.chatgpt_plan_type == "team"
    assert read_doc(codex_home / "auth.json")["last_refresh"] == "2024-05-06T07:08:09.123456Z"


def test_api_key_round_trip(codex_home: Path) -> None:
    codexauth.save_auth(codex_home, AuthDotJson(openai_api_key="sk-round-trip"))
    loaded = codexauth.load_auth_dot_json(codex_home)
    assert loaded is not None
    assert loaded.mode is codexauth.AuthMode.API_KEY
    assert fp(loaded.openai_api_key) == fp("sk-round-trip")
    doc = read_doc(codex_home / "auth.json")
    assert redact(doc) == redact({"OPENAI_API_KEY": "sk-round-trip"})


def test_load_missing_file_is_none(codex_home: Path) -> None:
    assert codexauth.load_auth_dot_json(codex_home) is None
    assert codexauth.load_auth_dot_json(codex_home / "does-not-exist") is None


def test_unknown_keys_survive_a_save(codex_home: Path, auth_json: Callable[..., Path]) -> None:
    path = auth_json(extra_top=EXTRA_TOP, extra_tokens=EXTRA_TOKENS)
    before = read_doc(path)
    loaded = codexauth.load_auth_dot_json(codex_home)
    assert loaded is not None
    codexauth.save_auth(codex_home, loaded)
    assert redact(read_doc(path)) == redact(before)


def test_unknown_keys_survive_a_refresh(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(extra_top=EXTRA_TOP, extra_tokens=EXTRA_TOKENS)
    before = read_doc(path)

    new_access = CodexAuth(codex_home).refresh_token()

    assert token_server.post_count == 1
    issued = token_server.last_issued
    assert issued is not None
    assert fp(new_access) == fp(issued["access_token"])
    after = read_doc(path)
    for key in ("access_token", "refresh_token", "id_token"):
        assert fp(after["tokens"][key]) == fp(issued[key]), key
    refreshed_at = codexauth._parse_rfc3339(after["last_refresh"]) / 1e6
    assert abs(refreshed_at - time.time()) < 60
    # Everything else is exactly as it was, at both levels.
    expected = dict(before, last_refresh=after["last_refresh"])
    expected["tokens"] = {**before["tokens"], **{k: issued[k] for k in issued}}
    assert redact(after) == redact(expected)
    assert after["tokens"]["account_id"] == "acct-123"


def test_every_public_function_expands_a_tilde_in_codex_home(
    codex_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fixture's CODEX_HOME is $HOME/.codex; from tmp_path, "~" would otherwise be ./~.
    monkeypatch.chdir(tmp_path)
    tilde = "~/.codex"
    codexauth.login_with_api_key(tilde, "sk-tilde-1")
    loaded = codexauth.load_auth_dot_json(tilde)
    assert loaded is not None and fp(loaded.openai_api_key) == fp("sk-tilde-1")
    codexauth.save_auth(tilde, AuthDotJson(openai_api_key="sk-tilde-2"))
    assert fp(read_doc(codex_home / "auth.json")["OPENAI_API_KEY"]) == fp("sk-tilde-2")
    assert fp(codexauth.get_token(tilde)) == fp("sk-tilde-2")
    auth = CodexAuth.from_auth_storage(tilde)
    assert auth is not None and auth.store.location == str(codex_home / "auth.json")
    assert codexauth.RequestsAuth(tilde).codex.codex_home == str(codex_home)
    assert codexauth.HttpxAuth(tilde).codex.codex_home == str(codex_home)
    assert codexauth.logout(tilde) is True
    assert not (codex_home / "auth.json").exists()
    assert not (tmp_path / "~").exists()


# Modes ########################################################################


def test_save_auth_creates_home_0700_and_file_0600(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / ".codex"
    codexauth.save_auth(home, AuthDotJson(openai_api_key="sk-mode"))
    assert mode_of(home) == 0o700
    assert mode_of(home / "auth.json") == 0o600


def test_files_are_owner_only_from_creation_even_with_umask_0(
    codex_home: Path, token_server: TokenServer
) -> None:
    home = codex_home.parent / "created-by-child"
    # In a child with umask 0 that sees the mode of every temp file as it is renamed.
    result = run_py(child("umask0"), codex_home=home, token_url=token_server.url, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)

    assert report["failed"] == "REVOKED"
    assert token_server.post_count == 2
    assert mode_of(home) == 0o700
    assert sorted(os.listdir(home)) == ["auth.json", "auth.lock", "codexauth-state.json"]
    for name in os.listdir(home):
        assert mode_of(home / name) == 0o600, name
    # Every temp file, at the moment it was renamed into place, was owner-only.
    renamed_to = [name for name, _ in report["renamed"]]
    # Every write of auth.json is a rename, as Codex writes it, each after an outbox.
    assert renamed_to.count("auth.json") == 3
    assert renamed_to.count("codexauth-outbox.json") == 1  # the one refresh that succeeded
    assert renamed_to.count("codexauth-state.json") >= 1
    assert {name: mode for name, mode in report["renamed"] if mode != 0o600} == {}


# Symlinked auth.json ##########################################################


def make_link_layout(layout: str, codex_home: Path, other: Path) -> tuple[Path, list[Path]]:
    """Move auth.json to its real home for `layout`; return (target, links to check)."""
    link = codex_home / "auth.json"
    if layout == "relative-same-dir":
        target = codex_home / "auth.real.json"
        os.rename(link, target)
        link.symlink_to("auth.real.json")
        return target, [link]
    target = other / "codex-auth.json"
    os.rename(link, target)
    if layout == "absolute-other-dir":
        link.symlink_to(target)
        return target, [link]
    if layout == "relative-other-dir":
        link.symlink_to(os.path.relpath(target, codex_home))
        return target, [link]
    assert layout == "chain-of-links"
    middle = other / "current"
    middle.symlink_to("codex-auth.json")
    link.symlink_to(middle)
    return target, [link, middle]


@pytest.mark.parametrize(
    "layout", ["absolute-other-dir", "relative-other-dir", "relative-same-dir", "chain-of-links"]
)
def test_refresh_writes_through_a_symlinked_auth_json(
    layout: str,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    tmp_path: Path,
) -> None:
    auth_json(access_exp=time.time() - 60, extra_top=EXTRA_TOP)
    other = tmp_path / "dotfiles"
    other.mkdir()
    target, links = make_link_layout(layout, codex_home, other)
    target.chmod(0o644)  # as a dotfile manager might leave it; the refresh makes it 0600
    link_texts = {link: os.readlink(link) for link in links}

    token = CodexAuth(codex_home).get_token()

    assert token_server.post_count == 1
    issued = token_server.last_issued
    assert issued is not None
    assert fp(token) == fp(issued["access_token"])
    for link, text in link_texts.items():
        assert link.is_symlink(), f"{link.name} is no longer a symlink"
        assert os.readlink(link) == text
    assert not target.is_symlink()
    doc = read_doc(target)
    assert fp(doc["tokens"]["access_token"]) == fp(issued["access_token"])
    assert fp(doc["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert doc["future"] == EXTRA_TOP["future"]
    assert mode_of(target) == 0o600
    assert leftovers(codex_home, other) == []
    # A fresh reader, through the link, sees the new token without another request.
    assert fp(CodexAuth(codex_home).get_token()) == fp(issued["access_token"])
    assert token_server.post_count == 1


# Planted symlinks at the sidecars #############################################

PRECIOUS = b"precious\n"


def plant_symlink(link: Path, tmp_path: Path, dangling: bool) -> tuple[Path, Path]:
    """Plant `link` -> tmp_path/victim.txt, which holds PRECIOUS unless `dangling`."""
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_bytes(PRECIOUS)
    link.symlink_to(victim)
    return link, victim


def assert_victim_untouched(victim: Path, dangling: bool) -> None:
    """Nothing was written through the link: a dangling one's target still does not exist."""
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_bytes() == PRECIOUS


@pytest.mark.parametrize("dangling", [False, True], ids=["to-existing-file", "dangling"])
def test_planted_symlink_at_lock_is_refused_not_followed(
    dangling: bool,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    tmp_path: Path,
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    lock, victim = plant_symlink(codex_home / "auth.lock", tmp_path, dangling)

    with pytest.raises(AuthFileError) as info:
        CodexAuth(codex_home).get_token()

    message = str(info.value)
    assert message.startswith(f"{lock}: ")
    assert "\n" not in message
    assert_victim_untouched(victim, dangling)
    assert lock.is_symlink() and os.readlink(lock) == str(victim)
    assert digest(path.read_bytes()) == digest(before)
    assert token_server.post_count == 0  # the refresh token was not spent


@pytest.mark.parametrize("dangling", [False, True], ids=["to-existing-file", "dangling"])
def test_planted_symlink_at_state_file_is_replaced_not_followed(
    dangling: bool,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    tmp_path: Path,
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    before = path.read_bytes()
    state, victim = plant_symlink(codex_home / "codexauth-state.json", tmp_path, dangling)
    token_server.fail_next(500, {"error": {"code": "server_error"}})

    with pytest.raises(codexauth.TransientRefreshError):
        CodexAuth(codex_home).get_token()

    assert token_server.post_count == 1
    assert_victim_untouched(victim, dangling)
    assert not state.is_symlink()
    assert mode_of(state) == 0o600
    assert json.loads(state.read_bytes())["reason"] is None
    assert digest(path.read_bytes()) == digest(before)
    # The recorded failure is in force: another reader backs off without a request.
    with pytest.raises(codexauth.TransientRefreshError):
        CodexAuth(codex_home).get_token()
    assert token_server.post_count == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_planted_at_state_file_does_not_hang_a_refresh(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60)
    os.mkfifo(codex_home / "codexauth-state.json")

    # In a child with a timeout: opening a FIFO for reading would block forever.
    result = run_py(["-m", "codexauth", "token"], codex_home=codex_home, timeout=30)

    assert result.returncode == 0
    assert fp(result.stdout.strip()) == fp(token_server.last_issued["access_token"])
    assert token_server.post_count == 1


# logout and API-key login #####################################################


def test_logout_removes_only_auth_json(codex_home: Path, auth_json: Callable[..., Path]) -> None:
    auth_json()
    others = {
        "auth.lock": b"",
        "codexauth-state.json": b'{"reason": null}',
        "config.toml": b'model = "o3"\n',
    }
    for name, data in others.items():
        (codex_home / name).write_bytes(data)
    (codex_home / "sessions").mkdir()

    assert codexauth.logout(codex_home) is True

    assert not (codex_home / "auth.json").exists()
    assert sorted(os.listdir(codex_home)) == sorted([*others, "sessions"])
    for name, data in others.items():
        assert (codex_home / name).read_bytes() == data
    assert codexauth.load_auth_dot_json(codex_home) is None
    assert codexauth.logout(codex_home) is False
    assert codexauth.logout(codex_home / "never-created") is False


@pytest.mark.parametrize(
    ("given", "stored"),
    [("sk-test-123", "sk-test-123"), ("  sk-test-456\n", "sk-test-456")],
    ids=["plain", "surrounding-whitespace-stripped"],
)
def test_login_with_api_key_writes_only_the_key(tmp_path: Path, given: str, stored: str) -> None:
    home = tmp_path / "new-home"
    codexauth.login_with_api_key(home, given)
    path = home / "auth.json"
    assert redact(read_doc(path)) == redact({"OPENAI_API_KEY": stored})
    assert mode_of(path) == 0o600
    assert mode_of(home) == 0o700
    auth = CodexAuth(home)
    assert auth.mode is codexauth.AuthMode.API_KEY
    assert fp(auth.get_token()) == fp(stored)


def test_login_with_api_key_replaces_a_chatgpt_login(
    codex_home: Path, auth_json: Callable[..., Path]
) -> None:
    path = auth_json(extra_top=EXTRA_TOP)
    codexauth.login_with_api_key(codex_home, "sk-replacing")
    assert redact(read_doc(path)) == redact({"OPENAI_API_KEY": "sk-replacing"})


BAD_KEYS = [
    ("empty", ""),
    ("spaces", "   "),
    ("newline", "\n"),
    ("mixed-blank", " \t\r\n "),
    ("inner-space", "sk-abc def"),
    ("inner-tab", "sk-abc\tdef"),
    ("inner-newline", "sk-abc\ndef"),
]


@pytest.mark.parametrize("key", [k for _, k in BAD_KEYS], ids=[i for i, _ in BAD_KEYS])
def test_login_with_api_key_rejects_blank_or_spaced_keys(
    key: str, codex_home: Path, auth_json: Callable[..., Path], tmp_path: Path
) -> None:
    path = auth_json()
    before = path.read_bytes()
    listing = sorted(os.listdir(codex_home))

    with pytest.raises(CodexAuthError) as info:
        codexauth.login_with_api_key(codex_home, key)

    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    for part in key.split():
        assert part not in message
    assert digest(path.read_bytes()) == digest(before)
    assert sorted(os.listdir(codex_home)) == listing
    # Into a home that does not exist yet: nothing is created.
    fresh = tmp_path / "no-home-yet"
    with pytest.raises(CodexAuthError):
        codexauth.login_with_api_key(fresh, key)
    assert not fresh.exists()


# Torn reads ###################################################################


def test_reads_ride_out_in_place_rewrites(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, tmp_path: Path
) -> None:
    reads = 300  # of each kind
    versions_dir = tmp_path / "versions"
    versions_dir.mkdir()
    version_files, valid = [], set()
    for i in range(4):
        # Different sizes, so that a half-old half-new mix cannot pass as valid JSON.
        path = auth_json(extra_top={"pad": "x" * (50 * i)})
        data = path.read_bytes()
        version_files.append(versions_dir / f"v{i}.json")
        version_files[-1].write_bytes(data)
        valid.add(fp(json.loads(data)["tokens"]["access_token"]))
    versions = {f.read_bytes() for f in version_files}
    auth_file = codex_home / "auth.json"
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [
            sys.executable,
            *child("torn_writer", str(auth_file), str(stop), *map(str, version_files)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    errors: list[str] = []
    seen: list[str | None] = []
    raw_torn = 0
    rng = random.Random(1234)
    codex = CodexAuth(codex_home)  # long-lived: its stat cache is exercised too
    try:
        assert read_line(writer) == "ready"
        for i in range(2 * reads):
            # A plain read first shows the fault is real (some catch the file mid-write);
            # the read under test follows at once, so it often starts on a torn file too.
            raw_torn += auth_file.read_bytes() not in versions
            try:
                if i % 2:
                    seen.append(fp(codex.get_token()))
                else:
                    auth = codexauth.load_auth_dot_json(codex_home)
                    assert auth is not None and auth.tokens is not None
                    seen.append(fp(auth.tokens.access_token))
            except CodexAuthError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(rng.uniform(0, 0.003))  # spread the reads over many rewrites
        stop.touch()
        rewrites = int(read_line(writer))
        writer.wait(timeout=CHILD_TIMEOUT)
    finally:
        stop_child(writer)

    assert errors == []
    assert len(seen) == 2 * reads
    assert set(seen) <= valid
    assert len(set(seen)) > 1, "the reads never saw the file change"
    assert rewrites > 50
    assert raw_torn > 0, "no plain read ever caught a half-written file: nothing was tested"
    assert token_server.post_count == 0


# Corrupt files ################################################################

EXPIRED_TOKENS = {
    "id_token": make_jwt({"email": "corrupt@example.com"}),
    "access_token": make_jwt({"exp": 1_000_000_000}),  # 2001: a refresh would be due
    "refresh_token": "rt-0",
    "account_id": "acct-123",
}


def doc_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2).encode()


CORRUPT_FILES = [
    ("not-json", b'{"OPENAI_API_KEY": null, "tokens": {'),
    ("empty", b""),
    ("json-array", b"[]"),
    ("tokens-a-string", doc_bytes({"OPENAI_API_KEY": None, "tokens": "rt-0"})),
    ("account-id-a-number", doc_bytes({"tokens": {**EXPIRED_TOKENS, "account_id": 5}})),
    ("api-key-a-number", doc_bytes({"OPENAI_API_KEY": 5, "tokens": EXPIRED_TOKENS})),
    ("last-refresh-junk", doc_bytes({"tokens": EXPIRED_TOKENS, "last_refresh": "soon"})),
    ("binary-junk", bytes(range(256)) * 8),
    (
        "over-1-MiB",
        doc_bytes({"OPENAI_API_KEY": None, "tokens": EXPIRED_TOKENS})[:-1]
        + b" " * (1 << 20)
        + b"}",
    ),
]


@pytest.mark.parametrize("data", [d for _, d in CORRUPT_FILES], ids=[i for i, _ in CORRUPT_FILES])
def test_corrupt_auth_json_is_reported_and_left_alone(
    data: bytes, codex_home: Path, token_server: TokenServer
) -> None:
    path = codex_home / "auth.json"
    path.write_bytes(data)
    path.chmod(0o600)

    with pytest.raises(AuthFileError) as info:
        codexauth.load_auth_dot_json(codex_home)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and "\r" not in message
    assert len(message) < len(str(path)) + 200

    with pytest.raises(AuthFileError) as info:
        CodexAuth(codex_home).get_token()
    assert str(info.value).startswith(f"{path}: ")

    assert digest(path.read_bytes()) == digest(data)
    assert mode_of(path) == 0o600
    assert token_server.post_count == 0
    assert os.listdir(codex_home) == ["auth.json"]  # no lock taken, no state written


# Rename not possible ##########################################################

# Bind-mounts `$1` over `$2` in a mount namespace of its own, then runs the rest: the mount
# vanishes with the child, and nothing outside the test ever sees it.
_BIND_THEN_RUN = 'mount --bind "$1" "$2" || exit 77; shift 2; exec "$@"'


def _bind_mounted(source: Path, target: Path) -> list[str]:
    """The argv prefix that runs a command with `source` bind-mounted over `target`.

    Probed first, so a machine that cannot (no unshare(1), or an unprivileged user:
    "unshare failed: Operation not permitted") skips with the reason, never fails; CI as
    root can, and must.
    """
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        reason = "needs unshare(1) and mount(8)"
    else:
        argv = ["unshare", "-m", "sh", "-c", _BIND_THEN_RUN, "sh", str(source), str(target)]
        probe = subprocess.run(
            [*argv, "true"], capture_output=True, text=True, timeout=CHILD_TIMEOUT
        )
        if probe.returncode == 0:
            return argv
        reason = f"cannot bind-mount here: {probe.stderr.strip()[:200] or probe.returncode}"
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    if in_ci and os.geteuid() == 0:
        pytest.fail(f"{reason} (CI runs as root, which can)", pytrace=False)
    pytest.skip(reason)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mount namespaces are Linux")
def test_refresh_of_a_bind_mounted_auth_json_writes_in_place(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, tmp_path: Path
) -> None:
    mountpoint = auth_json(extra_top=EXTRA_TOP, extra_tokens=EXTRA_TOKENS)
    under_the_mount = mountpoint.read_bytes()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    source = secrets / "auth.json"
    shutil.copyfile(mountpoint, source)
    source.chmod(0o600)
    before = read_doc(source)
    source_ino = source.stat().st_ino

    mount_then = _bind_mounted(source, mountpoint)
    result = subprocess.run(
        [*mount_then, sys.executable, *child("bind_mount")],
        env=py_env(codex_home, token_server.url),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["rename-refused", "EBUSY", "refreshed"]

    assert token_server.post_count == 1
    issued = token_server.last_issued
    assert issued is not None
    after = read_doc(source)
    assert fp(after["tokens"]["access_token"]) == fp(issued["access_token"])
    assert fp(after["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert {k: v for k, v in after.items() if k not in ("tokens", "last_refresh")} == {
        k: v for k, v in before.items() if k not in ("tokens", "last_refresh")
    }
    assert {k: after["tokens"][k] for k in EXTRA_TOKENS} == EXTRA_TOKENS
    assert source.stat().st_ino == source_ino
    assert mode_of(source) == 0o600
    # The write went through the mount: the file underneath it is untouched.
    assert digest(mountpoint.read_bytes()) == digest(under_the_mount)
    assert leftovers(codex_home, secrets) == []


@pytest.mark.parametrize("err", [errno.EXDEV, errno.EBUSY], ids=["EXDEV", "EBUSY"])
def test_refresh_writes_in_place_even_when_rename_fails(
    err: int,
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = auth_json(access_exp=time.time() - 60, extra_top=EXTRA_TOP, extra_tokens=EXTRA_TOKENS)
    before = read_doc(path)
    ino = path.stat().st_ino
    refused: list[str] = []
    real_replace = os.replace

    def refuse_rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(dst).startswith(str(codex_home)):
            refused.append(os.path.basename(os.fspath(dst)))
            raise OSError(err, os.strerror(err), os.fspath(dst))
        real_replace(src, dst, *args, **kwargs)

    # A monkeypatch because EXDEV needs auth.json on another filesystem than its own
    # directory, which only a mount can arrange; the real bind mount above covers EBUSY
    # where mounting is permitted. This fake only refuses; what happens next is real.
    monkeypatch.setattr(os, "replace", refuse_rename)
    token = CodexAuth(codex_home).get_token()
    monkeypatch.undo()

    assert "auth.json" in refused  # tried first, as Codex writes it...
    assert path.stat().st_ino == ino  # ...then written in place
    assert token_server.post_count == 1
    issued = token_server.last_issued
    assert issued is not None
    assert fp(token) == fp(issued["access_token"])
    after = read_doc(path)
    assert fp(after["tokens"]["access_token"]) == fp(issued["access_token"])
    assert fp(after["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert after["future"] == before["future"] and after["auth_mode"] == "chatgpt"
    assert {k: after["tokens"][k] for k in EXTRA_TOKENS} == EXTRA_TOKENS
    assert path.stat().st_ino == ino  # the same file, overwritten in place
    assert mode_of(path) == 0o600
    assert leftovers(codex_home) == []
    assert fp(CodexAuth(codex_home).get_token()) == fp(issued["access_token"])
    assert token_server.post_count == 1


# The in-process stat cache ####################################################


def test_long_lived_reader_never_returns_a_stale_token(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, tmp_path: Path
) -> None:
    exp = int(time.time()) + 3600
    versions_dir = tmp_path / "versions"
    versions_dir.mkdir()
    files, fps = [], []
    for i in range(13):
        # Same length for every version: an in-place rewrite keeps the size.
        token = make_jwt({"exp": exp, "v": f"{i:04d}"})
        data = auth_json(access=token).read_bytes()
        files.append(versions_dir / f"v{i}.json")
        files[-1].write_bytes(data)
        fps.append(fp(token))
    assert len({f.stat().st_size for f in files}) == 1
    auth_file = codex_home / "auth.json"
    shutil.copyfile(files[0], auth_file)

    writer = subprocess.Popen(
        [sys.executable, *child("stat_writer", str(auth_file), *map(str, files))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None
    codex = CodexAuth(codex_home)
    assert fp(codex.get_token()) == fps[0]

    def rewrite(how: str, index: int) -> None:
        assert writer.stdin is not None
        writer.stdin.write(f"{how} {index}\n")
        writer.stdin.flush()
        assert read_line(writer) == "ok"

    stale = []
    try:
        hows = ["inplace", "inplace-keep-mtime", "replace"]
        for i in range(1, 151):
            index = i % (len(files) - 2)
            rewrite(hows[i % len(hows)], index)
            if fp(codex.get_token()) != fps[index]:
                stale.append(i)
        assert stale == [], f"stale token after rewrites {stale[:10]}"

        # Now let the file age past the racy window, so the next read is trusted and
        # cached: a same-size rewrite that even restores the mtime must still be seen.
        time.sleep(codexauth.RACY_STAT_WINDOW + 0.2)
        assert fp(codex.get_token()) == fps[index]
        assert codex._snapshot is not None and codex._snapshot.trusted, "nothing was cached"
        rewrite("inplace-keep-mtime", index + 1)
        assert fp(codex.get_token()) == fps[index + 1]
        rewrite("replace", index + 2)
        assert fp(codex.get_token()) == fps[index + 2]
        writer.stdin.close()
        writer.wait(timeout=CHILD_TIMEOUT)
    finally:
        stop_child(writer)
    assert token_server.post_count == 0


@pytest.mark.parametrize(
    ("ctime_age", "trusted"),
    [(0.0, False), (0.5, False), (1.5, True), (3600.0, True)],
    ids=["just-written", "inside-window", "past-window", "an-hour-old"],
)
def test_stat_cache_trusts_only_files_older_than_the_racy_window(
    ctime_age: float, trusted: bool
) -> None:
    # Kernels with coarse timestamps give two writes in one tick the same mtime and
    # ctime; this one does not, so the rule is checked on the snapshot it guards.
    ctime_ns = time.time_ns() - int(ctime_age * 1e9)
    seconds = ctime_ns // 10**9
    # (mode, ino, dev, nlink, uid, gid, size, 3 int times, 3 float times, 3 ns times)
    fields = (0o100600, 1, 1, 1, 0, 0, 100, *[seconds] * 3, *[ctime_ns / 1e9] * 3)
    st = os.stat_result((*fields, *[ctime_ns] * 3))
    assert st.st_ctime_ns == ctime_ns
    snapshot = codexauth._file_snapshot(AuthDotJson(openai_api_key="k"), st)
    assert snapshot.trusted is trusted


# Writes that keep the inode, and what a kill or a full disk leaves ###########


@pytest.mark.parametrize("how", ["by-rename", "in-place"])
def test_a_shorter_new_file_leaves_no_stale_tail(
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    long_token = make_jwt({"exp": int(time.time()) - 60, "pad": "x" * 3000})
    path = auth_json(access=long_token)
    size, ino = path.stat().st_size, path.stat().st_ino
    if how == "in-place":  # as where auth.json is a mount point: only it refuses a rename
        real_replace = os.replace

        def refuse_rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if os.fspath(dst) == str(path):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), os.fspath(dst))
            real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", refuse_rename)

    token = CodexAuth(codex_home).get_token()
    monkeypatch.undo()
    assert (path.stat().st_ino == ino) == (how == "in-place")

    issued = token_server.last_issued
    assert issued is not None
    assert fp(token) == fp(issued["access_token"])
    doc = read_doc(path)  # parses: no tail of the longer old file
    assert fp(doc["tokens"]["access_token"]) == fp(issued["access_token"])
    assert len(json.dumps(doc, indent=2)) < size


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_every_write_is_on_disk_before_the_next_step(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    auth_json(access_exp=time.time() - 60)
    result = run_py(child("fsync_spy"), codex_home=codex_home, token_url=token_server.url)
    assert result.returncode == 0, result.stderr[-2000:]
    events = [tuple(e) for e in json.loads(result.stdout)]

    outbox = [e for e in events if e[0] == "replace" and e[2] == "codexauth-outbox.json"]
    committed = [e for e in events if e[0] == "replace" and e[2] == "auth.json"]
    assert len(outbox) == 1 and len(committed) == 1
    steps = [
        ("fsync", outbox[0][1]),  # the answer is on disk in the outbox...
        outbox[0],  # ...under its name...
        ("fsync", committed[0][1]),  # ...before the new auth.json is written and synced...
        committed[0],  # ...and renamed into place, as Codex writes it...
        ("unlink", "codexauth-outbox.json"),  # ...before the outbox goes
    ]
    positions = [events.index(step) for step in steps]
    assert positions == sorted(positions), events


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_every_rename_is_on_disk_before_the_next_step(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # A rename is durable only once its directory is synced: a crash right after the
    # outbox's rename and before the directory's fsync could lose the outbox, and one after
    # auth.json's could bring the spent login back once the outbox is gone.
    auth_json(access_exp=time.time() - 60)
    result = run_py(child("fsync_spy"), codex_home=codex_home, token_url=token_server.url)
    assert result.returncode == 0, result.stderr[-2000:]
    events = [tuple(e) for e in json.loads(result.stdout)]

    renames = [i for i, e in enumerate(events) if e[0] == "replace"]
    assert {events[i][2] for i in renames} >= {"codexauth-outbox.json", "auth.json"}
    for i in renames:
        after = events[i + 1 :]
        synced = after.index(("fsync", codex_home.name))
        assert all(e[0] == "fsync" for e in after[:synced]), events


def test_a_kill_after_the_outbox_is_durable_loses_nothing(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(access_exp=time.time() - 60, extra_top=EXTRA_TOP)
    result = run_py(child("killed_mid_write"), codex_home=codex_home, token_url=token_server.url)
    assert result.returncode == -9, result.stderr[-2000:]
    assert token_server.post_count == 1
    spent = read_doc(path)["tokens"]["refresh_token"]
    assert spent not in token_server.valid  # auth.json holds the spent token, whole
    assert (codex_home / "codexauth-outbox.json").exists()

    token = CodexAuth(codex_home).get_token()

    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 1  # the spent token's successor came from the outbox
    assert fp(token) == fp(issued["access_token"])
    doc = read_doc(path)
    assert fp(doc["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert doc["future"] == EXTRA_TOP["future"]
    assert not (codex_home / "codexauth-outbox.json").exists()
    assert leftovers(codex_home) == []


def test_a_fresh_token_reader_settles_a_waiting_outbox(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # A forced refresh killed before its commit: the stored access token is still fresh,
    # but its refresh token is spent; the next reader stores the successor at once, so
    # that a Codex CLI reading auth.json never spends the dead token.
    path = auth_json(access_exp=time.time() + 3600)
    result = run_py(
        child("killed_mid_write", "refresh"), codex_home=codex_home, token_url=token_server.url
    )
    assert result.returncode == -9, result.stderr[-2000:]
    assert (codex_home / "codexauth-outbox.json").exists()

    CodexAuth(codex_home).get_token()

    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 1
    assert fp(read_doc(path)["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert not (codex_home / "codexauth-outbox.json").exists()


def test_temp_files_a_killed_outbox_writer_left_are_removed(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # A writer killed between the outbox's temp file and its rename leaves a login behind
    # in a temp file; the next refresh removes it (it holds tokens), beside the store and in
    # the runtime directory.
    runtime = codex_home.parent / ".run"  # the fixture's XDG_RUNTIME_DIR
    runtime.mkdir(mode=0o700)
    store = codexauth.FileStore(codex_home)
    paths = [Path(p) for p in store.outbox.paths()]
    assert len(paths) == 2 and paths[1].is_relative_to(runtime)
    paths[1].parent.mkdir(parents=True, mode=0o700)
    temps = [p.parent / f".{p.name}.0123456789ab.tmp" for p in paths]
    for temp in temps:
        temp.write_bytes(b'{"left": "by a killed writer"}')
    auth_json(access_exp=time.time() - 60)

    CodexAuth(codex_home).get_token()

    assert token_server.post_count == 1
    assert [t.name for t in temps if t.exists()] == []


def test_a_login_only_memory_could_hold_is_stored_once_the_disk_takes_it(
    codex_home: Path,
    auth_json: Callable[..., Path],
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing could be written (a full disk): the refreshed login lives in this object only.
    # Its next read, once the disk takes writes again, stores it, though the login stored
    # still looks fresh: otherwise it would be lost when the process ends.
    path = auth_json(access_exp=time.time() + 3600)
    auth = CodexAuth(codex_home)

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(codexauth, "_write_new", disk_full)
    refreshed = auth.refresh_token()
    monkeypatch.undo()
    issued = token_server.last_issued
    assert issued is not None
    assert fp(refreshed) == fp(issued["access_token"])
    assert fp(read_doc(path)["tokens"]["refresh_token"]) == fp("rt-0")  # not stored yet

    token = auth.get_token()

    assert fp(token) == fp(issued["access_token"])
    assert fp(read_doc(path)["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert token_server.post_count == 1


@pytest.mark.parametrize("after", ["logout", "switch"])
def test_a_logout_or_a_switch_after_a_kill_is_never_undone(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, after: str
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    held = CodexAuth(codex_home)  # a long-lived process that read the login before
    assert held.get_current_auth_json() is not None
    result = run_py(child("killed_mid_write"), codex_home=codex_home, token_url=token_server.url)
    assert result.returncode == -9, result.stderr[-2000:]
    assert (codex_home / "codexauth-outbox.json").exists()
    if after == "logout":
        path.unlink()  # as `codex logout` does: it knows nothing of our outbox
    else:
        write_auth_json(codex_home, account_id="acct-other", access_exp=time.time() - 60)
    before = path.read_bytes() if path.exists() else None

    with pytest.raises((NotLoggedInError, PermanentRefreshError)):
        held.refresh_token()

    assert token_server.post_count == 1  # nothing spent for a login that is gone
    assert (path.read_bytes() if path.exists() else None) == before  # the logout/switch won
    assert not (codex_home / "codexauth-outbox.json").exists()


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE is POSIX")
def test_a_pair_no_file_could_take_is_refreshed_from_its_own_token(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    # RLIMIT_FSIZE at auth.json's size: neither auth.json nor an outbox can be written.
    auth_json(access_exp=time.time() - 60)
    result = run_py(
        child("refresh_unsaved_twice"), codex_home=codex_home, token_url=token_server.url
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert "error" not in report, report
    issued = token_server.last_issued
    assert issued is not None
    assert report["second"] == fp(issued["access_token"])
    assert token_server.post_count == 2
    # rt-0, then the unsaved pair's own refresh token: never one token twice.
    spent = [fp(body["refresh_token"]) for body in token_server.requests]
    assert len(spent) == len(set(spent)) == 2
    assert "could not store the refreshed login" in result.stderr
    assert "memory only" in result.stderr


def test_ctrl_c_during_the_write_loses_no_tokens(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer
) -> None:
    path = auth_json(access_exp=time.time() - 60)
    result = run_py(child("interrupted"), codex_home=codex_home, token_url=token_server.url)
    assert result.returncode == 130, result.stderr[-2000:]
    assert token_server.post_count == 1
    issued = token_server.last_issued
    assert issued is not None
    doc = read_doc(path)
    assert fp(doc["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert doc["tokens"]["refresh_token"] in token_server.valid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mount namespaces are Linux")
def test_a_host_refresh_reaches_a_container_that_bind_mounted_the_directory(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, tmp_path: Path
) -> None:
    host = auth_json(access_exp=time.time() - 60)  # the host's ~/.codex/auth.json
    container_home = tmp_path / "container"
    container_home.mkdir(mode=0o700)
    # `docker run -v ~/.codex:/root/.codex` (README: mount the directory, not the file: a
    # file mount keeps the inode the host's rename replaces): the host refreshes, then the
    # container reads through its bind mount.
    script = (
        f'"{sys.executable}" -m codexauth token >/dev/null || exit 1; '
        'cmp -s "$0/auth.json" "$1/auth.json" && echo same || echo cut-loose'
    )
    result = subprocess.run(
        [
            *_bind_mounted(host.parent, container_home),
            "sh",
            "-c",
            script,
            str(host.parent),
            str(container_home),
        ],
        env=py_env(codex_home, token_server.url),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["same"]
    assert token_server.post_count == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs and mount namespaces")
@pytest.mark.parametrize("growth", ["same-size", "grow"])
def test_a_full_disk_after_the_post_loses_no_tokens(
    codex_home: Path, tmp_path: Path, token_server: TokenServer, growth: str
) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root to mount a tmpfs")
    source = tmp_path / "auth.json"
    if growth == "grow":
        # A short token now and a page's worth of other fields: the new file needs one
        # more block than the old, which the full disk cannot give.
        overdue = datetime.now(timezone.utc) - timedelta(days=9)
        kwargs: dict[str, Any] = {"access": "x", "access_exp": None, "last_refresh": overdue}
        bare = write_auth_json(tmp_path, extra_top={"pad": ""}, **kwargs).stat().st_size
        old = write_auth_json(tmp_path, extra_top={"pad": "p" * (4060 - bare)}, **kwargs)
        assert old.stat().st_size == 4060  # one page; the new tokens take it past 4096
    else:
        old = write_auth_json(tmp_path, access_exp=time.time() - 60)
    assert old == source
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    runtime = tmp_path / "run"  # the per-user runtime dir, on another filesystem
    runtime.mkdir(mode=0o700)
    env = py_env(codex_home, token_server.url, env={"XDG_RUNTIME_DIR": str(runtime)})
    result = subprocess.run(
        ["unshare", "-m", sys.executable, *child("disk_full", str(mnt), str(source), growth)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT * 2,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    issued = token_server.last_issued
    assert issued is not None
    (code1, out1, err1), (code2, out2, err2) = report["first"], report["second"]
    assert code1 == 0, err1
    assert fp(out1.strip()) == fp(issued["access_token"])  # the tokens reached the caller
    # auth.json could not take them (a new file needs new blocks): one loud line says
    # where they are.
    assert err1.count("\n") == 1 and str(runtime) in err1, err1
    assert code2 == 0, err2
    assert fp(out2.strip()) == fp(issued["access_token"])
    assert token_server.post_count == 1  # the next process picked them up: no new POST
    assert fp(report["refresh_token"]) == fp(issued["refresh_token"])
    assert list(runtime.rglob("*.json")) == []


def test_a_symlink_planted_at_the_state_file_mid_write_is_never_followed(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, tmp_path: Path
) -> None:
    # Whatever the timing, a write of the state file replaces the path; it never opens
    # what a link planted there points to (no check-then-write window).
    auth_json(access_exp=time.time() - 60)
    victim = tmp_path / "victim"
    victim.write_bytes(PRECIOUS)
    state = codex_home / "codexauth-state.json"
    store = codexauth.FileStore(codex_home)
    stop = time.monotonic() + 1.0
    planted = 0
    writes = 0
    while time.monotonic() < stop and writes < 2000:  # bounded in count and time
        with contextlib.suppress(OSError):
            state.unlink()
        state.symlink_to(victim)
        planted += 1
        store.record("rt-0", retry_after=time.time())
        writes += 1
        assert not state.is_symlink()  # replaced by a file of ours
    assert planted == writes and writes > 10
    assert victim.read_bytes() == PRECIOUS
    assert token_server.post_count == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mount namespaces are Linux")
def test_a_container_write_to_a_bind_mounted_file_leaves_the_host_a_whole_file(
    codex_home: Path, auth_json: Callable[..., Path], token_server: TokenServer, tmp_path: Path
) -> None:
    host = auth_json(access_exp=time.time() - 60)
    container = tmp_path / "container" / ".codex"
    container.mkdir(parents=True, mode=0o700)
    (container / "auth.json").touch()
    # In the container auth.json is itself a mount point: a rename could not replace it,
    # so it is written in place, one write(2) of the whole file (the child's kill at a
    # rename of auth.json never comes), and the host sees it.
    argv = _bind_mounted(host, container / "auth.json")
    env = py_env(container, token_server.url)
    result = subprocess.run(
        [*argv, sys.executable, *child("killed_mid_write")],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-2000:]

    issued = token_server.last_issued
    assert issued is not None
    assert fp(read_doc(host)["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert fp(CodexAuth(codex_home).get_token()) == fp(issued["access_token"])
    assert token_server.post_count == 1
