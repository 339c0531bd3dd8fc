"""Published epsilons and calibrations (tests/vectors/dp/SOURCE.md) reproduced by our accountant."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedswarm.privacy.dp.accounting import compute_epsilon
from fedswarm.privacy.dp.calibration import calibrate_noise_multiplier


def _load_vectors_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "vectors" / "dp" / "dp_vectors.py"
    spec = importlib.util.spec_from_file_location("dp_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dp_vectors", module)
    spec.loader.exec_module(module)
    return module


V: Any = _load_vectors_module().load_vectors()


def test_vectors_are_present() -> None:
    assert len(V.epsilons) >= 3
    assert len(V.calibrations) >= 1


@pytest.mark.parametrize("case", V.epsilons, ids=lambda c: c.id)
def test_published_epsilon(case: Any) -> None:
    eps = compute_epsilon(
        accountant=case.accountant,
        sampling=case.sampling,
        population=case.population,
        sample_size=case.sample_size,
        noise_multiplier=case.noise_multiplier,
        delta=case.delta,
        rounds=case.rounds,
        rdp_orders=case.rdp_orders,
    )
    if case.check == "equal":
        assert eps == pytest.approx(case.published_epsilon, abs=case.abs_tol)
    else:
        assert case.published_epsilon - case.abs_tol <= eps <= case.published_epsilon


def test_default_orders_never_worse_than_published_orders() -> None:
    # dp_accounting's default orders include 2, 5, 10, 20 and many more: the minimum can only go down.
    case = next(c for c in V.epsilons if c.id == "opacus-compute-dp-sgd-privacy-sample-rate")
    eps = compute_epsilon(
        accountant="rdp",
        sampling="poisson",
        population=case.population,
        sample_size=case.sample_size,
        noise_multiplier=case.noise_multiplier,
        delta=case.delta,
        rounds=case.rounds,
    )
    assert eps <= case.published_epsilon


@pytest.mark.parametrize("case", V.calibrations, ids=lambda c: c.id)
def test_published_calibration(case: Any) -> None:
    z = calibrate_noise_multiplier(
        target_epsilon=case.target_epsilon,
        delta=case.delta,
        rounds=case.rounds,
        sampling=case.sampling,
        sample_size=case.sample_size,
        population=case.population,
        accountant=case.accountant,
    )
    assert z == pytest.approx(case.published_noise_multiplier, abs=case.abs_tol)
