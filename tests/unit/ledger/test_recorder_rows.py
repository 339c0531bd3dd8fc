"""Updates handed to the writer as one matrix are recorded exactly as row-by-row encoding would record them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedswarm.codec.tensors import decode, encode
from fedswarm.core.parameters import Parameters
from fedswarm.ledger.entries import UpdateSubmitted
from fedswarm.ledger.recorder import float64_schema, update_digest
from fedswarm.ledger.recorder_core import UpdateRows
from fedswarm.ledger.store import LedgerStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger, initial_model

SCHEMA64 = float64_schema(initial_model().schema)


@pytest.mark.parametrize("retain", [True, False])
def test_rows_become_the_submissions_of_row_by_row_encoding(retain: bool) -> None:
    rows = np.random.default_rng(1).normal(size=(3, SCHEMA64.size))
    rows[1, 0] = -0.0
    batch = UpdateRows(("a", "b", "c"), rows, (1.0, 2.0, 3.0), SCHEMA64, retain)
    for row, member, weight, submission in zip(rows, "abc", (1.0, 2.0, 3.0), batch.submissions(), strict=True):
        expected = encode(Parameters.unflatten(row, SCHEMA64))
        assert submission.member == member and submission.examples == weight
        assert submission.norm == float(np.linalg.norm(row))
        assert submission.size == len(expected)
        if retain:
            assert submission.data == expected and submission.digest is None
        else:
            assert submission.data is None and submission.digest == update_digest(row, SCHEMA64)


def test_recorded_update_digests_name_the_stored_updates(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "ledger", rounds=2, members=3)  # through the forked writer on Linux
    with LedgerStore(folder, readonly=True) as store:
        updates = [s.entry.body for s in store.select(kind="update_submitted")]
        assert len(updates) == 6
        for body in updates:
            assert isinstance(body, UpdateSubmitted)
            stored = decode(store.objects.get_bytes(body.update))
            row = stored.flatten()
            assert body.norm == float(np.linalg.norm(row))
            assert update_digest(row, SCHEMA64) == body.update
