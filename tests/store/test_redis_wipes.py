"""What a Redis Cluster node says of itself, as the wipe watch reads it (``CLUSTER NODES``), and which of the
nodes that call themselves masters serve their slots. The watch against a real cluster (a failover is no
wipe, a master that came back empty is one): ``tests/chaos/test_cluster_failover.py``."""

from __future__ import annotations

import pytest

from asyncsched.store._redis_wipe import myself, serving

# as node 7001 sees the cluster: 7000 was demoted (its replica 7003 took over with epoch 7), 7001 serves a
# slot range, a single slot and a slot it is migrating away
NODES = """\
a1 127.0.0.1:7000@17000 slave d4 0 1700000000000 1 connected
b2 127.0.0.1:7001@17001 myself,master - 0 1700000000000 2 connected 5461-10922 12000 [10923->-c3]
c3 127.0.0.1:7002@17002 master - 0 1700000000000 3 connected 10923-16383
d4 127.0.0.1:7003@17003 master - 0 1700000000000 7 connected 0-5460
"""


def _as(name: str, flags: str, slots: str = "") -> str:
    """``NODES`` as node ``name`` would answer: its line flagged ``myself``."""
    lines = [line for line in NODES.splitlines() if not line.startswith(name)]
    return "\n".join([f"{name} 127.0.0.1:7009@17009 {flags} - 0 1700000000000 4 connected {slots}", *lines])


def test_a_master_says_which_slots_it_serves_and_its_configuration_epoch() -> None:
    master = myself("127.0.0.1:7001", None, NODES.encode())
    assert master is not None
    assert master.name == "127.0.0.1:7001"
    assert master.epoch == 2
    assert master.slots == frozenset(range(5461, 10923)) | {12000}  # a migrating slot is still its own


def test_a_replica_and_a_master_without_slots_are_not_masters_to_watch() -> None:
    assert myself("n", None, _as("a1", "myself,slave")) is None
    assert myself("n", None, _as("a1", "myself,master")) is None  # no slot: no data to lose


def test_an_answer_without_the_node_itself_fails_loudly() -> None:
    with pytest.raises(ValueError, match="no line for the node itself"):
        myself("127.0.0.1:7001", None, NODES.replace("myself,", ""))
    with pytest.raises(TypeError, match="not its text"):
        myself("127.0.0.1:7001", None, {"127.0.0.1:7001": {}})


def test_a_demoted_master_that_does_not_know_it_yet_is_not_taken_for_the_master_of_its_slots() -> None:
    """The old master (restarted with its old configuration, or not told yet) and the replica promoted in
    its place both claim the slots: the newer configuration epoch serves them."""
    old = myself("127.0.0.1:7000", None, _as("a1", "myself,master", "0-5460"))
    promoted = myself(
        "127.0.0.1:7003", None, _as("d4", "myself,master", "0-5460").replace(" 4 connected", " 7 connected")
    )
    other = myself("127.0.0.1:7001", None, NODES)
    assert old is not None
    assert promoted is not None
    assert other is not None
    assert serving([old, promoted, other]) == [promoted, other]
    assert serving([old, other]) == [old, other]  # nobody newer claims its slots: it serves them
