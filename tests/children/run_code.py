"""Python source given on the command line, run as a racer with wait_at_barrier() in scope.

    python tests/children/run_code.py CODE [ARGS...]

What support.Racers.spawn(code=..., args=...) starts (the benchmarks race their scripts this
way): CODE runs as ``__main__`` with ARGS as ``sys.argv[1:]`` and wait_at_barrier()
(children/barrier.py) defined, and must call it once its imports are done.
"""

from __future__ import annotations

import sys

from children.barrier import wait_at_barrier

if __name__ == "__main__":
    code, sys.argv = sys.argv[1], ["-c", *sys.argv[2:]]
    namespace = {"__name__": "__main__", "wait_at_barrier": wait_at_barrier}
    exec(compile(code, "<racer>", "exec"), namespace)
