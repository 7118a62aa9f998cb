"""Holds codexauth's refresh lock on $CODEX_HOME until told to let go.

    python tests/children/hold_lock.py

Prints ``locked`` once it holds the lock, and releases it when a line arrives on stdin.
"""

from __future__ import annotations

import os
import sys

import codexauth


def main() -> None:
    lock = codexauth.FileStore(os.environ["CODEX_HOME"]).lock(10, lambda: False)
    assert lock is not None, "the lock was not taken"
    print("locked", flush=True)
    sys.stdin.readline()
    lock.release()


if __name__ == "__main__":
    main()
