"""Refreshes, recording every fsync, rename and unlink in the order they happen.

    python tests/children/fsync_spy.py

Wraps os.fsync, os.replace and os.unlink with recorders (names only, read through
/proc/self/fd; Linux), refreshes the expired login in $CODEX_HOME, and prints the events as
JSON: ``[["fsync", NAME], ["replace", SRC, DST], ["unlink", NAME], ...]``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import codexauth

events: list[list[str]] = []
real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink


def where(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def fsync(fd: Any) -> None:
    events.append(["fsync", where(fd)])
    real_fsync(fd)


def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
    events.append(["replace", os.path.basename(src), os.path.basename(dst)])
    real_replace(src, dst, *args, **kwargs)


def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
    events.append(["unlink", os.path.basename(path)])
    real_unlink(path, *args, **kwargs)


if __name__ == "__main__":
    os.fsync, os.replace, os.unlink = fsync, replace, unlink
    codexauth.CodexAuth(os.environ["CODEX_HOME"]).get_token()
    print(json.dumps(events))
