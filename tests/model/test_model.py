"""The refresh protocol's model, explored completely (issue 16).

Measured on 2 cores, CPython 3.11 (states, largest depth, wall seconds):

  CI set, on the redesigned protocol, no violation (all three together under 1 s):
    (a) file: 2 processes + lockless Codex peer (2 POSTs), kill, 5xx, timeout, disk full:
        34,596 states, depth 25, 0.5 s
    (b) file: 3 processes (one refreshes twice), kill, 5xx:  20,098 states, depth 33, 0.3 s
    (c) redis: 2 machines, one lapse, one restart, 5xx, timeout:  2,956 states, depth 23, 0.05 s
  slow, no violation:
    (d) file: 3 processes + lockless peer + old truncating peer + logout/switch (taking
        auth.lock) + kill:  1,941,429 states, depth 33, 47 s, 1.3 GB resident
    (e) redis: 3 machines, lapse, restart, 5xx, timeout:  87,754 states, depth 34, 1.6 s

Each old-behaviour switch is found, as a shortest trace, with the invariant it breaks.  The
findings against the protocol's first draft and its named windows are tests too
(test_first_draft_finding_is_still_there): they assert the model finds them, so closing one
turns it red and it must then move to the CI set.
"""

from __future__ import annotations

import dataclasses

import pytest

from model.checker import Result, explore
from model.protocol import Config, ProtocolModel, Variant

CI_CONFIGS = [
    Config(
        "a-file-2p-peer", processes=2, peer_posts=2, kills=1, failures=1, timeouts=1, disk_full=1
    ),
    Config("b-file-3p", processes=3, rounds=(2, 1, 1), kills=1, failures=1),
    Config("c-redis-2m", store="redis", processes=2, lapses=1, restarts=1, failures=1, timeouts=1),
]

SLOW_CONFIGS = [
    Config(
        "d-file-3p-peers-logout",
        processes=3,
        peer_posts=1,
        old_peer=True,
        user=True,
        user_takes_lock=True,
        kills=1,
    ),
    Config("e-redis-3m", store="redis", processes=3, lapses=1, restarts=1, failures=1, timeouts=1),
]


def run(config: Config) -> Result:
    result = explore(ProtocolModel(config))
    print(result.summary(config.name))
    if result.violation:
        print(result.violation)
    return result


@pytest.mark.parametrize("config", CI_CONFIGS, ids=lambda c: c.name)
def test_ci_configuration_has_no_violation(config: Config) -> None:
    result = run(config)
    assert result.complete
    assert result.violation is None, str(result.violation)


@pytest.mark.slow
@pytest.mark.parametrize("config", SLOW_CONFIGS, ids=lambda c: c.name)
def test_larger_configuration_has_no_violation(config: Config) -> None:
    result = run(config)
    assert result.complete
    assert result.violation is None, str(result.violation)


# The five known defects (issues 15 and 17), each with the old behaviour switched back on.
OLD = [
    pytest.param(
        Config(
            "unsaved",
            processes=1,
            rounds=(2,),
            disk_full=1,
            variant=Variant(unsaved_whole_doc_compare=True),
        ),
        {"I2"},
        "Store.commit finds A:rt0; _Outbox.clear",
        id="unsaved_whole_doc_compare",
    ),
    pytest.param(
        Config(
            "pending",
            processes=2,
            kills=1,
            user=True,
            user_takes_lock=True,
            variant=Variant(pending_restores_after_logout=True),
        ),
        {"I6"},
        "user: codex logout",
        id="pending_restores_after_logout",
    ),
    pytest.param(
        Config(
            "exhausted",
            processes=1,
            peer_posts=1,
            variant=Variant(exhausted_trusted_without_reread=True),
        ),
        {"I3"},
        "time: REUSE_WINDOW for rt0 passes",
        id="exhausted_trusted_without_reread",
    ),
    pytest.param(
        Config(
            "two-round-trips",
            store="redis",
            processes=2,
            lapses=1,
            variant=Variant(redis_two_round_trips=True),
        ),
        {"I1"},
        "RedisStore.read HGET state",
        id="redis_two_round_trips",
    ),
    pytest.param(
        Config(
            "version",
            store="redis",
            processes=2,
            restarts=1,
            variant=Variant(redis_commit_on_version=True),
        ),
        {"I1", "I2"},
        "(no outbox)",
        id="redis_commit_on_version",
    ),
]


@pytest.mark.parametrize(("config", "invariants", "step"), OLD)
def test_old_behaviour_is_found(config: Config, invariants: set[str], step: str) -> None:
    result = run(config)
    assert result.violation is not None
    assert result.violation.invariant in invariants
    assert any(step in line for line in result.violation.trace), result.violation
    # The same configuration passes once the switch is off: the defect, not the setup, is found.
    fixed = explore(ProtocolModel(dataclasses.replace(config, variant=Variant())))
    assert fixed.violation is None, str(fixed.violation)


def test_traces_are_shortest() -> None:
    """BFS: the trace of the two-round-trip defect has exactly the 17 steps it needs."""
    config = OLD[3].values[0]
    result = run(config)
    assert result.violation is not None
    assert len(result.violation.trace) == 17


# Where the protocol's first draft breaks an invariant, or a named window does (README).
FINDINGS = [
    pytest.param(
        Config(
            "restart-drops",
            store="redis",
            processes=2,
            restarts=1,
            variant=Variant(empty_store_drops_outbox=True),
        ),
        "I2",
        "fault: Redis restarts without persistence",
        id="empty_store_drops_the_outbox",
    ),
    pytest.param(
        Config("timeout", processes=2, timeouts=1, variant=Variant(strict_i1=True)),
        "I1",
        "times out",
        id="client_timeout_window_not_named",
    ),
    pytest.param(
        Config("unlocked-logout", processes=1, user=True),
        "I6",
        "user: codex logout",
        id="unlocked_logout_between_compare_and_rename",
    ),
    pytest.param(
        Config("fleet-kill", store="redis", processes=2, kills=1),
        "I1",
        "fault: kill -9 p1",
        id="fleet_outbox_invisible_to_other_machines_after_kill",
    ),
    pytest.param(
        Config("fleet-outage", store="redis", processes=2, outages=1),
        "I1",
        "fault: Redis unreachable",
        id="fleet_outbox_invisible_after_outage",
    ),
]


@pytest.mark.parametrize(("config", "invariant", "step"), FINDINGS)
def test_first_draft_finding_is_still_there(config: Config, invariant: str, step: str) -> None:
    result = run(config)
    assert result.violation is not None, "fixed in the design? move the configuration to CI"
    assert result.violation.invariant == invariant
    assert any(step in line for line in result.violation.trace), result.violation
