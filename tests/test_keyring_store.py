"""The keyring store against a real Secret Service (gnome-keyring on a private D-Bus bus), as
Linux users have it, and beside the real Codex CLI in keyring mode.

config.toml's ``cli_auth_credentials_store`` (file, keyring, auto, ephemeral) and the
encrypted secrets backend; the item is Codex's own, found and updated in place. Tokens are
compared through fp(), items described without their secrets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from codex_cli import login_status
from secret_service import (
    CODEX_SERVICE,
    SecretService,
    codex_attributes,
    codex_label,
    store_key,
)
from support import (
    Racers,
    TokenServer,
    digest,
    fp,
    py_env,
    read_doc,
    run_py,
    write_auth_json,
)

import codexauth
from codexauth import CodexAuth

CHILD_TIMEOUT = 30.0
GNOME_SCHEMA = ("xdg:schema", "org.freedesktop.Secret.Generic")


def use_store(codex_home: Path, mode: str, *, secrets: bool = False) -> None:
    """config.toml as the Codex CLI reads it."""
    text = f'cli_auth_credentials_store = "{mode}"\n'
    if secrets:
        text += "\n[features]\nsecret_auth_storage = true\n"
    (codex_home / "config.toml").write_text(text, encoding="utf-8")


def login_doc(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    """An auth.json document as support.write_auth_json makes it (written aside, read back)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return read_doc(write_auth_json(scratch, **kwargs))


