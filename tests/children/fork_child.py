"""A worker forked while this process holds the refresh lock: it neither keeps nor inherits it.

    python tests/children/fork_child.py

Takes the lock on $CODEX_HOME (as if a thread were mid-refresh), forks a multiprocessing
worker, releases the lock; then another process refreshes (``codexauth --lock-timeout 5
refresh``), and so does the worker. Prints JSON: ``{"other": [exit code, stderr], "worker":
true, or the name of the exception the worker's refresh raised}``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import codexauth


def refresh_in_worker(home: str) -> str:
    return codexauth.CodexAuth(home, lock_timeout=5).refresh_token()


def main() -> None:
    home = os.environ["CODEX_HOME"]
    lock = codexauth.FileStore(home).lock(5, lambda: False)  # as if mid-refresh in a thread
    assert lock is not None, "the lock was not taken"
    pool = multiprocessing.get_context("fork").Pool(1)  # forked while the lock is held
    lock.release()
    other = subprocess.run(
        [sys.executable, "-m", "codexauth", "--lock-timeout", "5", "refresh"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    worker: bool | str
    try:
        worker = pool.apply(refresh_in_worker, (home,)) is not None
    except Exception as exc:
        worker = type(exc).__name__
    pool.terminate()
    print(json.dumps({"other": [other.returncode, other.stderr], "worker": worker}))


if __name__ == "__main__":
    main()
