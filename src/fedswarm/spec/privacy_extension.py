"""Build the privacy extension from ``[privacy]``, refusing unsafe or unsupported combinations.

:func:`build_privacy_extension` is the factory registered in :data:`fedswarm.spec.extensions.FACTORIES`.
It runs in every process that simulates members (the same spec gives the same extension), so it is
deterministic except for CKKS keys, which come from the simulation key cache, or, on a real node, from the
node's startup kit (``ckks_keys``: the public context for encryption and additions, the secret one only on
members, which alone decrypt).

Refusals (:class:`~fedswarm.core.errors.ConfigurationError`, naming the keys):

* DP that claims a guarantee it cannot give: no or zero noise, a missing or non-positive clip, a delta not
  below ``1 / members`` (client-level) or ``1 / records`` of the smallest member (``dp = "local"``), a
  budget that one round already exceeds (:func:`~fedswarm.privacy.dp.config.validate_dp` and the budgets);
* a SecAgg+ threshold at or below half of a member's neighbourhood, a cohort under 3, a ring above
  64 bits (:func:`~fedswarm.rounds.privacy.secagg.secagg_params`);
* secure aggregation or client-level DP with an aggregation rule that needs individual updates, or with
  ``strategy.rule.options.weighted = true`` (contributors weigh the same under both);
* ``dp = "distributed"`` with ``min_survivors`` above the cohort;
* ``dp = "local"`` without a PyTorch task, with FedProx, or with a model Opacus cannot train.

Supported combinations: ``dp`` none/central/local with ``secure_aggregation`` none/secagg+/ckks, and
``dp = "distributed"`` with secagg+/ckks; any strategy (FedAvg, FedProx, FedAdam, FedYogi, FedAdagrad;
FedProx not with ``dp = "local"``); rule ``mean`` (uniform) whenever updates are hidden or noised, any rule
with ``dp = "local"`` or ``"none"`` in the clear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedswarm.core.errors import ConfigurationError
from fedswarm.core.task import DataInfo
from fedswarm.spec.build import build_data, build_rule, build_task
from fedswarm.spec.privacy import PrivacySpec
from fedswarm.spec.schema import FedProxSpec, Spec
from fedswarm.strategy.base import Sampling

if TYPE_CHECKING:
    from fedswarm.privacy.dp.extension import ClientLevelBudget
    from fedswarm.privacy.dp.local import SampleLevelBudget
    from fedswarm.privacy.he.ckks import CKKSKeyMaterial, CKKSParams
    from fedswarm.rounds.privacy.ckks import CKKSMemberSide
    from fedswarm.rounds.privacy.extension import PrivacyExtension
    from fedswarm.rounds.privacy.member import DPSGDSettings, MemberProtection
    from fedswarm.rounds.privacy.release import SumRelease

__all__ = ["SUPPORTED_COMBINATIONS", "build_privacy_extension"]

SUPPORTED_COMBINATIONS = (
    "with secure aggregation (secagg+, ckks) or client-level DP (central, distributed) the rule must be 'mean' "
    "(every contributor weighs the same) and any strategy works (fedavg, fedprox, fedadam, fedyogi, fedadagrad); "
    "rules that need individual updates (robust rules) work with dp = 'none' or 'local' and "
    "secure_aggregation = 'none'"
)


def _check_rule(spec: Spec, p: PrivacySpec) -> None:
    hides = p.secure_aggregation != "none" or p.dp in ("central", "distributed")
    rule = build_rule(spec)
    if hides and rule.needs_individual_updates:
        what = (
            f"privacy.secure_aggregation = {p.secure_aggregation!r}"
            if p.secure_aggregation != "none"
            else f"privacy.dp = {p.dp!r}"
        )
        raise ConfigurationError(
            f"strategy.rule.name: rule {rule.name!r} needs individual updates, which {what} does not provide "
            f"(the aggregator gets only a sum); supported: {SUPPORTED_COMBINATIONS}"
        )
    if spec.strategy.rule.options.get("weighted") is True:
        raise ConfigurationError(
            "strategy.rule.options.weighted: with [privacy] every contributor weighs the same (a member's number "
            "of examples is neither protected by DP nor sent under secure aggregation); remove the option or set "
            "it to false"
        )


def _client_level(
    spec: Spec, p: PrivacySpec, *, population: int, cohort: int
) -> tuple[SumRelease, ClientLevelBudget, dict[str, Any]]:
    from fedswarm.privacy.dp.adaptive import AdaptiveClipper, default_count_noise_multiplier, update_noise_multiplier
    from fedswarm.privacy.dp.calibration import calibrate_noise_multiplier
    from fedswarm.privacy.dp.extension import ClientLevelBudget, client_sampling
    from fedswarm.rounds.privacy.release import SumRelease

    assert p.clip is not None and p.delta is not None
    rounds = spec.federation.rounds
    sampling, _ = client_sampling(population=population, cohort=cohort)
    if p.noise_multiplier is not None:
        z = float(p.noise_multiplier)
    else:
        assert p.target_epsilon is not None
        z = calibrate_noise_multiplier(
            target_epsilon=p.target_epsilon,
            delta=p.delta,
            rounds=rounds,
            sampling=sampling,
            sample_size=cohort,
            population=population,
            accountant=p.accountant,
        )
    clipper = None
    z_update = z
    facts: dict[str, Any] = {"noise_multiplier": z}
    if p.adaptive_clip is not None:
        ad = p.adaptive_clip
        sb = ad.count_noise_multiplier or default_count_noise_multiplier(cohort)
        try:
            z_update = update_noise_multiplier(noise_multiplier=z, count_noise_multiplier=sb)
        except ConfigurationError as exc:
            raise ConfigurationError(f"privacy.adaptive_clip.count_noise_multiplier: {exc}") from None
        clipper = AdaptiveClipper(
            initial_clip=p.clip, target_quantile=ad.target_quantile, clip_lr=ad.clip_lr, count_noise_multiplier=sb
        )
        facts.update({"update_noise_multiplier": z_update, "count_noise_multiplier": sb})
    min_survivors = 1
    if p.dp == "distributed":
        min_survivors = p.min_survivors if p.min_survivors is not None else cohort
        if min_survivors > cohort:
            raise ConfigurationError(
                f"privacy.min_survivors: {min_survivors} exceeds the {cohort} members sampled per round"
            )
        facts["min_survivors"] = min_survivors
    release = SumRelease(
        mode=p.dp, clip=p.clip, update_noise_multiplier=z_update, adaptive=clipper, min_survivors=min_survivors
    )
    budget = ClientLevelBudget(
        accountant=p.accountant,
        population=population,
        cohort=cohort,
        noise_multiplier=z,
        delta=p.delta,
        budget_epsilon=p.budget_epsilon,
        planned_rounds=rounds,
    )
    return release, budget, facts


def _sample_level(
    spec: Spec, p: PrivacySpec, info: DataInfo, *, records: list[int]
) -> tuple[DPSGDSettings, SampleLevelBudget, dict[str, Any]]:
    from fedswarm.privacy.dp.local import SampleLevelBudget, calibrate_dpsgd_noise
    from fedswarm.rounds.privacy.dpsgd import DPSGDTask, opacus_version
    from fedswarm.rounds.privacy.member import DPSGDSettings
    from fedswarm.task.torch_task import TorchTask

    assert p.clip is not None and p.delta is not None
    if isinstance(spec.strategy, FedProxSpec):
        raise ConfigurationError("strategy.name: 'fedprox' is not supported with privacy.dp = 'local' (DP-SGD)")
    task = build_task(spec, info)
    if not isinstance(task, TorchTask):
        raise ConfigurationError(
            f"privacy.dp: 'local' runs DP-SGD with Opacus and needs a PyTorch task (task.name = 'torch_mlp' or a "
            f"TorchTask), got {type(task).__name__}"
        )
    t = spec.training
    if p.noise_multiplier is not None:
        z = float(p.noise_multiplier)
    else:
        assert p.target_epsilon is not None
        z = calibrate_dpsgd_noise(
            target_epsilon=p.target_epsilon,
            delta=p.delta,
            records=records,
            batch_size=t.batch_size,
            epochs=t.epochs,
            rounds=spec.federation.rounds,
            accountant=p.accountant,
        )
    DPSGDTask(task, noise_multiplier=z, max_grad_norm=p.clip)  # refuses models Opacus cannot train
    budget = SampleLevelBudget(
        accountant=p.accountant,
        records=records,
        batch_size=t.batch_size,
        epochs=t.epochs,
        noise_multiplier=z,
        delta=p.delta,
        budget_epsilon=p.budget_epsilon,
        planned_rounds=spec.federation.rounds,
    )
    facts = {"noise_multiplier": z, "min_records": min(records), "opacus": opacus_version()}
    return DPSGDSettings(noise_multiplier=z, max_grad_norm=p.clip), budget, facts


def _kit_member_side(
    protection: MemberProtection, *, params: CKKSParams, keys: CKKSKeyMaterial, min_inputs: int
) -> CKKSMemberSide:
    """CKKS member handlers with a node's own keys: without the secret context it encrypts with the public
    one and refuses to decrypt; its ``ckks.fit`` reply says so and the coordinator never asks it."""
    from fedswarm.privacy.he.ckks import CKKSKeyHolder, CKKSPublicHolder
    from fedswarm.rounds.privacy.ckks import CKKSMemberSide

    secret = keys.secret
    public = keys.public

    class KitMemberSide(CKKSMemberSide):
        @property
        def holder(self) -> CKKSKeyHolder:
            if self._holder is None:
                self._holder = CKKSKeyHolder(secret, params) if secret else CKKSPublicHolder(public, params)
            return self._holder

    return KitMemberSide(protection, params=params, secret=lambda: secret or b"", min_inputs=min_inputs)


def build_privacy_extension(
    spec: Spec, info: DataInfo, members: int, *, ckks_keys: CKKSKeyMaterial | None = None
) -> PrivacyExtension | None:
    """The privacy extension the spec asks for, or ``None`` (see the module docstring for refusals).

    ``ckks_keys``: a real node's CKKS keys (default: the simulation's cached keys).
    """
    p = spec.privacy
    if p.dp == "none" and p.secure_aggregation == "none":
        return None
    from fedswarm.privacy.dp.config import validate_dp
    from fedswarm.rounds.collect import Collector
    from fedswarm.rounds.member import MemberHandler
    from fedswarm.rounds.privacy.extension import PrivacyBudget, PrivacyExtension
    from fedswarm.rounds.privacy.member import MemberProtection
    from fedswarm.rounds.privacy.plain import ClearCollector, ClearMemberSide
    from fedswarm.rounds.privacy.release import SumRelease

    strategy = spec.strategy
    cohort = Sampling(fraction=strategy.fraction, min_members=strategy.min_members).count(members)
    _check_rule(spec, p)
    records: list[int] | None = None
    if p.dp == "local":
        data = build_data(spec)
        records = [len(data.local(m).train) for m in range(data.members)]
    validate_dp(p, members=members, records=min(records) if records else None)

    description: dict[str, Any] = {
        "dp": p.dp,
        "secure_aggregation": p.secure_aggregation,
        "weighting": "uniform",
        "cohort": cohort,
        "members": members,
    }
    budget: PrivacyBudget | None = None
    dpsgd: DPSGDSettings | None = None
    if p.dp in ("central", "distributed"):
        release, client_budget, facts = _client_level(spec, p, population=members, cohort=cohort)
        client_budget.check_first_round()
        budget = client_budget
        description.update(facts)
    elif p.dp == "local":
        assert records is not None
        dpsgd, sample_budget, facts = _sample_level(spec, p, info, records=records)
        sample_budget.check_first_round()
        budget = sample_budget
        release = SumRelease(mode="local")
        description.update(facts)
    else:
        release = SumRelease(mode="none")
    if p.dp != "none" and spec.evaluation.members != "none":
        description["not_covered"] = (
            "members' evaluation metrics (evaluation.members) are reported without noise and are not covered by "
            "epsilon; set evaluation.members = 'none' for a strict guarantee"
        )

    protection = MemberProtection(dpsgd=dpsgd)
    collector: Collector
    handlers: dict[str, MemberHandler]
    if p.secure_aggregation == "secagg+":
        from fedswarm.rounds.privacy.secagg import SecAggCollector, SecAggMemberSide, SecAggSettings

        s = p.secagg
        secagg = SecAggCollector(
            release,
            settings=SecAggSettings(
                bits=s.bits,
                clip=s.clip,
                rounding=s.rounding,
                degree=s.degree,
                dropout_tolerance=s.dropout_tolerance,
                threshold=s.threshold,
                min_inputs=s.min_inputs,
                keep_view=s.keep_view,
            ),
            federation=spec.federation.name,
            seed=spec.federation.seed,
            default_range=spec.stages.clip if spec.stages.clip > 0 else None,
            min_contributors=strategy.min_members,
        )
        trial = secagg.params([f"m{i}" for i in range(cohort)], rnd=1, dimension=1)
        description.update({"secagg_degree": trial.degree, "secagg_threshold": trial.threshold})
        collector, handlers = secagg, SecAggMemberSide(protection).handlers()
    elif p.secure_aggregation == "ckks":
        from fedswarm.privacy.he.ckks import CKKSAdder, CKKSParams, public_context_of, unsafe_simulation_secret_context
        from fedswarm.rounds.privacy.ckks import CKKSCollector, CKKSMemberSide

        c = p.ckks
        params = CKKSParams(
            poly_modulus_degree=c.poly_modulus_degree,
            coeff_mod_bit_sizes=c.coeff_mod_bit_sizes,
            scale_bits=c.scale_bits,
        )
        if cohort < max(c.min_inputs, strategy.min_members):
            raise ConfigurationError(
                f"privacy.ckks.min_inputs: {c.min_inputs} exceeds the {cohort} members sampled per round"
            )

        side: CKKSMemberSide
        if ckks_keys is None:

            def secret() -> bytes:
                return unsafe_simulation_secret_context(
                    params, seed=spec.federation.seed, federation=spec.federation.name
                )

            public = public_context_of(secret())
            side = CKKSMemberSide(protection, params=params, secret=secret, min_inputs=c.min_inputs)
        else:
            public = ckks_keys.public
            side = _kit_member_side(protection, params=params, keys=ckks_keys, min_inputs=c.min_inputs)
        collector = CKKSCollector(
            release,
            adder=CKKSAdder(public, params),
            min_contributors=max(strategy.min_members, c.min_inputs),
        )
        handlers = side.handlers()
    else:
        collector = ClearCollector(release, min_contributors=strategy.min_members, individual=p.dp == "local")
        handlers = ClearMemberSide(protection, send_examples=False).handlers()
    return PrivacyExtension(
        collector=collector, handlers=handlers, release=release, budget=budget, description=description
    )
