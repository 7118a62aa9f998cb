"""A real, private Secret Service for tests: gnome-keyring-daemon on a D-Bus bus of its own.

Stdlib only at import: starting and stopping the service needs only the `dbus-daemon`,
`dbus-send` and `gnome-keyring-daemon` programs (Debian: packages ``dbus`` and
``gnome-keyring``). The helpers that read or write items import ``secretstorage`` (the test
extra) inside the function, as codexauth does with its optional imports.

    with SecretService.start() as service:         # or SecretServiceUnavailableError: why not
        child_env = {**env, **service.client_env}  # DBUS_SESSION_BUS_ADDRESS for a child
        path = service.create_codex_item(store_key(codex_home), json_text)
        [item] = service.items(CODEX_SERVICE, store_key(codex_home))
        service.lock()                             # the default collection, as a screen lock
        service.unlock()                           # with the password, no prompt

The bus has no service directories, so nothing is D-Bus-activated behind our back (no second
keyring daemon, no GUI prompter): an operation that needs a prompt fails instead of waiting
for a person. The keyring daemon runs with a fresh HOME and XDG directories under a temporary
directory and is unlocked at start with a non-empty password on stdin (with an empty one it
would want a prompt to create the login collection). Everything is stopped by pid.

Nothing here prints a secret: `ItemInfo` holds no secret, `secret()` returns one for the
caller to compare with ``fp()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # third-party, imported at run time only by the helpers that need it
    from jeepney.io.blocking import DBusConnection  # type: ignore[import-untyped]  # no py.typed

# What the Codex CLI stores ###################################################

# as codex-rs/login/src/auth/storage.rs (KEYRING_SERVICE) and keyring-rs 3.6.3
# src/secret_service.rs (SsCredential::new_with_target with no target, used by Entry::new)
CODEX_SERVICE = "Codex Auth"
KEYRING_RS_VERSION = "3.6.3"  # the keyring crate in codex-cli 0.171 (its label says so)
CODEX_CONTENT_TYPE = "text/plain"
# Added by gnome-keyring itself to every item created without one (not by the client).
GNOME_SCHEMA_ATTRIBUTE = ("xdg:schema", "org.freedesktop.Secret.Generic")


def store_key(codex_home: str | os.PathLike[str]) -> str:
    """The keyring account Codex uses for `codex_home`: ``cli|`` + sha256(canonical path)[:16].

    A test-side copy of Codex's rule (codex-rs/login/src/auth/storage.rs compute_store_key):
    canonicalize (symlinks resolved; on failure the path as given), to_string_lossy, SHA-256,
    lowercase hex, first 16 characters.
    """
    try:
        canonical = str(Path(codex_home).resolve(strict=True))
    except (OSError, RuntimeError):  # missing, or a symlink loop (RuntimeError before 3.13)
        canonical = os.fspath(codex_home)
    # to_string_lossy: invalid UTF-8 (a surrogate-escaped byte here) becomes U+FFFD.
    raw = os.fsencode(canonical)
    text = raw.decode("utf-8", errors="replace")
    return "cli|" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def codex_attributes(account: str) -> dict[str, str]:
    """The attributes keyring-rs 3.6.3 gives the item of ``Entry::new("Codex Auth", account)``."""
    return {
        "application": "rust-keyring",
        "service": CODEX_SERVICE,
        "target": "default",
        "username": account,
    }


def codex_label(account: str) -> str:
    """The label keyring-rs 3.6.3 gives that item: ``{user}@{service}:{target} (keyring v…)``."""
    return f"{account}@{CODEX_SERVICE}:default (keyring v{KEYRING_RS_VERSION})"


# The service ##################################################################


class SecretServiceUnavailableError(RuntimeError):
    """The private Secret Service cannot run here; the message says why in one line."""


@dataclasses.dataclass(frozen=True)
class ItemInfo:
    """What a test may print about an item: never its secret."""

    path: str
    collection: str
    label: str
    attributes: dict[str, str]
    locked: bool


# Programs and the Debian packages that ship them (for the reason a test is skipped).
PROGRAMS = {"dbus-daemon": "dbus", "dbus-send": "dbus", "gnome-keyring-daemon": "gnome-keyring"}
DEFAULT_PASSWORD = "codexauth-tests"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_SOCKET_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

_SECRETS_NAME = "org.freedesktop.secrets"
_SECRETS_PATH = "/org/freedesktop/secrets"
# gnome-keyring's own interface for unlocking with the password, without a prompt
# (what `gnome-keyring-daemon --unlock` and seahorse's scripts use).
_GNOME_INTERNAL = "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface"


def missing_programs() -> list[str]:
    """The Debian packages to install for the programs that are not on PATH."""
    return sorted({pkg for prog, pkg in PROGRAMS.items() if shutil.which(prog) is None})


class SecretService:
    """A started private bus and keyring daemon; see the module docstring."""

    def __init__(self, root: Path, password: str) -> None:
        self.root = root
        self.password = password
        self.home = root / "home"
        self.socket = root / "bus"
        self.address = ""
        self._bus: subprocess.Popen[bytes] | None = None
        self._keyring: subprocess.Popen[bytes] | None = None

    # lifecycle

    @classmethod
    def start(
        cls, *, password: str = DEFAULT_PASSWORD, timeout: float = START_TIMEOUT
    ) -> SecretService:
        """Start the bus and the unlocked keyring daemon; SecretServiceUnavailableError if not."""
        if not sys.platform.startswith("linux"):
            raise SecretServiceUnavailableError(
                f"the Secret Service tests run on Linux, not {sys.platform}"
            )
        missing = missing_programs()
        if missing:
            raise SecretServiceUnavailableError(
                f"not installed: {', '.join(missing)} (apt-get install)"
            )
        if not password:
            raise ValueError("gnome-keyring needs a non-empty password to create its collection")
        service = cls(_short_temp_dir(), password)
        try:
            service._start_bus(timeout)
            service._start_keyring(timeout)
        except BaseException:
            service.stop()
            raise
        return service

    def stop(self) -> None:
        """Stop the keyring daemon, then the bus, by pid; remove every file they had."""
        for proc in (self._keyring, self._bus):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT)
        self._keyring = self._bus = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SecretService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """The pids of the processes this service started and has not yet stopped."""
        return [p.pid for p in (self._bus, self._keyring) if p is not None and p.poll() is None]

    @property
    def client_env(self) -> dict[str, str]:
        """What a child needs to use this service: the bus address (nothing else)."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    @property
    def daemon_env(self) -> dict[str, str]:
        """The environment the keyring daemon runs in: a fresh HOME and XDG directories."""
        home = self.home
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "DBUS_SESSION_BUS_ADDRESS": self.address,
            "LANG": "C.UTF-8",
        }

    def _start_bus(self, timeout: float) -> None:
        config = self.root / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=self.socket), encoding="utf-8")
        with open(self.root / "dbus.log", "wb") as log:
            self._bus = subprocess.Popen(
                ["dbus-daemon", "--config-file", str(config), "--nofork", "--print-address=1"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
                cwd=str(self.root),
            )
        assert self._bus.stdout is not None
        line = _read_line(self._bus.stdout, timeout)
        self._bus.stdout.close()
        if not line.startswith("unix:"):
            raise SecretServiceUnavailableError(
                f"dbus-daemon did not start: {self._log_tail('dbus.log') or 'no output'}"
            )
        self.address = line

    def _start_keyring(self, timeout: float) -> None:
        for sub in (".config", ".cache", ".local/share", ".local/state"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(mode=0o700)
        with open(self.root / "keyring.log", "wb") as log:
            self._keyring = subprocess.Popen(
                [
                    "gnome-keyring-daemon",
                    "--foreground",
                    "--unlock",
                    "--components=secrets",
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=self.daemon_env,
                cwd=str(self.home),
            )
        assert self._keyring.stdin is not None
        # --unlock reads the password from stdin up to EOF.
        self._keyring.stdin.write(self.password.encode("utf-8"))
        self._keyring.stdin.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._keyring.poll() is not None:
                raise SecretServiceUnavailableError(
                    f"gnome-keyring-daemon exited with {self._keyring.returncode}: "
                    f"{self._log_tail('keyring.log') or 'no output'}"
                )
            if self._default_collection_path() not in (None, "/"):
                return
            if time.monotonic() > deadline:
                raise SecretServiceUnavailableError(
                    f"gnome-keyring-daemon made no default collection within {timeout:g} s: "
                    f"{self._log_tail('keyring.log') or 'no output'}"
                )
            time.sleep(0.02)

    def _default_collection_path(self) -> str | None:
        """ReadAlias("default") through dbus-send (stdlib only), or None if not answered yet."""
        result = subprocess.run(
            [
                "dbus-send",
                f"--bus={self.address}",
                "--print-reply=literal",
                f"--dest={_SECRETS_NAME}",
                _SECRETS_PATH,
                "org.freedesktop.Secret.Service.ReadAlias",
                "string:default",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT,
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else None

    def _log_tail(self, name: str) -> str:
        try:
            text = (self.root / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " / ".join(lines[-3:])

    # talking to it (secretstorage, imported here)

    @contextlib.contextmanager
    def connect(self) -> Iterator[DBusConnection]:
        """A secretstorage-ready connection to this service's bus, closed on exit."""
        from jeepney.io.blocking import open_dbus_connection
        from secretstorage.util import add_match_rules

        connection = open_dbus_connection(bus=self.address)
        try:
            add_match_rules(connection)  # prompts' Completed signals, as secretstorage.dbus_init
            yield connection
        finally:
            connection.close()

    def create_codex_item(self, account: str, secret: str) -> str:
        """Create the item the Codex CLI creates for `account`; its D-Bus path.

        As keyring-rs 3.6.3 `set_password` on a new entry: default collection, Codex's label
        and attributes, content type text/plain, ``replace = true``, UTF-8 secret.
        """
        return self.create_item(codex_label(account), codex_attributes(account), secret)

    def create_item(
        self, label: str, attributes: Mapping[str, str], secret: str, *, replace: bool = True
    ) -> str:
        """Create an item in the default collection; its D-Bus path."""
        import secretstorage

        with self.connect() as connection:
            collection = secretstorage.get_default_collection(connection)
            item = collection.create_item(
                label,
                dict(attributes),
                secret.encode("utf-8"),
                replace=replace,
                content_type=CODEX_CONTENT_TYPE,
            )
            return item.item_path

    def items(self, service: str, username: str | None = None) -> list[ItemInfo]:
        """Every item in any collection whose ``service`` (and ``username``) attribute match,
        locked or not, sorted by path. Labels and attributes of locked items are read too."""
        import secretstorage

        query = {"service": service}
        if username is not None:
            query["username"] = username
        found: list[ItemInfo] = []
        with self.connect() as connection:
            for collection in secretstorage.get_all_collections(connection):
                for item in collection.search_items(query):
                    found.append(
                        ItemInfo(
                            path=item.item_path,
                            collection=collection.collection_path,
                            label=item.get_label(),
                            attributes=item.get_attributes(),
                            locked=item.is_locked(),
                        )
                    )
        return sorted(found, key=lambda info: info.path)

    def secret(self, path: str) -> str:
        """The secret of the item at `path`, decoded as UTF-8 (raises LockedException when
        its collection is locked)."""
        import secretstorage

        with self.connect() as connection:
            return secretstorage.Item(connection, path).get_secret().decode("utf-8")

    def content_type(self, path: str) -> str:
        import secretstorage

        with self.connect() as connection:
            return secretstorage.Item(connection, path).get_secret_content_type()

    def set_secret(self, path: str, secret: str) -> None:
        """Replace the secret of the item at `path` in place (label and attributes kept)."""
        import secretstorage

        with self.connect() as connection:
            item = secretstorage.Item(connection, path)
            item.set_secret(secret.encode("utf-8"), CODEX_CONTENT_TYPE)

    def delete_item(self, path: str) -> None:
        import secretstorage

        with self.connect() as connection:
            secretstorage.Item(connection, path).delete()

    def is_locked(self) -> bool:
        import secretstorage

        with self.connect() as connection:
            return secretstorage.get_default_collection(connection).is_locked()

    def lock(self) -> None:
        """Lock the default collection (as a screen lock or `secret-tool lock` would)."""
        import secretstorage

        with self.connect() as connection:
            secretstorage.get_default_collection(connection).lock()

    def unlock(self) -> None:
        """Unlock the default collection with the password, through gnome-keyring's own
        interface: the Secret Service's Unlock would need a prompt, and this bus has none."""
        import secretstorage
        from jeepney import (  # type: ignore[import-untyped]  # no py.typed
            DBusAddress,
            MessageType,
            new_method_call,
        )
        from secretstorage.util import format_secret, open_session

        with self.connect() as connection:
            collection = secretstorage.get_default_collection(connection)
            session = open_session(connection)
            master = format_secret(session, self.password.encode("utf-8"), "text/plain")
            internal = DBusAddress(
                _SECRETS_PATH, bus_name=_SECRETS_NAME, interface=_GNOME_INTERNAL
            )
            message = new_method_call(
                internal,
                "UnlockWithMasterPassword",
                "o(oayays)",
                (collection.collection_path, master),
            )
            reply = connection.send_and_get_reply(message)
            if reply.header.message_type == MessageType.error:
                raise SecretServiceUnavailableError(f"unlock refused: {reply.body[:1]}")


# Helpers ######################################################################


def _short_temp_dir() -> Path:
    """A private temporary directory whose bus socket path fits in sockaddr_un."""
    base = tempfile.gettempdir()
    if len(os.path.join(base, "codexauth-ss.XXXXXXXX", "bus")) > _SOCKET_PATH_MAX:
        base = "/tmp"  # TMPDIR is too deep for a socket path
    return Path(tempfile.mkdtemp(prefix="codexauth-ss.", dir=base))


def _read_line(stream: IO[bytes], timeout: float) -> str:
    """The first line of `stream` within `timeout` ("" at EOF or when it does not come)."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
