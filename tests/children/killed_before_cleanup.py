"""Refreshes, writes auth.json whole, and is killed (SIGKILL) before removing its pending copy.

    python tests/children/killed_before_cleanup.py

A stale pending copy stays beside a good auth.json: what the next writer must never restore
over a file that someone else tore later.
"""

from __future__ import annotations

import os
import signal

import codexauth

real_unlink = os.unlink


def die_instead_of_cleaning_up(path: str | os.PathLike[str], *args: object) -> None:
    if os.path.basename(os.fspath(path)) == codexauth.PENDING_FILE_NAME:
        os.kill(os.getpid(), signal.SIGKILL)
    real_unlink(path)


if __name__ == "__main__":
    os.unlink = die_instead_of_cleaning_up  # type: ignore[assignment]  # a fault, injected
    codexauth.CodexAuth(os.environ["CODEX_HOME"]).get_token()
