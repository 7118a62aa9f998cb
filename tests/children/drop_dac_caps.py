"""Runs Python as root, but bound by mode bits like anyone else.

    python tests/children/drop_dac_caps.py PYTHON_ARGS...

Root ignores mode bits through CAP_DAC_OVERRIDE (and CAP_DAC_READ_SEARCH, CAP_FOWNER). This
drops those from the bounding set, then execs ``python PYTHON_ARGS...``, which the kernel
then holds to mode bits. For test_faults where the interpreter is out of reach of "nobody" (a
pyenv under /root). Linux only.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def main(argv: Sequence[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            sys.exit(f"prctl(PR_CAPBSET_DROP) failed: errno {ctypes.get_errno()}")
    os.execv(sys.executable, [sys.executable, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
