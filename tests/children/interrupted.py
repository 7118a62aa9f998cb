"""``codexauth token``, interrupted by Ctrl-C (SIGINT) just after the first fsync of its write.

    python tests/children/interrupted.py

Exits with codexauth.main()'s code (130 for an interrupt).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import codexauth

real_fsync = os.fsync


def fsync_then_ctrl_c(fd: Any) -> None:
    real_fsync(fd)
    os.fsync = real_fsync
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    # A shell runs a background job (`pytest &`) with SIGINT ignored, and children inherit
    # that: Python then installs no handler, and the kill below would do nothing. Ctrl-C
    # as a terminal user meets it raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.fsync = fsync_then_ctrl_c
    sys.exit(codexauth.main(["token"]))
