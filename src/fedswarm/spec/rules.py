"""The registry of aggregation rules a spec can name in ``[strategy.rule]``, with validated options.

```toml
[strategy.rule]
name = "krum"
options = { f = 2 }
```

| rule | options (default) |
|---|---|
| ``mean`` | ``weighted`` (true) |
| ``median`` | ``weighted`` (false) |
| ``trimmed_mean`` | ``beta`` (0.1), ``0 <= beta < 0.5`` |
| ``krum`` | ``f`` (required) |
| ``multi_krum`` | ``f`` (required), ``m`` (n - f) |
| ``bulyan`` | ``f`` (required) |
| ``geometric_median`` | ``tol`` (1e-6), ``max_iter`` (100), ``eps`` (1e-8), ``weighted`` (false) |
| ``fltrust`` | ``root_size`` (100): root examples the aggregator trains on |
| ``clipped_mean`` | ``max_norm`` (required), ``weighted`` (true) |
| ``centered_clipping`` | ``tau`` (required), ``iterations`` (1) |

Every rule but ``mean`` also takes ``bucket_size`` (1): average random buckets of that many updates and
aggregate the bucket means (Karimireddy, He, Jaggi 2022; see :mod:`fedswarm.aggregation.bucketing`).

Bounds that depend on the number of updates per round (``n >= 2f + 3`` for Krum, ``n >= 4f + 3`` for
Bulyan; with bucketing, on the number of buckets ``ceil(n / bucket_size)``) are checked against the
sampled cohort when the run is built, and again by the rule each round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from fedswarm.core.errors import SpecError
from fedswarm.core.task import Scalar
from fedswarm.rounds.robust.rules import (
    BulyanRule,
    CenteredClippingRule,
    ClippedMeanRule,
    FLTrustRule,
    GeometricMedianRule,
    KrumRule,
    MedianRule,
    MultiKrumRule,
    TrimmedMeanRule,
)
from fedswarm.strategy.base import AggregationRule, MeanRule

__all__ = ["RULES", "RuleFactory", "build_named_rule", "build_registered_rule", "min_updates"]

RuleFactory = Callable[[Mapping[str, Scalar]], AggregationRule]

_WHERE = "strategy.rule.options"


class _Options:
    """Typed access to a rule's options; every error names ``{where}.{key}``."""

    def __init__(
        self, rule: str, options: Mapping[str, Scalar], allowed: tuple[str, ...], where: str, *, seed: int
    ) -> None:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            known = ", ".join(allowed) if allowed else "none"
            raise SpecError(f"{where}.{unknown[0]}", f"unknown option for rule {rule!r} (known: {known})")
        self.rule, self.options, self.where, self.seed = rule, options, where, seed

    def _fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.where}.{key}", f"{message} (rule {self.rule!r})")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, *, minimum: int, default: int | None = None) -> int:
        value = self.options.get(key, default)
        if value is None:
            raise self._fail(key, "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self._fail(key, f"must be >= {minimum}, got {value}")
        return value

    def real(self, key: str, *, default: float | None = None, low: float, high: float = math.inf) -> float:
        """A finite number with ``low <= value < high`` (``low`` exclusive when it is 0 and 0 is refused)."""
        value = self.options.get(key, default)
        if value is None:
            raise self._fail(key, "is required")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, f"must be a number, got {value!r}")
        x = float(value)
        if not (math.isfinite(x) and low <= x < high):
            raise self._fail(key, f"must be in [{low:g}, {high:g}), got {x:g}")
        return x

    def positive(self, key: str, *, default: float | None = None) -> float:
        x = self.real(key, default=default, low=0.0)
        if x <= 0:
            raise self._fail(key, f"must be > 0, got {x:g}")
        return x

    def bucket_size(self) -> int:
        """The bucketing option every robust rule takes (1: no bucketing)."""
        return self.integer("bucket_size", minimum=1, default=1)


def _mean(o: _Options) -> AggregationRule:
    return MeanRule(weighted=o.boolean("weighted", True))


def _median(o: _Options) -> AggregationRule:
    return MedianRule(weighted=o.boolean("weighted", False), bucket_size=o.bucket_size(), bucket_seed=o.seed)


def _trimmed_mean(o: _Options) -> AggregationRule:
    return TrimmedMeanRule(
        beta=o.real("beta", default=0.1, low=0.0, high=0.5), bucket_size=o.bucket_size(), bucket_seed=o.seed
    )


def _krum(o: _Options) -> AggregationRule:
    return KrumRule(f=o.integer("f", minimum=0), bucket_size=o.bucket_size(), bucket_seed=o.seed)


def _multi_krum(o: _Options) -> AggregationRule:
    f = o.integer("f", minimum=0)
    m = o.integer("m", minimum=1) if "m" in o.options else None
    return MultiKrumRule(f=f, m=m, bucket_size=o.bucket_size(), bucket_seed=o.seed)


