"""Forks while another thread is half way through taking the refresh lock.

    python tests/children/fork_mid_lock.py

One thread takes the lock with the window between flock(2) and codexauth's bookkeeping
widened to 0.3 s; the main thread forks inside that window; the child lingers. Once the
parent has released the lock and the child runs, prints JSON: which lock files someone still
holds (none, if the child kept no copy of the parent's lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time

import codexauth

real_try_lock = codexauth._try_lock
inside = threading.Event()


def slow_try_lock(fd: int, path: str) -> bool:
    locked = real_try_lock(fd, path)
    inside.set()
    time.sleep(0.3)  # a thread switch here, made long
    return locked


def locked_by_someone(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def main() -> int:
    home = os.environ["CODEX_HOME"]
    store = codexauth.FileStore(home)
    codexauth._try_lock = slow_try_lock

    def hold_briefly() -> None:
        lock = store.lock(5, lambda: False)
        assert lock is not None
        lock.release()

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    inside.wait(10)
    running_r, running_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pool worker, say, that lives on
        # Python code runs here only after the at-fork hooks, which close the copies.
        os.write(running_w, b".")
        time.sleep(5)
        os._exit(0)
    holder.join()
    # Until the child runs at all, it holds copies of whatever was open: wait for it.
    os.read(running_r, 1)
    held = [n for n in ("auth.lock", "auth.json") if locked_by_someone(os.path.join(home, n))]
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print(json.dumps({"held_after_release": held}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
