"""The ``[privacy]`` section of a spec: differential privacy, secure aggregation and their knobs.

It extends :class:`~fedswarm.privacy.dp.config.DPConfig` (``dp``, ``noise_multiplier`` or
``target_epsilon``, ``delta``, ``clip``, ``adaptive_clip``, ``accountant``, ``budget_epsilon``) with how
updates travel:

``secure_aggregation = "none"``
    Members send their (clipped, possibly noised) updates in the clear to the aggregator.
``secure_aggregation = "secagg+"``
    SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020): the aggregator only ever holds masked vectors and
    learns only their sum. Knobs in ``[privacy.secagg]``.
``secure_aggregation = "ckks"``
    CKKS homomorphic encryption through TenSEAL: the aggregator adds ciphertexts with a public context,
    members decrypt the sum. Knobs in ``[privacy.ckks]``.

Example::

    [privacy]
    dp = "distributed"
    target_epsilon = 3.0
    delta = 1e-5
    clip = 1.0
    secure_aggregation = "secagg+"
    min_survivors = 8

    [privacy.secagg]
    bits = 20
    dropout_tolerance = 0.1

Checks that need the federation (members, cohort, task, data) are made when the run is built, by
:func:`fedswarm.spec.privacy_extension.build_privacy_extension`; see ``docs/privacy.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedswarm.privacy.dp.config import DPConfig

__all__ = ["CKKSSpec", "PrivacySpec", "SecAggSpec", "SecureAggregation"]

SecureAggregation = Literal["none", "secagg+", "ckks"]


class SecAggSpec(BaseModel):
    """``[privacy.secagg]``: quantization and the neighbour graph of SecAgg+.

    ``clip`` is the per-coordinate range ``[-clip, clip]`` of the values members send; by default it is
    derived from the DP clip (with a margin for distributed noise shares) or from ``stages.clip``.
    ``degree`` is the number of neighbours each member shares secrets with (default: logarithmic in the
    cohort, the complete graph for small cohorts), or ``dropout_tolerance`` (an expected dropout rate)
    picks the degree. ``threshold`` defaults to the smallest value above half of a member's
    neighbourhood (the member and its neighbours). ``min_inputs`` is the fewest inputs a sum may have.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int = Field(16, ge=2, le=48, description="bits per quantized coordinate, sign included")
    clip: float | None = Field(None, gt=0, description="per-coordinate range of what members send")
    rounding: Literal["stochastic", "deterministic"] = "stochastic"
    degree: int | None = Field(None, ge=2, description="neighbours per member (cohort - 1: complete graph)")
    dropout_tolerance: float | None = Field(None, ge=0, lt=0.5, description="expected dropout rate")
    threshold: int | None = Field(None, ge=2, description="Shamir shares needed to reconstruct a secret")
    min_inputs: int | None = Field(None, ge=2, description="fewest masked inputs a released sum may have")
    keep_view: bool = Field(False, description="keep the masked vectors the aggregator received (audits, tests)")

    @model_validator(mode="after")
    def _one_graph_knob(self) -> SecAggSpec:
        if self.degree is not None and self.dropout_tolerance is not None:
            raise ValueError("give either degree or dropout_tolerance, not both")
        return self


class CKKSSpec(BaseModel):
    """``[privacy.ckks]``: CKKS parameters (Cheon, Kim, Kim and Song 2017) for TenSEAL.

    The defaults (ring degree 8192, moduli 60-40-60 bits, scale 2^40) give 128-bit security by the
    homomorphic encryption standard's table and about 1e-7 absolute error on a sum of 100 inputs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    poly_modulus_degree: Literal[4096, 8192, 16384, 32768] = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = Field(40, ge=10, le=60)
    min_inputs: int = Field(2, ge=2, description="decrypting members refuse a sum of fewer inputs")


class PrivacySpec(DPConfig):
    """``[privacy]``: the DP settings of :class:`DPConfig` plus how updates are protected in transit.

    ``min_survivors`` (``dp = "distributed"`` only) is the fewest contributors a round may release: each
    member adds ``1 / min_survivors`` of the target noise variance, and a round with fewer survivors
    aborts instead of releasing a sum with too little noise. It defaults to the cohort size (no dropout
    margin: any dropout aborts the round), so set it below the cohort when dropouts are expected.
    """

    secure_aggregation: SecureAggregation = "none"
    min_survivors: int | None = Field(None, ge=1)
    secagg: SecAggSpec = Field(default_factory=SecAggSpec)
    ckks: CKKSSpec = Field(default_factory=CKKSSpec)

    @model_validator(mode="after")
    def _consistent_transport(self) -> PrivacySpec:
        if self.dp == "distributed" and self.secure_aggregation == "none":
            raise ValueError(
                "dp = 'distributed' needs secure_aggregation = 'secagg+' or 'ckks': each member's noise share "
                "is too small to protect an update seen in the clear"
            )
        if self.min_survivors is not None and self.dp != "distributed":
            raise ValueError("min_survivors applies only to dp = 'distributed'")
        return self
