from __future__ import annotations

from pathlib import Path

import numpy as np

from fedswarm.core.task import MemberState
from fedswarm.rounds.state import InMemoryStateStore, SqliteStateStore


def test_sqlite_store_round_trip_eviction_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = SqliteStateStore(path, cache_size=2)
    for m in range(5):
        s = store.load(m)
        assert len(s) == 0
        s["c"] = np.full(3, float(m))
        store.save(m, s)
    store.flush()
    # cache holds 2 members; the rest must come back from disk intact
    for m in range(5):
        np.testing.assert_array_equal(store.load(m)["c"], np.full(3, float(m)))
    assert len(store) == 5
    store.close()
    again = SqliteStateStore(path)
    np.testing.assert_array_equal(again.load(3)["c"], np.full(3, 3.0))
    assert len(again.load(99)) == 0
    again.close()


def test_unchanged_state_is_not_written(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite")
    s = store.load(1)
    store.save(1, s)
    assert len(store) == 0
    store.close()


def test_many_registered_members_cost_only_what_they_write(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite", cache_size=16)
    touched = np.random.default_rng(0).choice(100_000, size=300, replace=False)
    for m in touched:
        s = store.load(int(m))
        s["x"] = np.array([int(m)])
        store.save(int(m), s)
    assert len(store) == 300
    assert len(store._cache) <= 16
    assert int(store.load(int(touched[0]))["x"][0]) == int(touched[0])
    store.close()


def test_memory_store() -> None:
    store = InMemoryStateStore()
    s = MemberState()
    s["a"] = np.ones(2)
    store.save(7, s)
    assert not s.dirty
    np.testing.assert_array_equal(store.load(7)["a"], np.ones(2))
