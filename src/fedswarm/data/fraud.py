"""``fraud_synthetic``: card transactions at several banks, about 1% of them fraudulent.

Every row is one card transaction; ``groups`` holds the bank (= member) that owns it, so the natural
partition gives each bank exactly its own customers' transactions.

Features (15, float32)
----------------------
``log_amount``          natural log of the amount; legitimate amounts are log-normal around the bank's
                        mean (``amount_mu`` + a per-category offset, standard deviation 0.8)
``hour_sin, hour_cos``  hour of day h in [0, 24) on the unit circle (sin and cos of 2πh/24)
``log_distance_km``     log(1 + distance from the cardholder's home in km)
``card_present``        1 if the card was physically present (never for digital goods)
``foreign``             1 if the merchant is abroad
``velocity_24h``        number of earlier transactions on the card in the last 24 hours (Poisson)
``merchant_*``          one-hot merchant category among grocery, dining, fuel, retail, electronics, travel,
                        digital_goods, health

Generative model
----------------
Each row first gets its label: fraud with probability ``rate_b``, the bank's fraud rate. Then it gets a
*profile*, legitimate or fraudulent, and its features are drawn from that profile:

* legitimate profile: category from the bank's mix; hour ~ N(14, 4) mod 24; log km ~ N(distance_mu, 1)
  (+2.5 for travel); card present with the bank's probability; foreign with the bank's probability (0.4
  for travel); velocity ~ Poisson(bank velocity);
* fraudulent profile, one of two patterns: *card not present* (account takeover: electronics, retail,
  digital goods and travel; any hour; card absent; log km ~ N(4, 1.2); velocity spike of +5) with the
  bank's probability ``cnp_share``, otherwise *cloned card* (card present at night, hour ~ N(2.5, 2);
  log km ~ N(4.5, 1); electronics, retail, fuel; velocity +3). Both patterns add 1.0 to the log amount
  and are abroad with probability 0.3.

Label noise ``ν`` (option ``label_noise``, default 0.2) makes the task learnable but not trivial: a
fraction ν of frauds get the legitimate profile (undetectable), and ν·rate/(1 - rate) of legitimate rows
get the fraudulent profile (travellers buying electronics at night), so that also a fraction ν of the
fraud-looking rows is legitimate. A classifier that recognises the profile perfectly therefore reaches
about 1 - ν precision and recall.

Per-bank drift
--------------
Bank b draws its profile from the seed; ``drift`` (default 1, 0 = identical banks) scales every
deviation from the common profile: amount_mu = 3.6 + 0.35·drift·z, category mix ∝ base·exp(0.6·drift·z_k),
logit of card-present = logit(0.85) + 0.5·drift·z, velocity = 2·exp(0.25·drift·z),
foreign = 0.03·exp(0.5·drift·z), distance_mu = 1.3 + 0.3·drift·z, cnp_share = 0.5 + 0.4·drift·u
(clipped to [0, 1]), and rate_b ∝ 2^(drift·u) rescaled so that the banks' mean rate is ``fraud_rate``
(with drift 1, rates range over roughly 0.5x to 2x the mean), where z ~ N(0, 1) and u ~ U(-1, 1).

Everything is a deterministic function of the seed and the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import SpecError
from fedswarm.core.task import Scalar
from fedswarm.data.datasets import ArrayDataset, check_option_keys, option

__all__ = ["CATEGORIES", "FEATURE_NAMES", "BankProfile", "bank_profiles", "generate_fraud", "load_fraud_synthetic"]

CATEGORIES = ("grocery", "dining", "fuel", "retail", "electronics", "travel", "digital_goods", "health")
FEATURE_NAMES = (
    "log_amount",
    "hour_sin",
    "hour_cos",
    "log_distance_km",
    "card_present",
    "foreign",
    "velocity_24h",
    *(f"merchant_{c}" for c in CATEGORIES),
)
_TRAVEL, _DIGITAL = CATEGORIES.index("travel"), CATEGORIES.index("digital_goods")
_BASE_MIX = np.array([0.25, 0.15, 0.10, 0.18, 0.06, 0.05, 0.13, 0.08])
_AMOUNT_OFFSET = np.array([0.0, 0.1, 0.2, 0.5, 1.3, 1.6, -0.3, 0.4])
_CNP_MIX = np.array([0.02, 0.02, 0.01, 0.25, 0.30, 0.10, 0.30, 0.00])
_CLONED_MIX = np.array([0.05, 0.05, 0.20, 0.25, 0.30, 0.10, 0.00, 0.05])
_MAX_ROWS = 5_000_000
_OPTIONS = ("banks", "transactions_per_bank", "fraud_rate", "drift", "label_noise")


@dataclass(frozen=True, slots=True)
class BankProfile:
    """The generative parameters of one bank (see the module docstring)."""

    amount_mu: float
    category_mix: tuple[float, ...]
    card_present: float
    velocity: float
    foreign: float
    distance_mu: float
    fraud_rate: float
    cnp_share: float


def bank_profiles(*, banks: int, fraud_rate: float, drift: float, seed: int) -> tuple[BankProfile, ...]:
    """Draw the profiles of ``banks`` banks; with ``drift == 0`` they are all identical."""
    rng = np.random.default_rng([seed, 0])
    z = rng.standard_normal((banks, 5))
    z_mix = rng.standard_normal((banks, len(CATEGORIES)))
    u = rng.uniform(-1.0, 1.0, (banks, 2))
    mix = _BASE_MIX * np.exp(0.6 * drift * z_mix)
    mix /= mix.sum(axis=1, keepdims=True)
    weight = 2.0 ** (drift * u[:, 0])
    rates = np.minimum(fraud_rate * weight / weight.mean(), 0.5)
    logit_cp = np.log(0.85 / 0.15) + 0.5 * drift * z[:, 1]
    return tuple(
        BankProfile(
            amount_mu=float(3.6 + 0.35 * drift * z[b, 0]),
            category_mix=tuple(float(p) for p in mix[b]),
            card_present=float(1.0 / (1.0 + np.exp(-logit_cp[b]))),
            velocity=float(2.0 * np.exp(0.25 * drift * z[b, 2])),
            foreign=float(min(0.03 * np.exp(0.5 * drift * z[b, 3]), 0.5)),
            distance_mu=float(1.3 + 0.3 * drift * z[b, 4]),
            fraud_rate=float(rates[b]),
            cnp_share=float(np.clip(0.5 + 0.4 * drift * u[b, 1], 0.0, 1.0)),
        )
        for b in range(banks)
    )


def _categories(rng: np.random.Generator, mix: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """One category per row of ``mix`` (rows are probability vectors), by inverse CDF."""
    cdf = np.cumsum(mix, axis=1)
    draws = rng.random((mix.shape[0], 1)) * cdf[:, -1:]
    categories: npt.NDArray[np.int64] = np.minimum((draws >= cdf).sum(axis=1), mix.shape[1] - 1).astype(np.int64)
    return categories


def generate_fraud(
    *,
    banks: int,
    transactions_per_bank: int = 4000,
    fraud_rate: float = 0.01,
    drift: float = 1.0,
    label_noise: float = 0.2,
    seed: int,
) -> ArrayDataset:
    """Generate the ``fraud_synthetic`` table (model in the module docstring).

    Parameters
    ----------
    banks:
        Number of banks; rows of bank ``b`` carry ``groups == b``.
    transactions_per_bank:
        Rows per bank.
    fraud_rate:
        Mean fraud rate over the banks, in (0, 0.5].
    drift:
        Scale of the differences between banks; 0 makes the banks identically distributed.
    label_noise:
        ν in [0, 0.5): share of frauds that look legitimate and of fraud-looking rows that are legitimate.
    seed:
        Non-negative seed; the output is a deterministic function of all arguments.

    Raises
    ------
    SpecError
        For an argument out of range (path ``data.options.<name>``).
    """
    checks = {
        "banks": banks >= 1,
        "transactions_per_bank": transactions_per_bank >= 1 and banks * transactions_per_bank <= _MAX_ROWS,
        "fraud_rate": 0.0 < fraud_rate <= 0.5,
        "drift": 0.0 <= drift <= 10.0,
        "label_noise": 0.0 <= label_noise < 0.5,
    }
    for name, ok in checks.items():
        if not ok:
            raise SpecError(
                f"data.options.{name}",
                f"out of range (banks={banks}, transactions_per_bank={transactions_per_bank}, "
                f"fraud_rate={fraud_rate}, drift={drift}, label_noise={label_noise}; "
                f"at most {_MAX_ROWS:,} rows in total)",
            )
    profiles = bank_profiles(banks=banks, fraud_rate=fraud_rate, drift=drift, seed=seed)
    rng = np.random.default_rng([seed, 1])
    n = banks * transactions_per_bank
    bank = np.repeat(np.arange(banks, dtype=np.int64), transactions_per_bank)

    def per_row(field: str) -> npt.NDArray[np.float64]:
        return np.array([getattr(p, field) for p in profiles], dtype=np.float64)[bank]

    rate = per_row("fraud_rate")
    y = rng.random(n) < rate
    draw = rng.random(n)
    fraud_look = np.where(y, draw >= label_noise, draw < label_noise * rate / (1.0 - rate))

    cat = np.empty(n, dtype=np.int64)
    log_amount = np.empty(n)
    hour = np.empty(n)
    log_km = np.empty(n)
    present = np.empty(n, dtype=bool)
    foreign = np.empty(n, dtype=bool)
    velocity = np.empty(n)

    legit = np.flatnonzero(~fraud_look)
    mixes = np.array([p.category_mix for p in profiles])[bank[legit]]
    cat[legit] = _categories(rng, mixes)
    travel = cat[legit] == _TRAVEL
    log_amount[legit] = per_row("amount_mu")[legit] + _AMOUNT_OFFSET[cat[legit]] + 0.8 * rng.standard_normal(legit.size)
    hour[legit] = 14.0 + 4.0 * rng.standard_normal(legit.size)
    log_km[legit] = per_row("distance_mu")[legit] + rng.standard_normal(legit.size) + 2.5 * travel
    present[legit] = (rng.random(legit.size) < per_row("card_present")[legit]) & (cat[legit] != _DIGITAL)
    foreign[legit] = rng.random(legit.size) < np.where(travel, 0.4, per_row("foreign")[legit])
    velocity[legit] = rng.poisson(per_row("velocity")[legit])

    bad = np.flatnonzero(fraud_look)
    cnp = rng.random(bad.size) < per_row("cnp_share")[bad]
    cat[bad] = _categories(rng, np.where(cnp[:, None], _CNP_MIX, _CLONED_MIX))
    log_amount[bad] = per_row("amount_mu")[bad] + _AMOUNT_OFFSET[cat[bad]] + 1.0 + 0.9 * rng.standard_normal(bad.size)
    hour[bad] = np.where(cnp, rng.uniform(0.0, 24.0, bad.size), 2.5 + 2.0 * rng.standard_normal(bad.size))
    log_km[bad] = np.where(cnp, 4.0 + 1.2 * rng.standard_normal(bad.size), 4.5 + rng.standard_normal(bad.size))
    present[bad] = ~cnp & (rng.random(bad.size) < 0.95)
    foreign[bad] = rng.random(bad.size) < 0.3
    velocity[bad] = rng.poisson(per_row("velocity")[bad] + np.where(cnp, 5.0, 3.0))

    angle = 2.0 * np.pi * np.mod(hour, 24.0) / 24.0
    x = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    x[:, 0] = log_amount
    x[:, 1] = np.sin(angle)
    x[:, 2] = np.cos(angle)
    x[:, 3] = np.log1p(np.exp(log_km))
    x[:, 4] = present
    x[:, 5] = foreign
    x[:, 6] = velocity
    x[:, 7:] = np.arange(len(CATEGORIES)) == cat[:, None]
    return ArrayDataset(
        name="fraud_synthetic",
        x=x,
        y=y.astype(np.int64),
        feature_names=FEATURE_NAMES,
        class_names=("legit", "fraud"),
        groups=bank,
        description=(
            f"synthetic card transactions: {banks} banks x {transactions_per_bank} rows, mean fraud rate "
            f"{fraud_rate:g}, drift {drift:g}, label noise {label_noise:g}"
        ),
    )


def load_fraud_synthetic(*, seed: int, members: int, options: Mapping[str, Scalar]) -> ArrayDataset:
    """Registry entry: one bank per member unless option ``banks`` says otherwise."""
    check_option_keys("fraud_synthetic", options, _OPTIONS)
    return generate_fraud(
        banks=option(options, "banks", members, int),
        transactions_per_bank=option(options, "transactions_per_bank", 4000, int),
        fraud_rate=option(options, "fraud_rate", 0.01, float),
        drift=option(options, "drift", 1.0, float),
        label_noise=option(options, "label_noise", 0.2, float),
        seed=seed,
    )
