"""Refreshes, and is killed (SIGKILL) half way through writing auth.json's new contents.

    python tests/children/killed_mid_write.py

Wraps codexauth's positional writer: the write at offset 1 (the body of auth.json, after its
first byte was spoilt) stops half way and the process kills itself. It never exits normally.
"""

from __future__ import annotations

import os
import signal

import codexauth

real_pwrite_all = codexauth._pwrite_all


def die_halfway_through_the_bulk(fd: int, data: bytes, offset: int) -> None:
    if offset == 1:
        real_pwrite_all(fd, data[: len(data) // 2], offset)
        os.kill(os.getpid(), signal.SIGKILL)
    real_pwrite_all(fd, data, offset)


if __name__ == "__main__":
    codexauth._pwrite_all = die_halfway_through_the_bulk
    codexauth.CodexAuth(os.environ["CODEX_HOME"]).get_token()
