"""Batched, signed appends to a ledger store, optionally signing on a second core.

:class:`LedgerWriter` numbers entries, signs each with its author's key and appends a whole batch in one
transaction: the per-append cost is one Ed25519 signature (about 50 µs) plus a share of one commit,
instead of a commit per entry.

With ``processes=1`` (or more) the signatures are made in worker processes while the calling process
builds and stores the next batch: encoding and SQLite work (about half the cost of an append) overlap
with signing (the other half), which nearly doubles throughput on two cores. The workers receive the
authors' private keys (PKCS #8 PEM) once per batch that uses them; they are this process's own
children.

Objects (models, retained updates) handed to :meth:`LedgerWriter.put_object` are named by their digest at
once and stored with the next batch appended, in its transaction: the entries that name an object are
never committed before it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.entries import Body, Entry, SignedEntry, sign_entry
from fedswarm.ledger.store import LedgerStore

__all__ = ["LedgerWriter"]

_worker_keys: dict[bytes, SigningKey] = {}


def _sign_batch(messages: Sequence[tuple[bytes, bytes]], pems: dict[bytes, bytes]) -> list[bytes]:
    """Sign ``(public key, message)`` pairs in a worker; ``pems`` maps public keys to private PEMs."""
    for public, pem in pems.items():
        if public not in _worker_keys:
            _worker_keys[public] = SigningKey.from_pem(pem)
    return [_worker_keys[public].sign(message) for public, message in messages]


class LedgerWriter:
    """Signs entries for a store and appends them in batches.

    Parameters
    ----------
    store
        An open, writable store.
    batch
        Entries per transaction: a full batch is signed and appended automatically.
    processes
        Worker processes that sign batches in parallel with the caller (0: sign in the caller).
    """

    def __init__(self, store: LedgerStore, *, batch: int = 1024, processes: int = 0) -> None:
        if batch < 1:
            raise ValueError(f"batch {batch} must be at least 1")
        if processes < 0:
            raise ValueError(f"processes {processes} must not be negative")
        self._store = store
        self._batch = batch
        self._pending: list[SignedEntry] = []
        self._objects: dict[str, bytes] = {}
        self._unsigned: list[tuple[Entry, bytes, SigningKey]] = []
        self._in_flight: deque[tuple[list[tuple[Entry, bytes]], Future[list[bytes]]]] = deque()
        self._queued = 0
        self._pool: ProcessPoolExecutor | None = None
        self._pems: dict[bytes, bytes] = {}
        if processes:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context(method))

    @property
    def store(self) -> LedgerStore:
        """The store written to."""
        return self._store

    @property
    def next_seq(self) -> int:
        """Sequence number the next added entry gets."""
        return self._store.size + self._queued

    @property
    def pending(self) -> int:
        """Entries added but not yet appended."""
        return self._queued

    def put_object(self, data: bytes) -> str:
        """Store ``data`` with the next appended batch (see :meth:`LedgerStore.append_many`); return its digest.

        Entries added after this call may name the digest: they are appended in the same transaction as
        the object or in a later one.
        """
        digest = hashlib.sha256(data).hexdigest()
        self._objects.setdefault(digest, data)
        return digest

    def add(self, body: Body, *, author: str, key: SigningKey) -> Entry:
        """Queue ``body`` as entry :attr:`next_seq` by ``author``, signed with ``key``; return the entry.

        A full batch is signed and appended before this returns (or, with worker processes, handed to
        them and appended by a later call or :meth:`flush`).
        """
        public = key.public_key().raw
        entry = Entry(federation=self._store.federation, seq=self.next_seq, author=author, key=public, body=body)
        self._queued += 1
        if self._pool is None:
            self._pending.append(sign_entry(entry, key))
            if len(self._pending) >= self._batch:
                self._append(self._take_pending())
        else:
            self._unsigned.append((entry, entry.encode(), key))
            if len(self._unsigned) >= self._batch:
                self._submit()
                while len(self._in_flight) > 2:
                    self._collect()
        return entry

    def flush(self) -> range:
        """Sign and append everything queued; return the sequence numbers appended by this call."""
        start = self._store.size
        if self._pool is not None:
            self._submit()
            while self._in_flight:
                self._collect()
        elif self._pending:
            self._append(self._take_pending())
        if self._objects:
            self._append([])
        return range(start, self._store.size)

    def close(self) -> None:
        """Flush and stop the worker processes."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    # -- internals --------------------------------------------------------------------------------
    def _take_pending(self) -> list[SignedEntry]:
        pending, self._pending = self._pending, []
        return pending

    def _append(self, signed: list[SignedEntry]) -> None:
        objects = list(self._objects.items())
        try:
            self._store.append_many(signed, objects=objects)
        except BaseException:
            self._pending = signed + self._pending
            raise
        self._objects.clear()
        self._queued -= len(signed)

    def _submit(self) -> None:
        if not self._unsigned or self._pool is None:
            return
        batch, self._unsigned = self._unsigned, []
        pems: dict[bytes, bytes] = {}
        for entry, _message, key in batch:
            if entry.key not in pems:
                pem = self._pems.get(entry.key)
                if pem is None:
                    pem = self._pems[entry.key] = key.to_pem()
                pems[entry.key] = pem
        future = self._pool.submit(_sign_batch, [(entry.key, message) for entry, message, _ in batch], pems)
        self._in_flight.append(([(entry, message) for entry, message, _ in batch], future))

    def _collect(self) -> None:
        items, future = self._in_flight.popleft()
        signatures = future.result()
        self._append(
            [SignedEntry(entry, sig, message + sig) for (entry, message), sig in zip(items, signatures, strict=True)]
        )
