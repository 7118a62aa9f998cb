"""The `codexauth` command, run as a real process against real files and the loopback
TokenServer: what each command prints, the exit-code table end to end, that no token ever
reaches a message or a debug line, and that the warm path stays cheap.

Tokens are compared through fp() only; children's output is scrubbed before any assertion
can show it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from support import (
    EXHAUSTED_MESSAGE,
    EXPIRED_MESSAGE,
    OTHER_MESSAGE,
    REVOKED_MESSAGE,
    UNREACHABLE_TOKEN_URL,
    TokenServer,
    access_token,
    child,
    file_digest,
    fp,
    id_token,
    make_jwt,
    py_env,
    read_doc,
    run_py,
    write_auth_json,
)

import codexauth

CLI_TIMEOUT = 30.0
API_KEY = "sk-test-cli-0123456789"

STATUS_KEYS = {
    "logged_in",
    "mode",
    "email",
    "plan",
    "account_id",
    "access_token_expires_at",
    "access_token_fingerprint",
    "last_refresh",
    "refresh_due",
    "auth_file",
    "lock_file",
    "store",
}

# JWTs, the TokenServer's refresh tokens and API keys: what scrub() hides from diagnostics.
_SECRET_PATTERN = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*|\brt-[\w-]+|\bsk-[\w-]+")


def scrub(text: str) -> str:
    """`text` with anything token-shaped replaced, for assertion messages."""
    return _SECRET_PATTERN.sub(lambda m: f"<secret {fp(m.group())}>", text)


class Run:
    """A finished ``codexauth`` child.

    `out` and `err` are its output with anything token-shaped scrubbed, and its repr shows
    only those, so a failing assertion on a Run never prints a token; `out_fp` is fp() of
    the raw stdout.
    """

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = scrub(proc.stdout)
        self.err = scrub(proc.stderr)
        self.out_fp = fp(proc.stdout)
        self._stdout = proc.stdout
        self._stderr = proc.stderr

    def leaks(self, secrets: list[str], *, stdout: bool = True) -> list[str | None]:
        """fp() of each secret found in stderr (and stdout), short ones only as whole words."""
        text = self._stderr + ("\n" + self._stdout if stdout else "")

        def found(secret: str) -> bool:
            return bool(re.search(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", text))

        return [fp(s) for s in secrets if found(s)]

    def __repr__(self) -> str:
        return f"Run(exit {self.code}, stdout={self.out!r}, stderr={self.err!r})"


def cli(
    *args: str,
    codex_home: Path,
    token_url: str | None = None,
    env: dict[str, str | None] | None = None,
    stdin: str | bytes = "",
    python_args: tuple[str, ...] = (),
) -> Run:
    """``python -m codexauth ARGS`` in a child that cannot reach the real login or server.

    `stdin` is sent UTF-8 encoded, or as is when bytes; the output is decoded as UTF-8.
    A timeout fails the test with no traceback: pytest would show this frame's arguments,
    and `stdin` may hold an API key.
    """
    try:
        proc = subprocess.run(
            [sys.executable, *python_args, "-m", "codexauth", *args],
            env=py_env(codex_home, token_url, env),
            cwd=codex_home.parent,  # not the repo: the child must find codexauth via PYTHONPATH
            input=stdin.encode() if isinstance(stdin, str) else stdin,
            capture_output=True,
            timeout=CLI_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"codexauth {scrub(' '.join(args))} ran over {CLI_TIMEOUT:g} s", pytrace=False)
    out, err = (stream.decode("utf-8", "replace") for stream in (proc.stdout, proc.stderr))
    return Run(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


def secrets_of(doc: dict[str, Any]) -> list[str]:
    """Every secret an auth.json document holds."""
    tokens = doc.get("tokens") or {}
    found = [doc.get("OPENAI_API_KEY")]
    found += [tokens.get(k) for k in ("access_token", "refresh_token", "id_token")]
    return [s for s in found if s]


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def traceback_free_one_liner(stderr: str) -> bool:
    return "Traceback" not in stderr and stderr.count("\n") == 1 and stderr.endswith("\n")


# token, header, refresh #######################################################


def test_token_prints_only_the_token(codex_home: Path, token_server: TokenServer) -> None:
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token)
    run = cli("token", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    assert run.out_fp == fp(token + "\n")
    assert run.err == ""
    assert token_server.post_count == 0


@pytest.mark.parametrize("command", ["token", "header", "status", "--help"])
def test_a_closed_stdout_pipe_ends_quietly(codex_home: Path, command: str) -> None:
    write_auth_json(codex_home)
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `codexauth token | head -c0`: nobody reads
    # Block-buffered stdout, as under tox (which drops PYTHONUNBUFFERED): the output
    # then meets the closed pipe only when it is flushed.
    env = py_env(codex_home, env={"PYTHONUNBUFFERED": None})
    try:
        result = subprocess.run(
            [sys.executable, "-m", "codexauth", command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""  # no BrokenPipeError traceback


def test_token_json_gives_token_mode_and_expiry(
    codex_home: Path, token_server: TokenServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = int(time.time()) + 3600
    token = access_token(exp)
    write_auth_json(codex_home, access=token)
    assert codexauth.main(["token", "--json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert set(doc) == {"token", "mode", "expires_at"}
    assert fp(doc["token"]) == fp(token)
    assert doc["mode"] == "chatgpt"
    assert epoch(doc["expires_at"]) == exp
    assert scrub(err) == ""


def test_main_in_a_callers_process_leaves_its_garbage_collector_alone(
    codex_home: Path, token_server: TokenServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the program (_program: console script, -m, a script) freezes the collector
    before it exits; main() may run in a caller's long-lived process."""
    write_auth_json(codex_home, access=access_token(time.time() + 3600))
    frozen = gc.get_freeze_count()
    assert codexauth.main(["token"]) == 0
    assert gc.get_freeze_count() == frozen
    capsys.readouterr()


