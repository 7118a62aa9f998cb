"""The child side of support.Racers: a barrier that starts every racer in the same instant.

Not run on its own: a racer imports wait_at_barrier() from here. Racers passes two inherited
pipe fds in $CODEXAUTH_TEST_BARRIER as ``READY,GATE``. A racer pays for its imports first, then
calls wait_at_barrier(): it reports ready with one byte on READY and blocks reading GATE, which
the parent closes to wake every racer at once.
"""

from __future__ import annotations

import os

BARRIER_ENV = "CODEXAUTH_TEST_BARRIER"


def wait_at_barrier() -> None:
    """Report ready, then block until the parent opens the gate."""
    # Popped, so that a process this one starts cannot mistake the fds for its own.
    ready, gate = (int(fd) for fd in os.environ.pop(BARRIER_ENV).split(","))
    os.write(ready, b".")
    os.close(ready)
    os.read(gate, 1)
    os.close(gate)
