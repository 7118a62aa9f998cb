"""How soon waiters on other machines learn of a commit to the Redis store: pub/sub against
keyspace notifications against polling, on a real redis-server.

    python benchmarks/redis_wake.py                # 8 waiters, 60 commits per way
    python benchmarks/redis_wake.py --waiters 16 --rounds 100

Each way starts its waiter processes (each stands for a machine: one connection for the
wake-up, one for reads), then commits with a compare-and-set script like codexauth's,
one commit every 100-150 ms. Latency is from just before the commit
is sent to when a waiter has read the new version back: the wake-up plus the one read a
real waiter does after it. CLOCK_MONOTONIC is one clock for every process on a machine.
Needs redis-py and redis-server; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisServer  # from tests/, put on sys.path just above

KEY = "codexauth:{bench}:login"
CHANNEL = "codexauth:{bench}:changed"
KEYSPACE_CHANNEL = f"__keyspace@0__:{KEY}"

# The design's commit: compare-and-set on the version, then PUBLISH the new version.
COMMIT = """
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version ~= tonumber(ARGV[1]) then return {0, version} end
version = version + 1
redis.call('HSET', KEYS[1], 'version', version, 'doc', ARGV[2])
redis.call('HDEL', KEYS[1], 'flight_rt', 'flight_owner', 'flight_until_ms')
redis.call('PUBLISH', ARGV[3], version)
return {1, version}
"""

WAYS = ("pubsub", "keyspace", "poll-10ms", "poll-50ms")


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def waiter(way: str, url: str, last: int) -> None:
    """Print ``ready``, then one JSON list of [version, monotonic_ns] when `last` is seen."""
    client = _client(url)
    pubsub = None
    if way in ("pubsub", "keyspace"):
        pubsub = client.pubsub()
        pubsub.subscribe(CHANNEL if way == "pubsub" else KEYSPACE_CHANNEL)
        while (msg := pubsub.get_message(timeout=5.0)) is None or msg["type"] != "subscribe":
            pass
    interval = 0.0 if pubsub else int(way.split("-")[1][:-2]) / 1000
    print("ready", flush=True)
    seen = int(client.hget(KEY, "version") or 0)
    woke: list[tuple[int, int]] = []
    while seen < last:
        if pubsub is not None:
            pubsub.get_message(timeout=1.0)
        else:
            time.sleep(interval)
        version = int(client.hget(KEY, "version") or 0)
        if version > seen:
            woke.append((version, time.monotonic_ns()))
            seen = version
    print(json.dumps(woke), flush=True)


def measure(server: RedisServer, way: str, waiters: int, rounds: int) -> list[float]:
    """Commit→read latencies in ms, for every waiter and round."""
    client = _client(server.url())
    client.delete(KEY)
    commit = client.register_script(COMMIT)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--waiter", way, server.url(), str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(waiters)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        sent: dict[int, int] = {}
        for version in range(rounds):
            time.sleep(random.uniform(0.1, 0.15))
            sent[version + 1] = time.monotonic_ns()
            done, _ = commit(keys=[KEY], args=[version, b"{}", CHANNEL])
            assert done
        latencies: list[float] = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            for version, at in json.loads(out):
                latencies.append((at - sent[version]) / 1e6)
        return latencies
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--waiter", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.waiter:
        way, url, last = args.waiter
        waiter(way, url, int(last))
        return 0
    import redis

    print(
        f"{args.waiters} waiter processes, {args.rounds} commits; redis-py {redis.__version__}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'way':<10} {'wakes':>5} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    # Keyspace notifications are off by default: a server has to be configured for them.
    with RedisServer(config=["notify-keyspace-events Kh"]) as server:
        for way in WAYS:
            ms = measure(server, way, args.waiters, args.rounds)
            cells = [statistics.median(ms), _percentile(ms, 90), _percentile(ms, 99), max(ms)]
            print(f"{way:<10} {len(ms):>5} " + " ".join(f"{c:>7.2f}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
