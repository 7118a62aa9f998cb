"""The private Secret Service fixture, and what the Codex CLI and Python's keyring do with it.

These pin the facts a keyring store in codexauth relies on (see tests/secret_service.py):
the item Codex 0.171 creates (attributes, label, content type, compact JSON), that Python's
``keyring.set_password`` adds a second item Codex never reads, that updating the secret of
Codex's own item in place is what Codex reads back, and what a locked collection raises.
Secrets are compared with ``fp()``, never shown.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from codex_cli import AppServer, login_status, run_cli
from secret_service import (
    CODEX_CONTENT_TYPE,
    CODEX_SERVICE,
    GNOME_SCHEMA_ATTRIBUTE,
    ItemInfo,
    SecretService,
    codex_attributes,
    codex_label,
    store_key,
)
from support import TokenServer, fp, write_auth_json

API_KEY = "sk-test-notreal-0001"
OTHER_KEY = "sk-test-notreal-0002"
CHILD_TIMEOUT = 30.0


def compact(doc: dict[str, Any]) -> str:
    """JSON as Codex stores it in the keyring: serde_json::to_string, no spaces."""
    return json.dumps(doc, separators=(",", ":"))


def api_key_doc(key: str) -> dict[str, Any]:
    """What `codex login --with-api-key` stores (0.171): auth_mode first, then the key."""
    return {"auth_mode": "apikey", "OPENAI_API_KEY": key}


def own_attributes(item: ItemInfo) -> dict[str, str]:
    """An item's attributes without the schema attribute gnome-keyring adds on its own."""
    return {k: v for k, v in item.attributes.items() if (k, v) != GNOME_SCHEMA_ATTRIBUTE}


def use_keyring_mode(codex_home: Path, mode: str = "keyring") -> None:
    (codex_home / "config.toml").write_text(
        f'cli_auth_credentials_store = "{mode}"\n', encoding="utf-8"
    )


@pytest.fixture
def python_keyring(secret_service: SecretService) -> Iterator[Any]:
    """Python's ``keyring`` with its SecretService backend forced (no chainer, no keyringrc);
    the previous backend is put back afterwards."""
    keyring = pytest.importorskip("keyring")
    backend = pytest.importorskip("keyring.backends.SecretService")

    previous = keyring.get_keyring()
    keyring.set_keyring(backend.Keyring())
    try:
        yield keyring
    finally:
        keyring.set_keyring(previous)


# The fixture ##################################################################


def test_the_service_is_private_unlocked_and_stopped_by_pid(
    secret_service: SecretService,  # for its skip-or-fail rule; this test starts its own
) -> None:
    with SecretService.start() as service:
        assert service.address != secret_service.address
        pids = service.pids
        assert len(pids) == 2  # the bus and the keyring daemon
        assert service.address.startswith(f"unix:path={service.socket},")
        assert service.client_env == {"DBUS_SESSION_BUS_ADDRESS": service.address}
        assert service.daemon_env["HOME"] == str(service.home)
        assert not service.is_locked()
        root = service.root
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not root.exists()


def test_fixture_points_this_process_at_the_service(secret_service: SecretService) -> None:
    assert os.environ["DBUS_SESSION_BUS_ADDRESS"] == secret_service.address
    assert secret_service.items(CODEX_SERVICE) == []


def test_a_codex_style_item_has_keyring_rs_attributes_label_and_content_type(
    secret_service: SecretService,
) -> None:
    account = "cli|0123456789abcdef"
    path = secret_service.create_codex_item(account, compact(api_key_doc(API_KEY)))
    [item] = secret_service.items(CODEX_SERVICE, account)
    assert item.path == path
    assert own_attributes(item) == {
        "application": "rust-keyring",
        "service": "Codex Auth",
        "target": "default",
        "username": account,
    }
    assert item.label == "cli|0123456789abcdef@Codex Auth:default (keyring v3.6.3)"
    assert secret_service.content_type(path) == "text/plain"
    assert fp(secret_service.secret(path)) == fp(compact(api_key_doc(API_KEY)))


