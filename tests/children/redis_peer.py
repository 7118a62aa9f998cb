"""The ``codexauth`` command on a Redis store, with the fleet's timings and faults set by flags.

    python tests/children/redis_peer.py [--set NAME=SECONDS]... [--die-before-post] [ARGS...]
    python tests/children/redis_peer.py [--set NAME=SECONDS]... --hold-and-die

Imports what a refresh on a Redis store needs (codexauth, requests, redis) first,
waits at the barrier when started by support.Racers (children/barrier.py), then exits with
``codexauth.main(ARGS)``. The store is $CODEXAUTH_STORE.

``--set NAME=SECONDS`` sets the codexauth constant NAME (REDIS_LOCK_IDLE_TTL,
REDIS_LOCK_MARGIN, REDIS_FLIGHT_GRACE or TRANSIENT_BACKOFF) in this process only: a short
lock TTL lets a test see it lapse in seconds. ``--die-before-post`` SIGKILLs the process where
the refresh request would be sent: the fleet lock taken, the request announced and the lock
extended, nothing sent. ``--hold-and-die`` takes this machine's and the fleet's refresh lock
as a refresh would, prints ``locked`` and SIGKILLs the process.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import redis  # noqa: F401  # imported by the Redis store: paid before the race
import requests  # noqa: F401  # imported by the refresh: paid before the race

import codexauth
from children.barrier import BARRIER_ENV, wait_at_barrier

SETTABLE = ("REDIS_LOCK_IDLE_TTL", "REDIS_LOCK_MARGIN", "REDIS_FLIGHT_GRACE", "TRANSIENT_BACKOFF")


def die(*args: Any, **kwargs: Any) -> Any:
    """Stands in for the request: the process dies before anything is sent."""
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    hold = False
    while args and args[0] in ("--set", "--die-before-post", "--hold-and-die"):
        flag = args.pop(0)
        if flag == "--set":
            name, _, value = args.pop(0).partition("=")
            if name not in SETTABLE:
                raise SystemExit(f"--set takes one of {SETTABLE}, not {name!r}")
            setattr(codexauth, name, float(value))
        elif flag == "--die-before-post":
            codexauth._post_refresh = die  # the fault under test
        else:
            hold = True
    if BARRIER_ENV in os.environ:
        wait_at_barrier()
    if hold:
        store = codexauth.RedisStore(
            os.environ[codexauth.STORE_ENV_VAR],
            os.environ["CODEX_HOME"],
            namespace=os.environ.get(codexauth.NAMESPACE_ENV_VAR, codexauth.DEFAULT_NAMESPACE),
        )
        lock = store.lock(30.0, lambda: False)
        assert lock is not None, "the lock was not taken"
        print("locked", flush=True)
        die()
    return codexauth.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
