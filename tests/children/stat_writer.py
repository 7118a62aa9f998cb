"""Rewrites auth.json on command, in the ways that can fool a stat cache.

    python tests/children/stat_writer.py AUTH_JSON VERSION_FILE...

Reads one command per line on stdin, ``HOW N``, writes the Nth VERSION_FILE's contents to
AUTH_JSON and prints ``ok``. HOW is ``replace`` (temp file and rename), ``inplace`` (truncate
and write) or ``inplace-keep-mtime`` (the same, then the old mtime put back, as ``cp -p`` or
``rsync -t`` would).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str]) -> None:
    path = argv[0]
    versions = [Path(p).read_bytes() for p in argv[1:]]
    for line in sys.stdin:
        how, index = line.split()
        data = versions[int(index)]
        if how == "replace":
            tmp = path + ".writer.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        else:
            before = os.stat(path)
            with open(path, "r+b", buffering=0) as f:
                f.truncate(0)
                f.write(data)
            if how == "inplace-keep-mtime":
                os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
