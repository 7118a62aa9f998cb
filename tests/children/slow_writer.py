"""Refreshes, and dawdles for SECONDS with auth.json's first byte spoilt, as a writer on a
busy machine might, then finishes normally.

    python tests/children/slow_writer.py SECONDS

Prints "spoilt" (flushed) when auth.json is torn, so a test can start readers then.
"""

from __future__ import annotations

import os
import sys
import time

import codexauth

real_pwrite_all = codexauth._pwrite_all


def main(seconds: float) -> int:
    def dawdle_when_spoilt(fd: int, data: bytes, offset: int) -> None:
        real_pwrite_all(fd, data, offset)
        if offset == 0 and data == codexauth._SPOILT:
            print("spoilt", flush=True)
            time.sleep(seconds)

    codexauth._pwrite_all = dawdle_when_spoilt
    codexauth.CodexAuth(os.environ["CODEX_HOME"]).get_token()
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1])))
