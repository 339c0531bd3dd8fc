"""The robust aggregation rules reproduce the hand-computed vectors of tests/vectors/aggregation."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from fedswarm.aggregation.bulyan import bulyan, bulyan_select
from fedswarm.aggregation.clipping import centered_clipping, clipped_mean
from fedswarm.aggregation.fltrust import fltrust
from fedswarm.aggregation.geometric_median import geometric_median
from fedswarm.aggregation.krum import krum, krum_select, multi_krum
from fedswarm.aggregation.median import median
from fedswarm.aggregation.trimmed_mean import trimmed_mean
from fedswarm.core import errors


def _load_vectors_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "vectors" / "aggregation" / "robust_vectors.py"
    spec = importlib.util.spec_from_file_location("robust_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("robust_vectors", module)
    spec.loader.exec_module(module)
    return module


CASES: list[Any] = _load_vectors_module().load_cases()

RULES: dict[str, Callable[..., Any]] = {
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "krum_select": krum_select,
    "bulyan": bulyan,
    "bulyan_select": bulyan_select,
    "geometric_median": geometric_median,
    "fltrust": fltrust,
    "clipped_mean": clipped_mean,
    "centered_clipping": centered_clipping,
}


def test_every_rule_has_vectors_of_each_kind() -> None:
    rules = {case.rule for case in CASES}
    assert rules == set(RULES)
    for rule in ("median", "trimmed_mean", "krum", "bulyan", "geometric_median", "fltrust", "clipped_mean"):
        assert any(case.rule == rule and case.expected is not None for case in CASES), rule
    assert {case.rule for case in CASES if case.error} >= {"krum", "bulyan", "trimmed_mean", "fltrust"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_vector(case: Any) -> None:
    rule = RULES[case.rule]
    for as_array in (False, True):
        updates = np.asarray(case.updates, dtype=np.float64) if as_array else case.updates
        if case.error is not None:
            with pytest.raises(getattr(errors, case.error), match=case.match):
                rule(updates, **case.settings)
            continue
        result = rule(updates, **case.settings)
        if case.expected_indices is not None:
            assert result.tolist() == case.expected_indices
        else:
            assert result.dtype == np.float64
            assert result.shape == (len(case.updates[0]),)
            np.testing.assert_allclose(result, case.expected, rtol=case.rtol, atol=case.atol)