def compact(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def codex_items(service: SecretService, codex_home: Path) -> list[Any]:
    return service.items(CODEX_SERVICE, store_key(codex_home))


def cli(codex_home: Path, *args: str, service: SecretService, url: str = "") -> Any:
    env: dict[str, str | None] = {"CODEXAUTH_STORE": None, **service.client_env}
    return run_py(
        ["-m", "codexauth", *args],
        codex_home=codex_home,
        token_url=url or None,
        env=env,
        timeout=CHILD_TIMEOUT,
    )


# keyring: Codex's own item, read, refreshed and written back in place ########


def test_a_codex_keyring_login_is_refreshed_into_the_very_item_codex_reads(
    secret_service: SecretService, codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    use_store(codex_home, "keyring")
    doc = login_doc(
        tmp_path,
        access_exp=time.time() - 60,
        extra_top={"auth_mode": "chatgpt", "agent_identity": None, "future": [1]},
        extra_tokens={"future_tok": "kept"},
    )
    path = secret_service.create_codex_item(store_key(codex_home), compact(doc))

    token = CodexAuth(codex_home).get_token()

    issued = token_server.last_issued
    assert issued is not None
    assert token_server.post_count == 1
    assert fp(token) == fp(issued["access_token"])
    [item] = codex_items(secret_service, codex_home)  # one item, never two
    assert item.path == path
    assert item.label == codex_label(store_key(codex_home))
    attributes = {k: v for k, v in item.attributes.items() if (k, v) != GNOME_SCHEMA}
    assert attributes == codex_attributes(store_key(codex_home))
    text = secret_service.secret(path)
    assert "\n" not in text and ", " not in text  # compact, as Codex writes it
    stored = json.loads(text)
    assert fp(stored["tokens"]["access_token"]) == fp(issued["access_token"])
    assert fp(stored["tokens"]["refresh_token"]) == fp(issued["refresh_token"])
    assert stored["tokens"]["future_tok"] == "kept"
    assert (stored["auth_mode"], stored["future"], stored["agent_identity"]) == (
        "chatgpt",
        [1],
        None,
    )
    assert not (codex_home / "auth.json").exists()


def test_the_real_codex_cli_reads_the_login_codexauth_refreshed_in_its_keyring(
    secret_service: SecretService,
    codex_home: Path,
    token_server: TokenServer,
    codex_bin: Path,
    tmp_path: Path,
) -> None:
    use_store(codex_home, "keyring")
    doc = login_doc(tmp_path, access_exp=time.time() - 60)
    secret_service.create_codex_item(store_key(codex_home), compact(doc))
    before = codex_items(secret_service, codex_home)

    refreshed = cli(codex_home, "refresh", service=secret_service, url=token_server.url)
    assert refreshed.returncode == 0, refreshed.stderr
    status = login_status(codex_bin, codex_home, env=secret_service.client_env)

    says_chatgpt = "Logged in using ChatGPT" in status.stdout + status.stderr
    assert (status.returncode, says_chatgpt) == (0, True)
    assert [i.path for i in codex_items(secret_service, codex_home)] == [i.path for i in before]
    assert token_server.post_count == 1


@pytest.mark.slow
def test_sixteen_processes_on_an_expired_keyring_login_make_one_post(
    secret_service: SecretService, codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    use_store(codex_home, "keyring")
    doc = login_doc(tmp_path, access_exp=time.time() - 60)
    path = secret_service.create_codex_item(store_key(codex_home), compact(doc))
    token_server.delay = 0.2
    env = py_env(codex_home, token_server.url, env=dict(secret_service.client_env))
    with Racers(env) as racers:
        for _ in range(16):
            racers.spawn(["token"])
        racers.release()
        results = racers.finish(timeout=60)

    assert [r.returncode for r in results] == [0] * 16, [r.stderr[-300:] for r in results]
    assert token_server.post_count == 1
    issued = token_server.last_issued
    assert issued is not None
    assert {fp(r.stdout.strip()) for r in results} == {fp(issued["access_token"])}
    assert [i.path for i in codex_items(secret_service, codex_home)] == [path]
    stored_refresh = json.loads(secret_service.secret(path))["tokens"]["refresh_token"]
    assert stored_refresh in token_server.valid


def test_the_account_of_a_symlinked_codex_home_is_its_real_paths(
    secret_service: SecretService, codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    link = tmp_path / "linked-home"
    link.symlink_to(codex_home)
    use_store(codex_home, "keyring")
    # Codex's rule (tests/secret_service.py, checked against the real CLI): canonical path.
    assert codexauth.codex_keyring_account(link) == store_key(codex_home) == store_key(link)
    doc = login_doc(tmp_path, access_exp=time.time() - 60)
    secret_service.create_codex_item(store_key(codex_home), compact(doc))

    token = CodexAuth(link).get_token()

    issued = token_server.last_issued
    assert issued is not None
    assert fp(token) == fp(issued["access_token"])
    assert len(codex_items(secret_service, codex_home)) == 1


# auto, ephemeral, secrets, and the override ##################################


def test_auto_takes_the_keyring_entry_when_there_is_one(
    secret_service: SecretService, codex_home: Path, tmp_path: Path
) -> None:
    use_store(codex_home, "auto")
    write_auth_json(codex_home, tokens=False, api_key="sk-from-the-file")
    secret_service.create_codex_item(
        store_key(codex_home),
        compact({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-from-keyring"}),
    )
    assert fp(CodexAuth(codex_home).get_token()) == fp("sk-from-keyring")


def test_auto_takes_auth_json_when_the_keyring_has_no_entry_or_is_locked(
    secret_service: SecretService, codex_home: Path
) -> None:
    use_store(codex_home, "auto")
    write_auth_json(codex_home, tokens=False, api_key="sk-from-the-file")
    assert fp(CodexAuth(codex_home).get_token()) == fp("sk-from-the-file")
    secret_service.create_codex_item(
        store_key(codex_home), compact({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-locked"})
    )
    secret_service.lock()
    assert fp(CodexAuth(codex_home).get_token()) == fp("sk-from-the-file")  # as Codex does


def test_ephemeral_says_where_the_login_is_and_exits_3(
    secret_service: SecretService, codex_home: Path
) -> None:
    use_store(codex_home, "ephemeral")
    for command in ("token", "status"):
        run = cli(codex_home, command, service=secret_service)
        assert run.returncode == 3, run.stderr
        assert run.stderr.count("\n") == 1 and "ephemeral" in run.stderr
        assert "only in the memory of the running Codex" in run.stderr
        assert "Run `codex login`" not in run.stderr


def test_the_encrypted_secrets_backend_is_named_with_the_way_out(
    secret_service: SecretService, codex_home: Path
) -> None:
    use_store(codex_home, "keyring", secrets=True)
    run = cli(codex_home, "token", service=secret_service)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert (
        "secret_auth_storage" in run.stderr and 'cli_auth_credentials_store = "file"' in run.stderr
    )


def test_codexauth_store_overrides_config_toml(
    secret_service: SecretService, codex_home: Path
) -> None:
    use_store(codex_home, "keyring")
    write_auth_json(codex_home, tokens=False, api_key="sk-from-the-file")
    env: dict[str, str | None] = {"CODEXAUTH_STORE": "file", **secret_service.client_env}
    run = run_py(["-m", "codexauth", "token"], codex_home=codex_home, env=env)
    assert run.returncode == 0, run.stderr
    assert fp(run.stdout.strip()) == fp("sk-from-the-file")


@pytest.mark.parametrize("value", ['"bogus"', "42"])
def test_a_bad_credentials_store_setting_is_one_line(
    secret_service: SecretService, codex_home: Path, value: str
) -> None:
    config = codex_home / "config.toml"
    config.write_text(f"cli_auth_credentials_store = {value}\n", encoding="utf-8")
    before = digest(config.read_bytes())
    run = cli(codex_home, "token", service=secret_service)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "cli_auth_credentials_store" in run.stderr
    assert digest(config.read_bytes()) == before


# Errors a user can act on ######################################################


def test_a_locked_keyring_is_one_clear_line(
    secret_service: SecretService, codex_home: Path, tmp_path: Path
) -> None:
    use_store(codex_home, "keyring")
    doc = login_doc(tmp_path)
    secret_service.create_codex_item(store_key(codex_home), compact(doc))
    secret_service.lock()
    run = cli(codex_home, "token", service=secret_service)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "locked" in run.stderr


def test_no_session_bus_is_one_clear_line(codex_home: Path, tmp_path: Path) -> None:
    use_store(codex_home, "keyring")
    env: dict[str, str | None] = {
        "CODEXAUTH_STORE": None,
        "DBUS_SESSION_BUS_ADDRESS": None,
        "XDG_RUNTIME_DIR": str(tmp_path),  # no bus socket there
    }
    run = run_py(["-m", "codexauth", "token"], codex_home=codex_home, env=env)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "D-Bus" in run.stderr


def test_two_matching_items_are_an_error_not_a_guess(
    secret_service: SecretService, codex_home: Path, tmp_path: Path
) -> None:
    use_store(codex_home, "keyring")
    account = store_key(codex_home)
    doc = compact(login_doc(tmp_path))
    attrs = codex_attributes(account)
    secret_service.create_item("one", attrs, doc)
    secret_service.create_item("two", {**attrs, "extra": "x"}, doc, replace=False)
    run = cli(codex_home, "token", service=secret_service)
    assert run.returncode == 1
    assert "matched by 2" in run.stderr


def test_status_names_the_keyring_entry_and_no_token(
    secret_service: SecretService, codex_home: Path, tmp_path: Path
) -> None:
    use_store(codex_home, "keyring")
    doc = login_doc(tmp_path)
    secret_service.create_codex_item(store_key(codex_home), compact(doc))
    run = cli(codex_home, "status", "--json", service=secret_service)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert (info["store"], info["keyring_service"], info["keyring_account"]) == (
        "keyring",
        "Codex Auth",
        store_key(codex_home),
    )
    tokens = doc["tokens"]
    assert not any(tokens[k] in run.stdout for k in ("access_token", "refresh_token"))
    human = cli(codex_home, "status", service=secret_service)
    assert "Codex Auth" in human.stdout and store_key(codex_home) in human.stdout


def test_the_file_store_path_reads_no_toml(codex_home: Path) -> None:
    # The warm path pays nothing for Codex's settings when config.toml names none of them.
    (codex_home / "config.toml").write_text('model = "o3"\n', encoding="utf-8")
    write_auth_json(codex_home)
    code = (
        "import sys, codexauth; codexauth.get_token(); "
        "print(sorted(m for m in ('tomllib', 'tomli', 'keyring', 'secretstorage') "
        "if m in sys.modules))"
    )
    run = run_py(code, codex_home=codex_home, env={"CODEXAUTH_STORE": None})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
