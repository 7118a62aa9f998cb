"""A peer that refreshes as the Codex CLI does: no lock around the POST, then its own write.

    python tests/children/codex_like_peer.py AUTH_JSON TOKEN_URL WRITE_LAG STYLE

As a support.Racers child it reads AUTH_JSON, waits at the barrier (children/barrier.py),
refreshes at TOKEN_URL with the refresh token it read, waits WRITE_LAG seconds, writes the new
tokens into what it read in STYLE (see write_tokens()) and prints ``won ACCESS_TOKEN``. If the
endpoint refuses, it prints ``lost STATUS`` and exits 0 without writing.

In-process tests import refresh() and write_tokens() to act as the same peer.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from support import rfc3339

from children.barrier import wait_at_barrier

# Codex's public OAuth client id (codex-rs/login/src/auth/manager.rs).
CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
STYLES = ("truncate", "flock-rename")


def refresh(url: str, refresh_token: str, timeout: float = 30.0) -> dict[str, Any]:
    """POST `refresh_token` to `url` holding no lock, with the body Codex 0.171 sends for an
    expired token; the parsed answer. A refusal raises urllib.error.HTTPError."""
    body = {
        "client_id": CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_reason": "proactive_expiry",
        "refresh_token": refresh_token,
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # No proxy: the endpoint is a loopback test server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return dict(json.load(response))


def write_tokens(
    path: str | os.PathLike[str],
    fields: Mapping[str, Any],
    *,
    doc: Mapping[str, Any] | None = None,
    style: str = "truncate",
    torn_for: float = 0.0,
) -> None:
    """Store `fields` in the auth.json at `path` the Codex CLI's way, with a new last_refresh.

    `doc` is the auth.json Codex read when it started (default: the file as it is now).
    ``truncate`` (Codex before 0.171) truncates the file and writes it in place, leaving it
    empty for `torn_for` seconds; ``flock-rename`` (0.171) takes auth.lock with a blocking
    flock, only to write a temp file and rename it over auth.json.
    """
    path = os.fspath(path)
    if doc is None:
        with open(path, "rb") as f:
            doc = dict(json.load(f))
    new = dict(doc)
    new["tokens"] = {**doc["tokens"], **fields}
    new["last_refresh"] = rfc3339(datetime.now(timezone.utc))
    data = json.dumps(new, indent=2).encode()
    if style == "truncate":
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            if torn_for:
                time.sleep(torn_for)  # a reader landing here finds an empty file
            os.write(fd, data)
        finally:
            os.close(fd)
    elif style == "flock-rename":
        with open(os.path.join(os.path.dirname(path), "auth.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(path + ".tmp", "wb") as tmp:
                os.fchmod(tmp.fileno(), 0o600)
                tmp.write(data)
            os.replace(path + ".tmp", path)
    else:
        raise ValueError(f"unknown write style {style!r}; expected one of {STYLES}")


def main(argv: Sequence[str]) -> int:
    path, url, write_lag, style = argv[0], argv[1], float(argv[2]), argv[3]
    with open(path, "rb") as f:
        doc = dict(json.load(f))
    wait_at_barrier()
    try:
        new = refresh(url, doc["tokens"]["refresh_token"])
    except urllib.error.HTTPError as exc:
        print("lost", exc.code)
        return 0
    time.sleep(write_lag)
    write_tokens(path, new, doc=doc, style=style, torn_for=0.005)
    print("won", new["access_token"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
