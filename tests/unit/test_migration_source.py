"""The source side of a migration with no worker to stop: only a paused or sleeping execution
moves from its latest checkpoint. One that ended between the migration's rounds and its stop
(the race a live migration right after start hits) is refused — its latest checkpoint is older
than its end, and the target would run its tail a second time."""
from __future__ import annotations

import pytest

from roost.daemon.errors import StateConflict
from roost.daemon.executions.source import Source
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord, State


def _source(tmp_path, state: State) -> tuple[Source, Store]:
    store = Store(tmp_path / "store", 1 << 30)
    store.create_execution(ExecutionRecord(id="e1", module_sha256="a" * 64, module_name="m",
                                           argv=["m"], env=[], mounts=[], state=state), b"", b"")
    return Source(store, PageStore(store), lives=None, timers=None, launch=None), store  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [State.PAUSED, State.SLEEPING])
def test_a_paused_or_sleeping_execution_is_marked(tmp_path, state: State) -> None:
    source, store = _source(tmp_path, state)
    source.mark_migrating("e1", "b", "127.0.0.1:2", 2)
    assert store.get_execution("e1").migration == "2 b 127.0.0.1:2"


@pytest.mark.parametrize("state", [State.EXITED, State.FAILED, State.KILLED, State.PENDING])
def test_an_execution_that_ended_before_the_stop_is_not_moved(tmp_path, state: State) -> None:
    source, store = _source(tmp_path, state)
    with pytest.raises(StateConflict, match=f"is {state.value}, not paused or sleeping"):
        source.mark_migrating("e1", "b", "127.0.0.1:2", 2)
    assert store.get_execution("e1").migration == ""
