"""Rewrites auth.json in place as the Codex CLI did (truncate, then write), pausing half way.

    python tests/children/torn_writer.py AUTH_JSON STOP_FILE VERSION_FILE...

Writes the VERSION_FILEs' contents in turn until STOP_FILE exists (at most 20 s or 100,000
rewrites). Between rewrites it rests 5 ms: a file that is always half-written has nothing
valid to read, and Codex rewrites once per refresh. Prints ``ready`` after the first rewrite
and the number of rewrites at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str]) -> None:
    path, stop = argv[0], argv[1]
    versions = [Path(p).read_bytes() for p in argv[2:]]
    deadline = time.monotonic() + 20.0
    rewrites = 0
    while rewrites < 100_000 and time.monotonic() < deadline and not os.path.exists(stop):
        data = versions[rewrites % len(versions)]
        half = len(data) // 2
        with open(path, "r+b", buffering=0) as f:
            f.truncate(0)
            f.write(data[:half])
            time.sleep(0.0003)
            f.write(data[half:])
        rewrites += 1
        if rewrites == 1:
            print("ready", flush=True)
        time.sleep(0.005)
    print(rewrites, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
