"""The redis-server test fixture itself: a real server, reachable, stoppable, password-guarded."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from redis_server import RedisServer


def _client(redis_py: ModuleType, url: str, **kwargs: Any) -> Any:
    # No retries: a test of an unreachable server must see the first failure.
    return redis_py.Redis.from_url(url, **{"retry": None, "socket_timeout": 2.0, **kwargs})


def test_ping_set_get(redis_url: str, redis_py: ModuleType) -> None:
    client = _client(redis_py, redis_url)
    assert client.ping() is True
    client.set("codexauth:test", b"value")
    assert client.get("codexauth:test") == b"value"


def test_stop_and_restart_keep_the_port(redis_server: RedisServer, redis_py: ModuleType) -> None:
    client = _client(redis_py, redis_server.url())
    client.set("kept", b"1")
    client.set("lost", b"1")
    port = redis_server.port
    redis_server.stop(save=True)
    with pytest.raises(redis_py.ConnectionError):
        _client(redis_py, redis_server.url()).ping()
    redis_server.start()
    assert redis_server.port == port
    client.set("lost", b"2")  # the same client reconnects to the same address
    redis_server.restart()  # a kill: only what the saved snapshot held comes back
    assert (client.get("kept"), client.get("lost")) == (b"1", b"1")


def test_pause_answers_nothing_until_resumed(
    redis_server: RedisServer, redis_py: ModuleType
) -> None:
    client = _client(redis_py, redis_server.url(), socket_timeout=0.2)
    redis_server.pause()
    with pytest.raises(redis_py.TimeoutError):
        client.ping()
    redis_server.resume()
    assert client.ping() is True


def test_password_is_required_and_never_shown(
    start_redis: Callable[..., RedisServer], redis_py: ModuleType
) -> None:
    password = secrets.token_hex(16)
    server = start_redis(password=password, unix_socket=True)
    with pytest.raises(redis_py.AuthenticationError) as no_password:
        _client(redis_py, server.url(password="")).ping()
    with pytest.raises(redis_py.AuthenticationError) as wrong:
        _client(redis_py, server.url(password="wrong")).ping()
    assert _client(redis_py, server.url()).ping() is True
    assert _client(redis_py, server.unix_url()).ping() is True
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    texts = {
        "no-password error": str(no_password.value),
        "wrong-password error": str(wrong.value),
        "repr": repr(server),
        "argv": cmdline.decode(),
    }
    # Names only: a failing assert must not print the password itself.
    assert [name for name, text in texts.items() if password in text] == []


def test_acl_user_is_confined_to_its_keys(
    start_redis: Callable[..., RedisServer], redis_py: ModuleType
) -> None:
    server = start_redis(users=["app on >app-pw resetkeys ~codexauth:* +get +set"])
    app = _client(redis_py, server.url("app", "app-pw"))
    app.set("codexauth:x", b"1")
    assert app.get("codexauth:x") == b"1"
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        app.set("other", b"1")
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        app.delete("codexauth:x")


def test_tls_server_speaks_only_tls(
    start_redis: Callable[..., RedisServer], redis_py: ModuleType, tmp_path: Path
) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, key_file, cert_file = (tmp_path / n for n in ("ca.pem", "key.pem", "cert.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    server = start_redis(tls=(str(cert_file), str(key_file), str(ca_file)))
    assert server.url().startswith("rediss://")
    assert _client(redis_py, server.url(), ssl_ca_certs=str(ca_file)).ping() is True
    plain = server.url().replace("rediss://", "redis://")
    with pytest.raises(redis_py.ConnectionError):
        _client(redis_py, plain, socket_timeout=1.0).ping()


def test_a_bad_acl_rule_fails_the_start_without_showing_the_password(
    start_redis: Callable[..., RedisServer],
) -> None:
    password = secrets.token_hex(16)
    with pytest.raises(RuntimeError, match="Syntax error") as failed:
        start_redis(users=[f"app on >{password} ~codexauth:* nonsense"])
    shown = password in str(failed.value)
    assert not shown, "the error shows the password"