PROGRAM = "import codexauth, sys; sys.argv[1:] = [{!r}]; sys.exit(codexauth._program())"


def test_the_program_exits_with_mains_code_and_output(codex_home: Path) -> None:
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token)
    ok = run_py(PROGRAM.format("header"), codex_home=codex_home)
    assert (ok.returncode, ok.stderr, fp(ok.stdout)) == (
        0,
        "",
        fp(f"Authorization: Bearer {token}\n"),
    )
    (codex_home / "auth.json").unlink()
    gone = run_py(PROGRAM.format("token"), codex_home=codex_home)
    assert (gone.returncode, gone.stdout) == (codexauth.EXIT_NOT_LOGGED_IN, "")


def test_token_json_in_api_key_mode_has_no_expiry(
    codex_home: Path, token_server: TokenServer, capsys: pytest.CaptureFixture[str]
) -> None:
    write_auth_json(codex_home, tokens=False, api_key=API_KEY)
    assert codexauth.main(["token", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (fp(doc["token"]), doc["mode"], doc["expires_at"]) == (fp(API_KEY), "apikey", None)


def test_header_prints_an_authorization_line(
    codex_home: Path, token_server: TokenServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token)
    assert codexauth.main(["header"]) == 0
    out, err = capsys.readouterr()
    assert fp(out) == fp(f"Authorization: Bearer {token}\n")
    assert scrub(err) == ""


def test_refresh_forces_exactly_one_post_and_prints_no_token(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home)  # fresh: only `refresh` would make a request
    before = read_doc(codex_home / "auth.json")
    run = cli("refresh", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    assert token_server.post_count == 1
    after = read_doc(codex_home / "auth.json")
    assert token_server.last_issued is not None
    assert fp(after["tokens"]["access_token"]) == fp(token_server.last_issued["access_token"])
    assert fp(after["tokens"]["refresh_token"]) == fp("rt-1")
    assert run.out.startswith("Refreshed.")
    assert run.leaks(secrets_of(before) + secrets_of(after)) == []


# status #######################################################################


def test_status_human_output(codex_home: Path, token_server: TokenServer) -> None:
    exp = int(time.time()) + 3600
    write_auth_json(
        codex_home,
        access=access_token(exp),
        id_tok=id_token(email="ada@example.com", plan="team"),
        account_id="acct-42",
    )
    run = cli("status", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    lines = dict(line.split(":", 1) for line in run.out.splitlines())
    shown = {label: value.strip() for label, value in lines.items()}
    assert shown["Mode"] == "chatgpt"
    assert shown["Email"] == "ada@example.com"
    assert shown["Plan"] == "team"
    assert shown["Account"] == "acct-42"
    expires, relative = shown["Token expires"].split(" ", 1)
    assert epoch(expires) == exp
    assert relative in ("(in 59 min)", "(in 1 h)")
    assert shown["Last refresh"].endswith(" (1 d ago)")
    assert shown["Refresh due"] == "no"
    assert shown["auth.json"] == str(codex_home / "auth.json")
    assert shown["Lock file"] == str(codex_home / "auth.lock")
    assert run.leaks(secrets_of(read_doc(codex_home / "auth.json"))) == []
    assert token_server.post_count == 0


@pytest.mark.parametrize("due", [False, True], ids=["token-fresh", "token-expiring"])
def test_status_json_has_the_stable_keys_and_no_token(
    codex_home: Path, token_server: TokenServer, due: bool
) -> None:
    exp = int(time.time()) + (60 if due else 3600)
    write_auth_json(codex_home, access=access_token(exp), last_refresh="2024-05-06T07:08:09Z")
    run = cli("status", "--json", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    doc = json.loads(run.out)
    assert set(doc) == STATUS_KEYS
    assert doc["logged_in"] is True
    assert (doc["mode"], doc["email"], doc["plan"]) == ("chatgpt", "user@example.com", "pro")
    assert doc["account_id"] == "acct-123"
    assert epoch(doc["access_token_expires_at"]) == exp
    assert epoch(doc["last_refresh"]) == epoch("2024-05-06T07:08:09Z")
    assert doc["refresh_due"] is due
    assert isinstance(doc["access_token_fingerprint"], str) and doc["access_token_fingerprint"]
    assert doc["auth_file"] == str(codex_home / "auth.json")
    assert doc["lock_file"] == str(codex_home / "auth.lock")
    assert run.leaks(secrets_of(read_doc(codex_home / "auth.json"))) == []
    assert token_server.post_count == 0  # status reports; it never refreshes


def test_status_json_in_api_key_mode_shows_no_key(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home, tokens=False, api_key=API_KEY)
    run = cli("status", "--json", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    doc = json.loads(run.out)
    assert set(doc) == STATUS_KEYS
    assert (doc["logged_in"], doc["mode"], doc["refresh_due"]) == (True, "apikey", False)
    assert (doc["email"], doc["access_token_fingerprint"]) == (None, None)
    assert run.leaks([API_KEY]) == []


def test_status_when_not_logged_in_exits_3(codex_home: Path) -> None:
    run = cli("status", codex_home=codex_home)
    assert run.code == 3
    output = (run.out + run.err).splitlines()
    assert len(output) == 1
    assert "Not logged in" in output[0]
    assert str(codex_home / "auth.json") in output[0]

    run = cli("status", "--json", codex_home=codex_home)
    assert run.code == 3
    doc = json.loads(run.out)
    assert set(doc) == STATUS_KEYS
    assert doc["logged_in"] is False
    assert list(codex_home.iterdir()) == []  # looking creates nothing


def test_status_escapes_control_characters_in_everything_it_prints(
    codex_home: Path, tmp_path: Path
) -> None:
    # An id_token's claims come from the server and the path from the user: neither may
    # forge a line of output, colour the terminal or crash the encoder.
    home = tmp_path / "odd\nLock file:         forged\x1b[2J"
    home.mkdir()
    email = "eve@example.com\nAccount:           acct-forged\x1b[31m"
    plan = "pro\u202egnp"  # a right-to-left override
    account = "acct-\ud800\x85"  # a lone surrogate, a C1 newline (NEL)
    write_auth_json(home, id_tok=id_token(email=email, plan=plan), account_id=account)

    run = cli("--codex-home", str(home), "status", codex_home=codex_home)

    assert (run.code, run.err) == (0, "")
    lines = run.out.splitlines()  # splits on \x85, \u2028 and the like too
    assert len(lines) == 10
    assert run.out.isascii()
    shown = {label: value.strip() for label, value in (line.split(":", 1) for line in lines)}
    assert shown["Email"] == "eve@example.com\\nAccount:           acct-forged\\x1b[31m"
    assert shown["Plan"] == "pro\\u202egnp"
    assert shown["Account"] == "acct-\\ud800\\x85"
    escaped_home = str(home).replace("\n", "\\n").replace("\x1b", "\\x1b")
    assert shown["auth.json"] == f"{escaped_home}/auth.json"
    assert shown["Lock file"] == f"{escaped_home}/auth.lock"

    run = cli("--codex-home", str(home), "status", "--json", codex_home=codex_home)
    assert (run.code, run.err) == (0, "")
    assert run.out.isascii()
    doc = json.loads(run.out)
    assert (doc["email"], doc["plan"], doc["account_id"]) == (email, plan, account)
    assert doc["auth_file"] == str(home / "auth.json")

    (home / "auth.json").unlink()
    run = cli("--codex-home", str(home), "status", codex_home=codex_home)
    assert run.code == 3
    assert run.out == f"Not logged in: no login in {escaped_home}/auth.json. Run `codex login`.\n"


def test_an_error_naming_an_odd_path_stays_one_line(codex_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "odd\ncodexauth: forged\x1b[2J"
    home.mkdir()
    (home / "auth.json").write_bytes(b"{")
    run = cli("--codex-home", str(home), "token", codex_home=codex_home)
    assert run.code == 1
    assert traceback_free_one_liner(run.err)
    assert "\x1b" not in run.err
    assert run.err.startswith(
        "codexauth: " + str(home).replace("\n", "\\n").replace("\x1b", "\\x1b")
    )


# An `exp` before year 1 (datetime's first) is shown as year 1, and is as expired as any.
BEFORE_YEAR_1 = -7e10


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"]], ids=["human", "json"])
def test_status_shows_an_expiry_before_year_1(codex_home: Path, argv: list[str]) -> None:
    write_auth_json(codex_home, access=make_jwt({"exp": BEFORE_YEAR_1}))
    run = cli(*argv, codex_home=codex_home)
    assert (run.code, run.err) == (0, "")
    if argv == ["status"]:
        assert "Token expires:     0001-01-01T00:00:00.000000Z (" in run.out
        assert "Refresh due:       yes" in run.out
    else:
        doc = json.loads(run.out)
        assert (doc["access_token_expires_at"], doc["refresh_due"]) == (
            "0001-01-01T00:00:00.000000Z",
            True,
        )


def test_a_refreshed_expiry_before_year_1_is_one_transient_line(
    codex_home: Path, token_server: TokenServer, capsys: pytest.CaptureFixture[str]
) -> None:
    write_auth_json(codex_home, access_exp=time.time() - 60)
    token_server.access_ttl = BEFORE_YEAR_1 - time.time()  # an endpoint with a broken clock
    # A token that expired before it was issued is no success: exit 5, one line, and the
    # rotated refresh token is kept for the next try.
    assert codexauth.main(["token", "--json"]) == 5
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "without a usable access token" in err
    assert token_server.post_count == 1
    assert token_server.last_issued is not None
    stored_refresh = json.loads((codex_home / "auth.json").read_bytes())["tokens"]["refresh_token"]
    assert fp(stored_refresh) == fp(token_server.last_issued["refresh_token"])


# A token that is not printable ASCII cannot follow `Bearer ` in a header.
NON_ASCII_TOKENS = [
    ("access-token-lone-surrogate", {"access": "eyJ.abc\ud800.sig"}, "tokens.access_token"),
    ("access-token-newline", {"access": "abc\nX-Injected: 1"}, "tokens.access_token"),
    ("refresh-token-non-ascii", {"refresh": "rt-caf\u00e9"}, "tokens.refresh_token"),
    ("api-key-lone-surrogate", {"api_key": "sk-\udcff", "tokens": False}, "OPENAI_API_KEY"),
]
TOKEN_COMMANDS = [["token"], ["header"], ["status"], ["token", "--json"], ["status", "--json"]]


@pytest.mark.parametrize(
    ("login", "field"),
    [case[1:] for case in NON_ASCII_TOKENS],
    ids=[case[0] for case in NON_ASCII_TOKENS],
)
@pytest.mark.parametrize("argv", TOKEN_COMMANDS, ids=" ".join)
def test_a_token_that_is_not_printable_ascii_is_one_line_naming_it(
    codex_home: Path, token_server: TokenServer, login: dict[str, Any], field: str, argv: list[str]
) -> None:
    path = write_auth_json(codex_home, **login)
    before = file_digest(path)
    run = cli(*argv, codex_home=codex_home, token_url=token_server.url)
    assert run.code == 1
    assert traceback_free_one_liner(run.err)
    assert run.err == f"codexauth: {path}: {field} must be printable ASCII without spaces\n"
    assert run.out == ""
    assert file_digest(path) == before
    assert token_server.post_count == 0


# logout and login ##############################################################


def test_logout_removes_auth_json_then_says_not_logged_in(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home)
    (codex_home / "config.toml").write_text('model = "o3"\n')
    run = cli("logout", codex_home=codex_home, token_url=token_server.url)
    assert (run.code, run.out, run.err) == (0, "Logged out.\n", "")
    # auth.lock stays: logout takes the refresh lock, and a lock file is never deleted.
    assert sorted(p.name for p in codex_home.iterdir()) == ["auth.lock", "config.toml"]
    assert token_server.redacted_revoke_log() == ["200 refresh_token"]

    run = cli("logout", codex_home=codex_home, token_url=token_server.url)
    assert (run.code, run.out, run.err) == (0, "Not logged in.\n", "")
    assert token_server.revoke_count == 1


def test_logout_revokes_the_refresh_token_as_codex_does(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home, refresh="rt-0")
    run = cli("logout", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    (body,) = token_server.revoke_requests
    assert {k: v for k, v in body.items() if k != "token"} == {
        "token_type_hint": "refresh_token",
        "client_id": codexauth.CLIENT_ID,
    }
    assert fp(body["token"]) == fp("rt-0")


@pytest.mark.parametrize("failure", ["503", "unreachable", "hang"])
def test_logout_whose_revoke_fails_still_deletes_and_warns(
    codex_home: Path, token_server: TokenServer, failure: str
) -> None:
    path = write_auth_json(codex_home)
    secrets = secrets_of(read_doc(codex_home / "auth.json"))
    env: dict[str, str | None] = {}
    if failure == "503":
        token_server.fail_next_revoke(503, {"error": {"code": "server_error"}})
    elif failure == "unreachable":
        env["CODEX_REVOKE_TOKEN_URL_OVERRIDE"] = "http://127.0.0.1:9/oauth/revoke"
    else:
        token_server.hang = True
    run = cli(
        "--timeout", "0.5", "logout", codex_home=codex_home, token_url=token_server.url, env=env
    )
    assert (run.code, run.out) == (0, "Logged out.\n")
    assert traceback_free_one_liner(run.err)
    assert run.err.startswith("codexauth: warning: could not revoke the token")
    assert run.leaks(secrets) == []
    assert not path.exists()


@pytest.mark.parametrize(
    ("args", "login"),
    [(["logout", "--keep-token"], "chatgpt"), (["logout"], "apikey")],
    ids=["keep-token", "api-key-login"],
)
def test_logout_that_revokes_nothing_makes_no_request(
    codex_home: Path, token_server: TokenServer, args: list[str], login: str
) -> None:
    if login == "apikey":
        path = write_auth_json(codex_home, tokens=False, api_key=API_KEY)
    else:
        path = write_auth_json(codex_home)
    run = cli(*args, codex_home=codex_home, token_url=token_server.url)
    assert (run.code, run.out, run.err) == (0, "Logged out.\n", "")
    assert token_server.revoke_count == 0 and token_server.post_count == 0
    assert not path.exists()


def test_logout_refuses_a_plain_http_revoke_url_elsewhere(
    codex_home: Path, token_server: TokenServer
) -> None:
    path = write_auth_json(codex_home)
    before = file_digest(path)
    env: dict[str, str | None] = {
        "CODEX_REVOKE_TOKEN_URL_OVERRIDE": "http://example.com/oauth/revoke",
        # Should the check fail, the request reaches the loopback server, not example.com.
        "HTTP_PROXY": f"http://127.0.0.1:{token_server.port}",
        "http_proxy": f"http://127.0.0.1:{token_server.port}",
        "NO_PROXY": None,
        "no_proxy": None,
    }
    run = cli("logout", codex_home=codex_home, token_url=token_server.url, env=env)
    assert run.code == 1
    assert traceback_free_one_liner(run.err)
    assert "revoke URL" in run.err
    assert file_digest(path) == before
    assert token_server.revoke_count == 0 and token_server.post_count == 0


@pytest.mark.parametrize("command", ["token", "logout"])
def test_a_missing_ca_certificate_file_is_a_one_line_error(
    codex_home: Path, token_server: TokenServer, command: str
) -> None:
    path = write_auth_json(codex_home, access=access_token(time.time() - 60))
    before = file_digest(path)
    missing = str(codex_home.parent / "no-such-ca.pem")
    env: dict[str, str | None] = {"CODEX_CA_CERTIFICATE": missing}
    run = cli(command, codex_home=codex_home, token_url=token_server.url, env=env)
    assert run.code == 1
    assert traceback_free_one_liner(run.err)
    assert "CODEX_CA_CERTIFICATE" in run.err and missing in run.err
    assert token_server.post_count == 0 and token_server.revoke_count == 0
    assert file_digest(path) == before


def test_login_api_key_reads_stdin_then_token_prints_it(codex_home: Path) -> None:
    write_auth_json(codex_home)  # a ChatGPT login that the key replaces
    run = cli("login", "--api-key", codex_home=codex_home, stdin=f"{API_KEY}\n")
    assert run.code == 0
    assert run.leaks([API_KEY]) == []
    doc = read_doc(codex_home / "auth.json")
    assert fp(doc["OPENAI_API_KEY"]) == fp(API_KEY)
    assert doc.get("tokens") is None
    assert (codex_home / "auth.json").stat().st_mode & 0o777 == 0o600

    run = cli("token", codex_home=codex_home)
    assert run.code == 0
    assert run.out_fp == fp(API_KEY + "\n")


BAD_API_KEYS = [
    ("no-input", b""),
    ("empty-line", b"\n"),
    ("blank-line", b"   \n"),
    ("inner-space", b"sk-has a-space\n"),
    ("leading-space", b" sk-abc\n"),
    ("tab", b"sk-a\tb\n"),
    ("invalid-utf8", b"sk-\xff\xfe\n"),
    ("utf8-encoded-lone-surrogate", b"sk-\xed\xa0\x80\n"),
    ("non-ascii", "sk-caf\u00e9\n".encode()),
    ("ansi-escape", b"sk-\x1b[31mred\n"),
    ("nul", b"sk-\x00abc\n"),
    ("del", b"sk-abc\x7f\n"),
    ("too-long", b"sk-" + b"a" * 5000 + b"\n"),
]


@pytest.mark.parametrize("stdin", [c[1] for c in BAD_API_KEYS], ids=[c[0] for c in BAD_API_KEYS])
def test_login_api_key_rejects_a_bad_key_and_changes_nothing(
    codex_home: Path, stdin: bytes
) -> None:
    path = write_auth_json(codex_home)
    before = file_digest(path)
    run = cli("login", "--api-key", codex_home=codex_home, stdin=stdin)
    assert run.code == 1
    assert traceback_free_one_liner(run.err)
    assert run.err.startswith("codexauth: ")
    assert file_digest(path) == before
    assert sorted(p.name for p in codex_home.iterdir()) == ["auth.json"]


def test_login_api_key_takes_the_line_without_its_crlf(codex_home: Path) -> None:
    run = cli("login", "--api-key", codex_home=codex_home, stdin=f"{API_KEY}\r\n".encode())
    assert (run.code, run.err) == (0, "")
    assert fp(read_doc(codex_home / "auth.json")["OPENAI_API_KEY"]) == fp(API_KEY)


# --help ########################################################################

HELP_CASES = [
    (
        "top-level",
        [],
        [
            *("--codex-home", "--timeout", "--lock-timeout", "--verbose", "--version"),
            *("token", "header", "refresh", "status", "logout", "login", "demo", "Exit codes"),
        ],
    ),
    ("token", ["token"], ["bearer token", "--json"]),
    ("header", ["header"], ["Authorization: Bearer"]),
    ("refresh", ["refresh"], ["peer"]),
    ("status", ["status"], ["logged in", "--json"]),
    ("logout", ["logout"], ["revoke", "delete auth.json", "--keep-token"]),
    ("login", ["login"], ["API key", "--api-key", "stdin"]),
    ("demo", ["demo"], ["expired login", "-n", "--processes"]),
]


@pytest.mark.parametrize(
    ("command", "mentions"), [c[1:] for c in HELP_CASES], ids=[c[0] for c in HELP_CASES]
)
def test_help_exits_0_and_mentions_every_option(
    capsys: pytest.CaptureFixture[str], command: list[str], mentions: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        codexauth.main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: codexauth {' '.join(command)}".rstrip())
    assert [word for word in mentions if word not in out] == []


# The exit-code table ###########################################################

# (id, what auth.json holds, what the endpoint does, argv, exit code, text stderr shows;
# "{auth_file}" in it stands for auth.json's path)
EXIT_CASES: list[tuple[str, str, Any, list[str], int, str | None]] = [
    ("0-fresh-token", "fresh", None, ["token"], 0, None),
    ("0-expired-refreshed", "expired", None, ["token"], 0, None),
    ("1-corrupt-auth-json-token", "corrupt", None, ["token"], 1, "{auth_file}: not valid JSON"),
    ("1-corrupt-auth-json-status", "corrupt", None, ["status"], 1, "{auth_file}: not valid JSON"),
    ("2-unknown-command", "fresh", None, ["frobnicate"], 2, "invalid choice"),
    ("2-no-command", "fresh", None, [], 2, "required"),
    ("2-timeout-not-a-number", "fresh", None, ["--timeout", "abc", "token"], 2, "'abc'"),
    ("2-timeout-negative", "fresh", None, ["--timeout", "-1", "token"], 2, "'-1'"),
    ("2-timeout-zero", "fresh", None, ["--timeout", "0", "token"], 2, "'0'"),
    ("2-store-unknown", "fresh", None, ["--store", "garbage", "token"], 2, "--store: "),
    ("2-store-unknown-after", "fresh", None, ["token", "--store", "garbage"], 2, "'garbage'"),
    ("2-demo-no-processes", "none", None, ["demo", "-n", "0"], 2, "-n/--processes: "),
    ("2-demo-negative-processes", "none", None, ["demo", "-n", "-3"], 2, "'-3'"),
    ("2-demo-too-many-processes", "none", None, ["demo", "-n", "257"], 2, "'257'"),
    ("3-no-auth-json-token", "none", None, ["token"], 3, "Not logged in"),
    ("3-no-auth-json-refresh", "none", None, ["refresh"], 3, "Not logged in"),
    ("0-api-key-login-refresh", "apikey", None, ["refresh"], 0, None),
    ("4-expired", "expired", (401, "refresh_token_expired"), ["token"], 4, EXPIRED_MESSAGE),
    ("4-reused", "expired", (401, "refresh_token_reused"), ["token"], 4, EXHAUSTED_MESSAGE),
    ("4-revoked", "expired", (401, "refresh_token_invalidated"), ["token"], 4, REVOKED_MESSAGE),
    ("4-401-unknown-code", "expired", (401, "token_unknown"), ["token"], 4, OTHER_MESSAGE),
    ("4-refresh-cmd", "fresh", (401, "refresh_token_expired"), ["refresh"], 4, EXPIRED_MESSAGE),
    ("5-http-500", "expired", (500, "server_error"), ["token"], 5, "500"),
    ("5-unreachable", "expired", "unreachable", ["token"], 5, "could not reach"),
    ("5-hung-endpoint", "expired", "hang", ["--timeout", "0.5", "token"], 5, "Failed to refresh"),
]


def exit_cases(*codes: int) -> Any:
    """Parametrize over the EXIT_CASES rows whose exit code is one of `codes`."""
    rows = [case for case in EXIT_CASES if case[4] in codes]
    return pytest.mark.parametrize(
        ("login", "endpoint", "argv", "code", "message"),
        [case[1:] for case in rows],
        ids=[case[0] for case in rows],
    )


class ExitCase:
    """One EXIT_CASES row run: the child, auth.json's path and digest before, its secrets."""

    def __init__(
        self,
        codex_home: Path,
        token_server: TokenServer,
        login: str,
        endpoint: Any,
        argv: list[str],
    ) -> None:
        self.path = codex_home / "auth.json"
        if login == "fresh":
            write_auth_json(codex_home)
        elif login == "expired":
            write_auth_json(codex_home, access_exp=time.time() - 60)
        elif login == "apikey":
            write_auth_json(codex_home, tokens=False, api_key=API_KEY)
        elif login == "corrupt":
            self.path.write_bytes(b'{"OPENAI_API_KEY": null, "tokens": {"access_')
        self.before = file_digest(self.path)
        self.secrets = (
            secrets_of(read_doc(codex_home / "auth.json"))
            if login not in ("none", "corrupt")
            else []
        )

        url = token_server.url
        if endpoint == "unreachable":
            url = UNREACHABLE_TOKEN_URL
        elif endpoint == "hang":
            token_server.hang_until_stopped()
        elif endpoint is not None:
            status, error_code = endpoint
            token_server.fail_next(status, {"error": {"code": error_code, "message": "no"}})
        self.run = cli(*argv, codex_home=codex_home, token_url=url)

    def expected(self, message: str) -> str:
        return message.format(auth_file=self.path)


@exit_cases(0)
def test_exit_0_writes_nothing_to_stderr(
    codex_home: Path,
    token_server: TokenServer,
    login: str,
    endpoint: Any,
    argv: list[str],
    code: int,
    message: None,
) -> None:
    case = ExitCase(codex_home, token_server, login, endpoint, argv)
    assert case.run.code == 0
    assert case.run.err == ""
    assert case.run.leaks(case.secrets, stdout=False) == []  # `token` prints one on stdout


@exit_cases(2)
def test_exit_2_is_a_usage_line_and_one_error_line(
    codex_home: Path,
    token_server: TokenServer,
    login: str,
    endpoint: Any,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    case = ExitCase(codex_home, token_server, login, endpoint, argv)
    run = case.run
    assert run.code == 2
    assert run.err.startswith("usage: codexauth")
    error_line = run.err.splitlines()[-1]
    assert re.match(r"codexauth( [a-z]+)?: error: ", error_line)  # a subcommand's names it
    assert case.expected(message) in error_line
    assert "Traceback" not in run.err
    assert run.out == ""
    assert run.leaks(case.secrets) == []
    assert file_digest(case.path) == case.before  # untouched


@exit_cases(1, 3, 5)
def test_exit_1_3_5_is_one_line_naming_the_problem_and_touches_nothing(
    codex_home: Path,
    token_server: TokenServer,
    login: str,
    endpoint: Any,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    case = ExitCase(codex_home, token_server, login, endpoint, argv)
    run = case.run
    assert run.code == code
    assert traceback_free_one_liner(run.err)
    assert run.err.startswith("codexauth: ")
    assert case.expected(message) in run.err
    assert run.out == ""
    assert run.leaks(case.secrets) == []
    assert file_digest(case.path) == case.before  # untouched


@exit_cases(4)
def test_exit_4_gives_codex_words_exactly_and_touches_nothing(
    codex_home: Path,
    token_server: TokenServer,
    login: str,
    endpoint: Any,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    case = ExitCase(codex_home, token_server, login, endpoint, argv)
    run = case.run
    assert (run.code, run.err, run.out) == (4, f"codexauth: {message}\n", "")  # nothing added
    assert run.leaks(case.secrets) == []
    assert file_digest(case.path) == case.before  # untouched


# --verbose #####################################################################


def test_verbose_logs_the_refresh_without_any_token(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home, access_exp=time.time() - 60)
    before = read_doc(codex_home / "auth.json")
    run = cli("--verbose", "token", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    after = read_doc(codex_home / "auth.json")
    assert run.out_fp == fp(after["tokens"]["access_token"] + "\n")
    assert token_server.post_count == 1
    log = run.err
    for event in ("lock taken", "refresh started", "refresh succeeded"):
        assert event in log
    assert all(line.startswith("codexauth") for line in log.splitlines())
    assert token_server.last_issued is not None
    issued = list(token_server.last_issued.values())
    assert run.leaks(secrets_of(before) + secrets_of(after) + issued, stdout=False) == []


def test_verbose_warm_token_logs_nothing_secret(
    codex_home: Path, token_server: TokenServer
) -> None:
    write_auth_json(codex_home)
    run = cli("-v", "token", codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0
    assert run.leaks(secrets_of(read_doc(codex_home / "auth.json")), stdout=False) == []


# Where auth.json is found #######################################################


def test_codex_home_option_overrides_the_environment(
    codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    env_token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=env_token)
    env_before = file_digest(codex_home / "auth.json")
    other = tmp_path / "other-home"
    other.mkdir()
    write_auth_json(other, access_exp=time.time() - 60)  # expired: the command refreshes here

    run = cli(
        "--codex-home", str(other), "token", codex_home=codex_home, token_url=token_server.url
    )
    assert run.code == 0
    assert run.out_fp == fp(read_doc(other / "auth.json")["tokens"]["access_token"] + "\n")
    assert run.out_fp != fp(env_token + "\n")
    assert token_server.post_count == 1
    assert (other / "auth.lock").exists()
    assert not (codex_home / "auth.lock").exists()
    assert file_digest(codex_home / "auth.json") == env_before


def test_global_options_are_taken_after_the_command_too(
    codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    write_auth_json(codex_home)
    env_before = file_digest(codex_home / "auth.json")
    other = tmp_path / "other-home"
    other.mkdir()
    write_auth_json(other, access_exp=time.time() - 60)  # expired: the command refreshes here

    argv = ["token", "--codex-home", str(other), "--store", "file", "--timeout", "9", "-v"]
    run = cli(*argv, codex_home=codex_home, token_url=token_server.url)
    assert run.code == 0, run
    assert run.out_fp == fp(read_doc(other / "auth.json")["tokens"]["access_token"] + "\n")
    assert token_server.post_count == 1
    assert "refresh succeeded" in run.err  # -v after the command counts too
    assert file_digest(codex_home / "auth.json") == env_before
    # Given before the command and not after, an option keeps its value.
    run = cli("--codex-home", str(other), "status", "--json", codex_home=codex_home)
    assert json.loads(run.out)["auth_file"] == str(other / "auth.json")


def test_a_bad_store_variable_is_one_line_naming_it(codex_home: Path) -> None:
    write_auth_json(codex_home)
    before = file_digest(codex_home / "auth.json")
    run = cli("token", codex_home=codex_home, env={"CODEXAUTH_STORE": "garbage"})
    assert run.code == 1
    assert traceback_free_one_liner(run.err)
    assert run.err.startswith("codexauth: CODEXAUTH_STORE must be ")
    assert "'garbage'" in run.err
    assert "usage:" not in run.err
    assert file_digest(codex_home / "auth.json") == before


def test_default_home_is_dot_codex_under_home(codex_home: Path, token_server: TokenServer) -> None:
    # The fixture's CODEX_HOME is HOME/.codex; py_env sets HOME to its parent.
    assert codex_home.name == ".codex"
    token = access_token(time.time() + 3600)
    write_auth_json(codex_home, access=token)
    unset = {"CODEX_HOME": None}
    run = cli("token", codex_home=codex_home, token_url=token_server.url, env=unset)
    assert run.code == 0
    assert run.out_fp == fp(token + "\n")
    run = cli("status", "--json", codex_home=codex_home, token_url=token_server.url, env=unset)
    assert json.loads(run.out)["auth_file"] == str(codex_home / "auth.json")


def test_codex_home_option_expands_a_tilde(codex_home: Path) -> None:
    home = codex_home.parent  # the child's HOME (py_env) and working directory (cli)
    run = cli(
        "--codex-home", "~/elsewhere", "login", "--api-key", codex_home=codex_home, stdin=API_KEY
    )
    assert (run.code, run.err) == (0, "")
    assert str(home / "elsewhere" / "auth.json") in run.out
    assert fp(read_doc(home / "elsewhere" / "auth.json")["OPENAI_API_KEY"]) == fp(API_KEY)
    assert not (home / "~").exists()

    run = cli("--codex-home", "~/elsewhere", "token", codex_home=codex_home)
    assert run.code == 0
    assert run.out_fp == fp(API_KEY + "\n")


# demo and the warm path ###########################################################


def test_demo_makes_one_refresh_request(codex_home: Path) -> None:
    run = cli("demo", "-n", "4", codex_home=codex_home)
    assert run.code == 0
    assert re.search(r"refresh requests:\s+1$", run.out, re.M)
    assert re.search(r"processes:\s+4 \(0 failed\)", run.out)
    assert list(codex_home.iterdir()) == []  # the demo uses its own temporary login


@pytest.mark.parametrize("mode", ["chatgpt", "apikey"])
def test_warm_token_imports_no_dependency_and_takes_no_lock(
    codex_home: Path, token_server: TokenServer, mode: str
) -> None:
    if mode == "apikey":
        token = API_KEY
        write_auth_json(codex_home, tokens=False, api_key=API_KEY)
    else:
        token = access_token(time.time() + 3600)
        write_auth_json(codex_home, access=token)
    importtime = ("-X", "importtime")
    run = cli("token", codex_home=codex_home, token_url=token_server.url, python_args=importtime)
    assert run.code == 0
    assert run.out_fp == fp(token + "\n")
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in run.err.splitlines()
        if line.startswith("import time:")
    }
    assert "json" in imported  # -X importtime did report what codexauth imports
    assert imported & {"requests", "portalocker", "platformdirs", "urllib3"} == set()
    # Nor datetime, though auth.json has a last_refresh: it is parsed without it.
    assert "last_refresh" in json.loads((codex_home / "auth.json").read_text())
    assert "datetime" not in imported
    assert sorted(p.name for p in codex_home.iterdir()) == ["auth.json"]  # no auth.lock
    assert token_server.post_count == 0


def test_a_login_kind_codexauth_cannot_serve_is_exit_1_naming_it(
    codex_home: Path, token_server: TokenServer
) -> None:
    path = write_auth_json(
        codex_home, access_exp=time.time() - 60, extra_top={"auth_mode": "personalAccessToken"}
    )
    before = file_digest(path)
    for command in ("token", "status", "refresh"):
        run = cli(command, codex_home=codex_home, token_url=token_server.url)
        assert run.code == 1, (command, run.err)
        assert run.err.count("\n") == 1 and "'personalAccessToken'" in run.err
        assert "Not logged in" not in run.err and "codex login" not in run.err
    assert token_server.post_count == 0
    assert file_digest(path) == before


# Waiting for another process's refresh ##########################################


def _token_while_another_holds_the_lock(
    codex_home: Path, token_server: TokenServer, *options: str, tty: bool
) -> tuple[Run, str, int]:
    """``codexauth OPTIONS token`` on an expired login while a real process holds the refresh
    lock for about 2 s; (the run, what reached the terminal, the holder's pid).

    With `tty`, stderr is a pseudo-terminal's; what the child writes there is collected.
    """
    write_auth_json(codex_home, access_exp=time.time() - 60)
    env = py_env(codex_home, token_server.url)
    holder = subprocess.Popen(
        [sys.executable, *child("hold_lock")],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    terminal = b""
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        master, slave = pty.openpty() if tty else (-1, -1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "codexauth", *options, "token"],
            env=env,
            cwd=codex_home.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave if tty else subprocess.PIPE,
        )
        if tty:
            os.close(slave)
        release_at = time.monotonic() + 2.0
        while time.monotonic() < release_at:
            if tty and select.select([master], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):  # EIO: the child closed the terminal
                    terminal += os.read(master, 4096)
            else:
                time.sleep(0.05)
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
        if tty:
            while select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                terminal += chunk
            os.close(master)
    finally:
        holder.kill()
        holder.wait(timeout=CLI_TIMEOUT)
    run = Run(
        subprocess.CompletedProcess(
            proc.args, proc.returncode, out.decode(), (err or b"").decode()
        )
    )
    return run, scrub(terminal.decode("utf-8", "replace")), holder.pid


def test_a_wait_for_another_refresh_says_so_once_on_a_terminal(
    codex_home: Path, token_server: TokenServer
) -> None:
    run, terminal, holder_pid = _token_while_another_holds_the_lock(
        codex_home, token_server, tty=True
    )
    assert run.code == 0, (run, terminal)
    lines = terminal.splitlines()
    assert len(lines) == 1, terminal
    assert lines[0].startswith("codexauth: waiting up to 60 s for another process to finish")
    assert str(codex_home / "auth.lock") in lines[0]  # what it waits for
    if sys.platform.startswith("linux"):
        assert re.search(rf": pid {holder_pid} \(python[\d.]*\)$", lines[0])  # who holds it
    assert token_server.post_count == 1  # the holder refreshed nothing; this one did


@pytest.mark.parametrize("where", ["quiet-on-a-terminal", "stderr-not-a-terminal"])
def test_a_wait_for_another_refresh_is_silent_with_q_or_off_a_terminal(
    codex_home: Path, token_server: TokenServer, where: str
) -> None:
    tty = where == "quiet-on-a-terminal"
    options = ("-q",) if tty else ()
    run, terminal, _ = _token_while_another_holds_the_lock(
        codex_home, token_server, *options, tty=tty
    )
    assert run.code == 0, (run, terminal)
    assert (terminal, run.err) == ("", "")
    assert token_server.post_count == 1
