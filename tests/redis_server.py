"""A real ``redis-server`` for tests: a free 127.0.0.1 port, no persistence, stopped by pid.

Stdlib only (a tiny RESP client does PING, AUTH and SHUTDOWN), so tests, subprocess workers and
benchmarks can all use it without redis-py::

    with RedisServer(password="pw-for-this-test") as server:
        server.url()          # redis://:…@127.0.0.1:PORT/0 (url("user", "pw") for ACL users)
        server.pause()        # SIGSTOP: connections are accepted and never answered
        server.resume()
        server.stop()         # SIGKILL: what was written since the last save is lost
        server.stop(save=True)  # SHUTDOWN SAVE: start() loads it again, as a real Redis would
        server.restart()      # stop() and start() on the same port (and socket)

Secrets stay out of argv (other users can read it in ``ps``) and out of every repr and error:
the password and the ACL users go into a 0600 config file.

    python tests/redis_server.py [--unix]

prints the URL on its first line and serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

REDIS_SERVER = "redis-server"
HOST = "127.0.0.1"
# Bounds on waiting for the server: it is up in ~10 ms here; CI may be slower.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# Another process may take the free port between our probe and the server's bind.
START_ATTEMPTS = 5


class RedisReplyError(Exception):
    """An error reply (``-ERR …``) from the server; it never echoes a password sent."""


def redis_server_path() -> str | None:
    """The ``redis-server`` executable on PATH, or None when it is not installed."""
    return shutil.which(REDIS_SERVER)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


# RESP ########################################################################


def _encode(args: Sequence[str | bytes | int]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(stream: socket.SocketIO) -> object:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = stream.read(1)
        if not chunk:
            raise ConnectionError("redis-server closed the connection")
        line += chunk
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisReplyError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = b""
        while len(data) < size + 2:
            chunk = stream.read(size + 2 - len(data))
            if not chunk:
                raise ConnectionError("redis-server closed the connection")
            data += chunk
        return data[:-2]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read_reply(stream) for _ in range(size)]
    raise ConnectionError(f"not a RESP reply: {kind!r}")


# Server ######################################################################


def _conf_quote(value: str) -> str:
    """A redis.conf argument, quoted so that spaces and quotes survive."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, in a private temporary directory.

    `password` sets ``requirepass`` (the ``default`` user's password). `users` are ACL rules
    written as ``user <rule>`` lines, e.g. ``"app on >secret ~codexauth:* +get"``: the
    server refuses to start on a bad rule, which fails the test that asked for it. `unix_socket`
    also listens on ``<tmp>/redis.sock`` (0700). `tls` is (cert file, key file, CA file), e.g.
    from trustme: the port then speaks only TLS, clients are not asked for certificates, and
    url() is ``rediss://``. `config` lines are added verbatim to the config file
    (``"notify-keyspace-events Kh"``). `appendonly` turns AOF on (fsync every second), so that
    a kill -9 and a start() come back with what was written, as a durable Redis does.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        users: Sequence[str] = (),
        unix_socket: bool = False,
        tls: tuple[str, str, str] | None = None,
        config: Sequence[str] = (),
        executable: str | None = None,
        appendonly: bool = False,
    ) -> None:
        self.password = password
        self.appendonly = appendonly
        self.users = tuple(users)
        self.tls = tls
        self.config = tuple(config)
        self.executable = executable or redis_server_path() or REDIS_SERVER
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        # Short: a unix socket's path must fit in 107 bytes, and pytest's tmp_path may not.
        self.directory = Path(tempfile.mkdtemp(prefix="redis-"))
        self.unix_path = self.directory / "redis.sock" if unix_socket else None

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {HOST}:{self.port} pid={self.pid} {state}>"

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run: remove the directory here
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # addresses

    def url(self, username: str | None = None, password: str | None = None, db: int = 0) -> str:
        """``redis://`` (``rediss://`` with TLS) for `username`/`password` (default: the
        ``default`` user's password)."""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{self._userinfo(username, password)}{HOST}:{self.port}/{db}"

    def unix_url(
        self, username: str | None = None, password: str | None = None, db: int = 0
    ) -> str:
        """``unix://`` to the socket, in the form ``redis.Redis.from_url`` reads."""
        if self.unix_path is None:
            raise RuntimeError("this RedisServer was started without unix_socket=True")
        return f"unix://{self._userinfo(username, password)}{self.unix_path}?db={db}"

    def _userinfo(self, username: str | None, password: str | None) -> str:
        if password is None and username is None:
            password = self.password
        if password is None:
            return "" if username is None else f"{quote(username, safe='')}@"
        return f"{quote(username or '', safe='')}:{quote(password, safe='')}@"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # lifecycle

    def start(self) -> RedisServer:
        """Start on a free port (kept from now on), and return once it answers PING."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        if self.port:
            self._spawn()
            return self
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            try:
                self._spawn()
                return self
            except RuntimeError:
                if attempt == START_ATTEMPTS - 1 or "in use" not in self.log_tail():
                    raise
        raise AssertionError("unreachable")

    def stop(self, *, save: bool = False) -> None:
        """Stop the server: ``SHUTDOWN SAVE`` if `save` (restart() loads it), else SIGKILL."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.resume()  # a stopped process handles no SHUTDOWN (SIGKILL works regardless)
        if save:
            # The server closes the connection as it exits: that is the answer.
            with contextlib.suppress(ConnectionError):
                self.command("SHUTDOWN", "SAVE")
        else:
            process.kill()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> RedisServer:
        """Stop if running, then start again on the same port and socket."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, but nothing is answered."""
        if self.running and not self.paused:
            assert self.pid is not None
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.running and self.paused:
            assert self.pid is not None
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    # talking to it

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> object:
        """One command on a new connection, authenticated as ``default`` when a password is set.

        Returns bytes, int, None or a list of those; raises RedisReplyError on an error reply
        and ConnectionError (an OSError) when the server cannot be reached.
        """
        with self._connect(timeout) as sock:
            stream = socket.SocketIO(sock, "rb")
            if self.password is not None:
                sock.sendall(_encode(["AUTH", self.password]))
                _read_reply(stream)
            sock.sendall(_encode(args))
            return _read_reply(stream)

    def ping(self, timeout: float = 1.0) -> bool:
        """True once the server answers PING (with our password, if one is set)."""
        try:
            return self.command("PING", timeout=timeout) == b"PONG"
        except (OSError, RedisReplyError):
            return False

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's log and stderr (a bad config line is reported there)."""
        text = ""
        for name in ("stderr.log", "redis.log"):
            with contextlib.suppress(OSError):
                text += (self.directory / name).read_text("utf-8", "replace")
        return text[-size:]

    # internals

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=timeout)
        if self.tls is None:
            return sock
        import ssl  # deferred: only TLS servers need it

        context = ssl.create_default_context(cafile=self.tls[2])
        try:
            return context.wrap_socket(sock, server_hostname=HOST)
        except BaseException:
            sock.close()
            raise

    def _spawn(self) -> None:
        conf = self.directory / "redis.conf"
        secret = self.directory / "secret.conf"
        secret_lines = [f"user {rule}" for rule in self.users]
        if self.password is not None:
            secret_lines.append(f"requirepass {_conf_quote(self.password)}")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in secret_lines))
        aof = "yes" if self.appendonly else "no"
        lines = [
            f"include {_conf_quote(str(secret))}",
            f"port {self.port}",
            f"bind {HOST}",
            'save ""',
            f"appendonly {aof}",
            f"dir {_conf_quote(str(self.directory))}",
            f"logfile {_conf_quote(str(self.directory / 'redis.log'))}",
            "daemonize no",
        ]
        if self.unix_path is not None:
            lines += [f"unixsocket {_conf_quote(str(self.unix_path))}", "unixsocketperm 700"]
        if self.tls is not None:
            cert, key, ca = (_conf_quote(str(Path(path).resolve())) for path in self.tls)
            lines[1] = "port 0"
            lines += [
                f"tls-port {self.port}",
                f"tls-cert-file {cert}",
                f"tls-key-file {key}",
                f"tls-ca-cert-file {ca}",
                "tls-auth-clients no",
            ]
        conf.write_text("".join(line + "\n" for line in [*lines, *self.config]), "utf-8")
        # The options the tests rely on are on the command line too, where `ps` shows them.
        argv = [self.executable, str(conf), "--save", "", "--appendonly", aof]
        self.paused = False
        with open(self.directory / "stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server did not start on {HOST}:{self.port}: "
                    f"{self._scrub(self.log_tail(500)).strip() or 'no output'}"
                )
            time.sleep(0.005)

    def _scrub(self, text: str) -> str:
        """`text` without our passwords: redis-server quotes a bad config line in its log."""
        secrets = [w[1:] for rule in self.users for w in rule.split() if w[:1] in ">#"]
        for secret in filter(None, [self.password, *secrets]):
            text = text.replace(secret, "***")
        return text

    def _answers(self) -> bool:
        """Whether anything answers a bare PING: PONG, or NOAUTH from a server with a password."""
        try:
            with self._connect(0.5) as sock:
                sock.sendall(_encode(["PING"]))
                _read_reply(socket.SocketIO(sock, "rb"))
        except RedisReplyError:
            return True
        except OSError:
            return False
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a throwaway redis-server until killed.")
    parser.add_argument("--unix", action="store_true", help="print the unix:// URL instead")
    args = parser.parse_args(argv)
    with RedisServer(unix_socket=args.unix) as server:
        print(server.unix_url() if args.unix else server.url(), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            assert server.process is not None
            server.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