def _bulyan(o: _Options) -> AggregationRule:
    return BulyanRule(f=o.integer("f", minimum=0), bucket_size=o.bucket_size(), bucket_seed=o.seed)


def _geometric_median(o: _Options) -> AggregationRule:
    return GeometricMedianRule(
        tol=o.real("tol", default=1e-6, low=0.0),
        max_iter=o.integer("max_iter", minimum=1, default=100),
        eps=o.positive("eps", default=1e-8),
        weighted=o.boolean("weighted", False),
        bucket_size=o.bucket_size(),
        bucket_seed=o.seed,
    )


def _fltrust(o: _Options) -> AggregationRule:
    return FLTrustRule(
        root_size=o.integer("root_size", minimum=1, default=100), bucket_size=o.bucket_size(), bucket_seed=o.seed
    )


def _clipped_mean(o: _Options) -> AggregationRule:
    return ClippedMeanRule(
        max_norm=o.positive("max_norm"),
        weighted=o.boolean("weighted", True),
        bucket_size=o.bucket_size(),
        bucket_seed=o.seed,
    )


def _centered_clipping(o: _Options) -> AggregationRule:
    return CenteredClippingRule(
        tau=o.positive("tau"),
        iterations=o.integer("iterations", minimum=1, default=1),
        bucket_size=o.bucket_size(),
        bucket_seed=o.seed,
    )


_B = "bucket_size"
_BUILDERS: dict[str, tuple[tuple[str, ...], Callable[[_Options], AggregationRule]]] = {
    "mean": (("weighted",), _mean),
    "median": (("weighted", _B), _median),
    "trimmed_mean": (("beta", _B), _trimmed_mean),
    "krum": (("f", _B), _krum),
    "multi_krum": (("f", "m", _B), _multi_krum),
    "bulyan": (("f", _B), _bulyan),
    "geometric_median": (("tol", "max_iter", "eps", "weighted", _B), _geometric_median),
    "fltrust": (("root_size", _B), _fltrust),
    "clipped_mean": (("max_norm", "weighted", _B), _clipped_mean),
    "centered_clipping": (("tau", "iterations", _B), _centered_clipping),
}


def build_named_rule(
    name: str,
    options: Mapping[str, Scalar],
    *,
    name_key: str = "strategy.rule.name",
    where: str = _WHERE,
    seed: int = 0,
) -> AggregationRule:
    """Build rule ``name`` from ``options``; errors name ``name_key`` or ``{where}.{option}``.

    ``seed`` seeds the rule's bucketing (with the aggregation's count: round ``k`` of a run draws its
    buckets from ``(seed, k)``); pass the run seed.

    Raises
    ------
    SpecError
        Unknown rule, unknown option, missing required option, or a value of the wrong type or range.
    """
    entry = _BUILDERS.get(name)
    if entry is None:
        raise SpecError(name_key, f"unknown aggregation rule {name!r}; choose one of {sorted(_BUILDERS)}")
    allowed, build = entry
    return build(_Options(name, options, allowed, where, seed=seed))


def min_updates(rule: AggregationRule) -> tuple[int, str] | None:
    """The fewest updates per round ``rule`` accepts, with the option that sets it, or None if any number.

    With bucketing the bound holds for the ``ceil(n / s)`` buckets, so ``n`` must reach ``s (need - 1) + 1``.
    """
    if isinstance(rule, KrumRule | MultiKrumRule):
        need = 2 * rule.f + 3
    elif isinstance(rule, BulyanRule):
        need = 4 * rule.f + 3
    else:
        return None
    return rule.bucket_size * (need - 1) + 1, "f"


def _registered(name: str) -> RuleFactory:
    def factory(options: Mapping[str, Scalar]) -> AggregationRule:
        return build_named_rule(name, options)

    factory.__name__ = f"{name}_rule"
    return factory


RULES: dict[str, RuleFactory] = {name: _registered(name) for name in _BUILDERS}
"""Rule name -> factory(options); the spec builder calls it with ``[strategy.rule].options``."""


_BUILTIN_FACTORIES: dict[str, RuleFactory] = dict(RULES)


def build_registered_rule(name: str, options: Mapping[str, Scalar], *, seed: int) -> AggregationRule:
    """Build rule ``name`` from the registry :data:`RULES`; a built-in rule gets ``seed`` for its bucketing
    (a user-registered factory takes only its options).

    Raises
    ------
    SpecError
        Unknown rule, or options the rule refuses.
    """
    factory = RULES.get(name)
    if factory is None:
        raise SpecError("strategy.rule.name", f"unknown aggregation rule {name!r}; choose one of {sorted(RULES)}")
    if factory is _BUILTIN_FACTORIES.get(name):
        return build_named_rule(name, options, seed=seed)
    return factory(options)
