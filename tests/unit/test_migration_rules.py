"""The rules a live migration decides by, on their own: when the pre-copy rounds stop, and when
the guest ran on the target as the source's clock sees it (the downtime's end)."""
from __future__ import annotations

import math

import pytest

from roost.daemon.cluster.handover import _running_at
from roost.daemon.cluster.migration import LONG_ROUND, _final_push
from roost.v1 import peer_pb2 as pb


def test_a_first_round_that_waited_for_the_standby_is_not_the_last():
    """The guest rewrote its working set while the target's standby started: a stop now would
    carry all of it, however small the round was."""
    seconds, size = _final_push(0.002, 3000, LONG_ROUND + 1.0, None)
    assert math.isinf(seconds) and math.isinf(size)
    assert _final_push(0.002, 3000, 0.01, None) == (0.002, 3000)


def test_a_round_predicts_the_final_push_never_smaller_than_itself():
    assert _final_push(0.004, 100_000, 0.05, 10.0) == (0.004, 100_000)   # quick after a long one
    seconds, size = _final_push(0.004, 100_000, 0.2, 0.05)               # slower than the last
    assert seconds == pytest.approx(0.016) and size == pytest.approx(400_000)


def test_the_guest_runs_on_the_target_before_the_source_hears_so():
    """COMMIT sent at 0, answered at 10 ms, the target ran the guest 4 ms after it arrived: 3 ms
    each way, so it ran at 7 ms on the source's clock."""
    answer = pb.HandoverResponse(ok=True, running_after_seconds=0.004)
    assert _running_at(100.0, 100.010, answer) == pytest.approx(100.007)
    late = pb.HandoverResponse(ok=True, running_after_seconds=0.5)      # another host's clock
    assert _running_at(100.0, 100.010, late) == pytest.approx(100.010)   # never after the answer
