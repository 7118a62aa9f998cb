"""The test token server behaves like the real endpoint, so the other tests can trust it."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from support import TESTS_DIR, TokenServer, access_token, fp, make_jwt, run_py

TIMEOUT = 5.0


def post(url: str, refresh_token: str, timeout: float = TIMEOUT) -> tuple[int, dict[str, Any]]:
    """POST a refresh request as Codex does; return (status, JSON body)."""
    body = {
        "client_id": "app_test",
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "scope": "openid profile email",
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "==")))


def error_code(body: dict[str, Any]) -> str:
    return str(body["error"]["code"])


def test_first_use_rotates_and_second_use_is_reused(token_server: TokenServer) -> None:
    status, body = post(token_server.url, "rt-0")
    assert status == 200
    assert set(body) == {"access_token", "refresh_token", "id_token"}
    assert fp(body["refresh_token"]) == fp("rt-1")
    assert claims(body["access_token"])["exp"] > time.time() + 3000

    status, again = post(token_server.url, "rt-0")
    assert (status, error_code(again)) == (401, "refresh_token_reused")

    status, _ = post(token_server.url, "rt-1")
    assert status == 200
    assert token_server.post_count == 3
    assert token_server.redacted_log() == ["200", "401 refresh_token_reused", "200"]


def test_unknown_token_is_invalidated(token_server: TokenServer) -> None:
    status, body = post(token_server.url, "rt-never-issued")
    assert (status, error_code(body)) == (401, "refresh_token_invalidated")
    assert token_server.valid == {"rt-0"}


def test_fail_next_does_not_consume_the_refresh_token(token_server: TokenServer) -> None:
    token_server.fail_next(500, {"error": "temporary-failure"}, times=2)
    assert post(token_server.url, "rt-0") == (500, {"error": "temporary-failure"})
    assert post(token_server.url, "rt-0")[0] == 500
    assert post(token_server.url, "rt-0")[0] == 200
    assert token_server.redacted_log() == ["500", "500", "200"]


def test_omit_fields_and_access_ttl_shape_the_success_response(
    token_server: TokenServer,
) -> None:
    token_server.omit_fields = {"id_token"}
    token_server.access_ttl = 60
    status, body = post(token_server.url, "rt-0")
    assert status == 200
    assert set(body) == {"access_token", "refresh_token"}
    assert claims(body["access_token"])["exp"] <= time.time() + 61
    assert token_server.last_issued == body


def test_count_endpoint_reports_posts(token_server: TokenServer) -> None:
    post(token_server.url, "rt-0")
    post(token_server.url, "bogus")
    with urllib.request.urlopen(token_server.count_url, timeout=TIMEOUT) as response:
        assert json.loads(response.read()) == {"posts": 2}


def test_stop_returns_promptly_while_a_request_hangs() -> None:
    server = TokenServer().start()
    server.hang_until_stopped()
    client_errors: list[BaseException] = []

    def client() -> None:
        try:
            post(server.url, "rt-0", timeout=30)
        except Exception as exc:  # the dropped connection is the expected outcome
            client_errors.append(exc)

    client_thread = threading.Thread(target=client, daemon=True)
    client_thread.start()
    wait_for(lambda: server.post_count == 1)

    # Generous bounds: the point is that stop() and the client finish at all.
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=10)
    client_thread.join(timeout=10)
    assert not stopper.is_alive()
    assert not client_thread.is_alive()
    assert len(client_errors) == 1
    assert server.redacted_log() == ["hung"]
    assert server.valid == {"rt-0"}


def test_make_jwt_round_trips_claims() -> None:
    assert claims(make_jwt({"a": 1, "b": {"c": "d"}})) == {"a": 1, "b": {"c": "d"}}
    assert access_token(100) != access_token(100)


def test_auth_json_is_written_in_codex_format(auth_json: Callable[..., Path]) -> None:
    path = auth_json(refresh="rt-7", extra_top={"auth_mode": "chatgpt"})
    doc = json.loads(path.read_text())
    assert list(doc) == ["OPENAI_API_KEY", "tokens", "last_refresh", "auth_mode"]
    assert list(doc["tokens"]) == ["id_token", "access_token", "refresh_token", "account_id"]
    assert fp(doc["tokens"]["refresh_token"]) == fp("rt-7")
    assert doc["last_refresh"].endswith("Z")
    assert path.read_text().startswith('{\n  "OPENAI_API_KEY": null,')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["auth.json"]


def test_run_py_child_sees_the_test_home(codex_home: Path, token_server: TokenServer) -> None:
    code = "import os, support; print(os.environ['HOME'], os.environ['CODEX_HOME'])"
    result = run_py(code, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(codex_home.parent), str(codex_home)]

    code = "import os; print(os.environ['CODEX_REFRESH_TOKEN_URL_OVERRIDE'])"
    assert run_py(code, timeout=30).stdout.strip() == token_server.url


def test_serve_cli_prints_its_url_and_serves() -> None:
    argv = [sys.executable, str(TESTS_DIR / "support.py"), "serve", "--valid", "rt-a"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert post(url, "rt-a")[0] == 200
            count_url = url.replace("/oauth/token", "/count")
            with urllib.request.urlopen(count_url, timeout=TIMEOUT) as response:
                assert json.loads(response.read()) == {"posts": 1}
        finally:
            proc.terminate()
            proc.wait(timeout=TIMEOUT)


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)
