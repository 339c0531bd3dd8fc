"""Per-member persistent state that scales to 100,000 registered members.

Algorithms such as SCAFFOLD (control variates), Ditto and personal layers keep arrays per member between
rounds. Only the members trained in a round need their state in memory, so the store keeps a bounded LRU
cache in front of a SQLite file (one row per member, the state as canonical safetensors). Members that
never wrote state cost nothing.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy.typing as npt

from fedswarm.codec.tensors import decode, encode
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import MemberState

__all__ = ["InMemoryStateStore", "SqliteStateStore", "StateStore"]


class StateStore(Protocol):
    def load(self, member: int) -> MemberState: ...

    def save(self, member: int, state: MemberState) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class InMemoryStateStore:
    """All states in a dict: right for small federations and for a single node's own state."""

    def __init__(self) -> None:
        self._states: dict[int, dict[str, npt.NDArray[Any]]] = {}

    def load(self, member: int) -> MemberState:
        return MemberState(self._states.get(member))

    def save(self, member: int, state: MemberState) -> None:
        if state.dirty:
            self._states[member] = state.to_dict()
            state.dirty = False

    def __len__(self) -> int:
        return len(self._states)

    def close(self) -> None:
        self._states.clear()


class SqliteStateStore:
    """States in a SQLite file with an LRU cache of ``cache_size`` members in memory.

    Writes go through to the database in one transaction per :meth:`flush` (called by the engine at the
    end of each round) so a crash loses at most the current round's state changes.
    """

    def __init__(self, path: str | Path, *, cache_size: int = 1024) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS member_state (member INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
        self._cache: OrderedDict[int, dict[str, npt.NDArray[Any]]] = OrderedDict()
        self._pending: dict[int, bytes] = {}
        self._cache_size = cache_size

    def load(self, member: int) -> MemberState:
        hit = self._cache.get(member)
        if hit is not None:
            self._cache.move_to_end(member)
            return MemberState(hit)
        blob = self._pending.get(member)
        if blob is None:
            row = self._db.execute("SELECT blob FROM member_state WHERE member = ?", (member,)).fetchone()
            blob = row[0] if row else None
        if blob is None:
            return MemberState()
        arrays = dict(decode(blob, source=f"{self.path}[member {member}]"))
        self._remember(member, arrays)
        return MemberState(arrays)

    def _remember(self, member: int, arrays: dict[str, npt.NDArray[Any]]) -> None:
        self._cache[member] = arrays
        self._cache.move_to_end(member)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def save(self, member: int, state: MemberState) -> None:
        if not state.dirty:
            return
        arrays = state.to_dict()
        self._pending[member] = encode(Parameters(arrays))
        self._remember(member, arrays)
        state.dirty = False
        if len(self._pending) >= 4096:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO member_state (member, blob) VALUES (?, ?)", self._pending.items()
            )
        self._pending.clear()

    def __len__(self) -> int:
        self.flush()
        return int(self._db.execute("SELECT COUNT(*) FROM member_state").fetchone()[0])

    def close(self) -> None:
        self.flush()
        self._db.close()