def test_store_key_hashes_the_canonical_codex_home(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert store_key(link) == store_key(real) == store_key(str(real) + "/.")
    assert store_key(link) != store_key(tmp_path / "missing" / "link")
    # A path that does not exist is hashed as given: a fixed vector.
    assert store_key("/nonexistent/codexauth/.codex") == "cli|4f76705f00567950"


# Python's keyring beside Codex's item #########################################


def test_python_keyring_reads_codex_item(
    secret_service: SecretService, python_keyring: Any
) -> None:
    account = "cli|0123456789abcdef"
    secret_service.create_codex_item(account, compact(api_key_doc(API_KEY)))
    found = python_keyring.get_password(CODEX_SERVICE, account)
    assert fp(found) == fp(compact(api_key_doc(API_KEY)))


def test_python_keyring_set_password_adds_a_second_item_instead_of_updating_codex_item(
    secret_service: SecretService, python_keyring: Any
) -> None:
    """The trap: keyring's create_item(replace=True) replaces only an item with exactly its
    attributes, and Codex's item has two more (target, application). Codex keeps finding its
    own item (it searches target="default" first), so the new tokens are never read."""
    account = "cli|0123456789abcdef"
    old, new = compact(api_key_doc(API_KEY)), compact(api_key_doc(OTHER_KEY))
    codex_path = secret_service.create_codex_item(account, old)
    python_keyring.set_password(CODEX_SERVICE, account, new)
    items = secret_service.items(CODEX_SERVICE, account)
    assert len(items) == 2
    [python_item] = [item for item in items if item.path != codex_path]
    assert own_attributes(python_item) == {
        "application": "Python keyring library",
        "service": CODEX_SERVICE,
        "username": account,
    }
    assert "target" not in python_item.attributes
    assert fp(secret_service.secret(codex_path)) == fp(old)
    assert fp(secret_service.secret(python_item.path)) == fp(new)


def test_updating_the_secret_in_place_keeps_one_item_with_its_label_and_attributes(
    secret_service: SecretService,
) -> None:
    import secretstorage

    account = "cli|0123456789abcdef"
    path = secret_service.create_codex_item(account, compact(api_key_doc(API_KEY)))
    [before] = secret_service.items(CODEX_SERVICE, account)
    new = compact(api_key_doc(OTHER_KEY))
    # What a keyring store in codexauth does: find Codex's item by the attributes keyring-rs
    # searches with, and set its secret.
    with secret_service.connect() as connection:
        [item] = secretstorage.search_items(connection, codex_attributes(account))
        item.set_secret(new.encode("utf-8"), CODEX_CONTENT_TYPE)
    [after] = secret_service.items(CODEX_SERVICE, account)
    assert (after.path, after.label, own_attributes(after)) == (
        path,
        before.label,
        own_attributes(before),
    )
    assert fp(secret_service.secret(path)) == fp(new)
    assert secret_service.content_type(path) == CODEX_CONTENT_TYPE


def test_a_locked_collection_still_lists_the_item_but_reading_raises(
    secret_service: SecretService, python_keyring: Any
) -> None:
    import secretstorage
    from keyring.errors import KeyringLocked

    account = "cli|0123456789abcdef"
    path = secret_service.create_codex_item(account, compact(api_key_doc(API_KEY)))
    secret_service.lock()
    assert secret_service.is_locked()
    # Searching works while locked (label and attributes too); the secret does not.
    [item] = secret_service.items(CODEX_SERVICE, account)
    assert item.locked and item.path == path
    with pytest.raises(secretstorage.exceptions.LockedException):
        secret_service.secret(path)
    # keyring asks to unlock; with no prompter on this bus the prompt is dismissed at once.
    with pytest.raises(KeyringLocked, match="Failed to unlock the collection"):
        python_keyring.get_password(CODEX_SERVICE, account)
    secret_service.unlock()
    assert fp(secret_service.secret(path)) == fp(compact(api_key_doc(API_KEY)))


# The real Codex CLI in keyring mode ###########################################


def _shows_key(result: Any, key: str) -> bool:
    """Whether `codex login status` reports the API key ending like `key` (it masks the key
    as ``sk-test-***-0001``); a bool, so an assertion never prints Codex's output."""
    return f"***-{key[-4:]}" in result.stderr


def test_codex_login_creates_the_item_we_model_and_removes_auth_json(
    secret_service: SecretService, codex_home: Path, codex_bin: Path
) -> None:
    use_keyring_mode(codex_home)
    write_auth_json(codex_home, tokens=False, api_key=OTHER_KEY)
    returncode = run_cli(
        codex_bin,
        codex_home,
        ["login", "--with-api-key"],
        env=secret_service.client_env,
        input=API_KEY + "\n",
        timeout=CHILD_TIMEOUT,
    ).returncode
    assert returncode == 0
    account = store_key(codex_home)
    [item] = secret_service.items(CODEX_SERVICE)
    assert own_attributes(item) == codex_attributes(account)
    assert item.label == codex_label(account)
    assert secret_service.content_type(item.path) == CODEX_CONTENT_TYPE
    assert fp(secret_service.secret(item.path)) == fp(compact(api_key_doc(API_KEY)))
    assert not (codex_home / "auth.json").exists()  # keyring mode deletes the file login


def test_codex_reads_a_codex_style_item_and_an_in_place_update_of_it(
    secret_service: SecretService, codex_home: Path, codex_bin: Path
) -> None:
    use_keyring_mode(codex_home)
    path = secret_service.create_codex_item(store_key(codex_home), compact(api_key_doc(API_KEY)))
    env = secret_service.client_env
    first = login_status(codex_bin, codex_home, env=env, timeout=CHILD_TIMEOUT)
    assert (first.returncode, _shows_key(first, API_KEY)) == (0, True)
    secret_service.set_secret(path, compact(api_key_doc(OTHER_KEY)))
    second = login_status(codex_bin, codex_home, env=env, timeout=CHILD_TIMEOUT)
    # No cache (keyutils or other) between Codex and the Secret Service in 0.171.
    assert (second.returncode, _shows_key(second, OTHER_KEY)) == (0, True)


def test_codex_keeps_reading_its_own_item_beside_a_python_keyring_item(
    secret_service: SecretService, python_keyring: Any, codex_home: Path, codex_bin: Path
) -> None:
    use_keyring_mode(codex_home)
    account = store_key(codex_home)
    secret_service.create_codex_item(account, compact(api_key_doc(API_KEY)))
    python_keyring.set_password(CODEX_SERVICE, account, compact(api_key_doc(OTHER_KEY)))
    result = login_status(
        codex_bin, codex_home, env=secret_service.client_env, timeout=CHILD_TIMEOUT
    )
    shown = (result.returncode, _shows_key(result, API_KEY), _shows_key(result, OTHER_KEY))
    assert shown == (0, True, False)


def test_codex_refresh_rewrites_its_item_in_place_through_a_symlinked_home(
    secret_service: SecretService, codex_home: Path, codex_bin: Path, tmp_path: Path
) -> None:
    """Codex found the item keyed by the canonical (symlink-resolved) CODEX_HOME, refreshed the
    expired login against loopback, and set the secret of that same item: one item, same path,
    compact JSON, no auth.json."""
    link = codex_home.parent / "codex-link"
    link.symlink_to(codex_home)
    use_keyring_mode(codex_home)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    doc = json.loads(write_auth_json(scratch, access_exp=time.time() - 60).read_text())
    path = secret_service.create_codex_item(store_key(link), compact(doc))
    with TokenServer() as server:
        with AppServer(codex_bin, link, server.url, env=secret_service.client_env) as app:
            app.initialize()
            deadline = time.monotonic() + CHILD_TIMEOUT
            while fp(_refresh_token(secret_service, path)) != fp("rt-1"):
                assert time.monotonic() < deadline, f"POSTs: {server.redacted_log()}"
                time.sleep(0.02)
        assert server.redacted_log() == ["200"]
    [item] = secret_service.items(CODEX_SERVICE)
    assert item.path == path
    assert own_attributes(item) == codex_attributes(store_key(codex_home))
    stored = secret_service.secret(path)
    assert stored == compact(json.loads(stored))
    assert not (codex_home / "auth.json").exists()


def _refresh_token(service: SecretService, path: str) -> str | None:
    token = json.loads(service.secret(path)).get("tokens", {}).get("refresh_token")
    return token if isinstance(token, str) else None


def test_codex_fails_with_a_one_line_error_when_the_collection_is_locked(
    secret_service: SecretService, codex_home: Path, codex_bin: Path
) -> None:
    use_keyring_mode(codex_home)
    secret_service.create_codex_item(store_key(codex_home), compact(api_key_doc(API_KEY)))
    secret_service.lock()
    result = login_status(
        codex_bin, codex_home, env=secret_service.client_env, timeout=CHILD_TIMEOUT
    )
    # Booleans, so that a failure never prints Codex's output.
    said = (
        result.returncode,
        "failed to load CLI auth from keyring" in result.stderr,
        "prompt dismissed" in result.stderr,
        _shows_key(result, API_KEY),
    )
    assert said == (1, True, True, False)


def test_codex_adopts_a_targetless_item_when_it_has_none_and_updates_it_in_place(
    secret_service: SecretService, python_keyring: Any, codex_home: Path, codex_bin: Path
) -> None:
    """keyring-rs's fallback: no item with target="default" → search the default collection
    by service and username alone. So a lone item Python's keyring made is read, and Codex's
    next login sets its secret rather than creating an item of its own."""
    use_keyring_mode(codex_home)
    account = store_key(codex_home)
    python_keyring.set_password(CODEX_SERVICE, account, compact(api_key_doc(API_KEY)))
    [python_item] = secret_service.items(CODEX_SERVICE, account)
    env = secret_service.client_env
    status = login_status(codex_bin, codex_home, env=env, timeout=CHILD_TIMEOUT)
    assert (status.returncode, _shows_key(status, API_KEY)) == (0, True)
    login = run_cli(
        codex_bin,
        codex_home,
        ["login", "--with-api-key"],
        env=env,
        input=OTHER_KEY + "\n",
        timeout=CHILD_TIMEOUT,
    ).returncode
    assert login == 0
    [item] = secret_service.items(CODEX_SERVICE, account)
    assert (item.path, item.label) == (python_item.path, python_item.label)
    assert fp(secret_service.secret(item.path)) == fp(compact(api_key_doc(OTHER_KEY)))


def test_codex_refuses_two_targetless_items(
    secret_service: SecretService, codex_home: Path, codex_bin: Path
) -> None:
    """Two items that match only by service and username (none with target="default") are
    ambiguous to keyring-rs: Codex reports it and reads neither."""
    use_keyring_mode(codex_home)
    account = store_key(codex_home)
    for n, key in enumerate((API_KEY, OTHER_KEY)):
        attributes = {"service": CODEX_SERVICE, "username": account, "n": str(n)}
        secret_service.create_item(f"item {n}", attributes, compact(api_key_doc(key)))
    result = login_status(codex_bin, codex_home, env=secret_service.client_env)
    said = (
        result.returncode,
        "Entry is matched by 2 credentials" in result.stderr,
        _shows_key(result, API_KEY) or _shows_key(result, OTHER_KEY),
    )
    assert said == (1, True, False)


def test_codex_finds_the_bus_at_xdg_runtime_dir_when_no_address_is_set(
    secret_service: SecretService, codex_home: Path, codex_bin: Path, tmp_path: Path
) -> None:
    """zbus's fallback, which jeepney (so secretstorage.dbus_init) lacks: without
    DBUS_SESSION_BUS_ADDRESS, Codex uses $XDG_RUNTIME_DIR/bus. codexauth must do the same to
    see the keyring Codex sees."""
    use_keyring_mode(codex_home)
    secret_service.create_codex_item(store_key(codex_home), compact(api_key_doc(API_KEY)))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    (runtime / "bus").symlink_to(secret_service.socket)
    env: dict[str, str | None] = {
        "DBUS_SESSION_BUS_ADDRESS": None,
        "XDG_RUNTIME_DIR": str(runtime),
    }
    result = login_status(codex_bin, codex_home, env=env, timeout=CHILD_TIMEOUT)
    assert (result.returncode, _shows_key(result, API_KEY)) == (0, True)


def test_codex_secret_auth_storage_keeps_an_age_file_and_its_passphrase_in_the_keyring(
    secret_service: SecretService, codex_home: Path, codex_bin: Path
) -> None:
    """``[features] secret_auth_storage = true`` (the default on Windows in Codex's source) in
    keyring mode: the login goes to $CODEX_HOME/secrets/codex_auth.age (age, scrypt
    passphrase), the passphrase to the keyring under service "codex", account
    "secrets|<same hash>"; nothing under "Codex Auth", no auth.json."""
    (codex_home / "config.toml").write_text(
        'cli_auth_credentials_store = "keyring"\n\n[features]\nsecret_auth_storage = true\n',
        encoding="utf-8",
    )
    returncode = run_cli(
        codex_bin,
        codex_home,
        ["login", "--with-api-key"],
        env=secret_service.client_env,
        input=API_KEY + "\n",
        timeout=CHILD_TIMEOUT,
    ).returncode
    assert returncode == 0
    age_file = codex_home / "secrets" / "codex_auth.age"
    assert age_file.read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt ")
    account = "secrets|" + store_key(codex_home).split("|", 1)[1]
    [item] = secret_service.items("codex")
    assert own_attributes(item) == {
        "application": "rust-keyring",
        "service": "codex",
        "target": "default",
        "username": account,
    }
    assert item.label == f"{account}@codex:default (keyring v3.6.3)"
    assert len(secret_service.secret(item.path)) == 44  # base64 of 32 random bytes
    assert secret_service.items(CODEX_SERVICE) == []
    assert not (codex_home / "auth.json").exists()
