"""Build the run extensions a spec asks for (privacy, robustness ...). See :mod:`fedswarm.rounds.extension`.

Each capability contributes one factory ``(spec, info) -> RunExtension | None`` to :data:`FACTORIES`;
order matters: client stages run in factory order, and at most one extension may provide a collector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedswarm.core.errors import ConfigurationError
from fedswarm.core.task import DataInfo
from fedswarm.rounds.collect import Collector
from fedswarm.rounds.extension import RunExtension
from fedswarm.spec.privacy_extension import build_privacy_extension
from fedswarm.spec.robust_extension import build_robustness_extension
from fedswarm.spec.schema import Spec

if TYPE_CHECKING:
    from fedswarm.privacy.he.ckks import CKKSKeyMaterial

__all__ = ["FACTORIES", "ExtensionFactory", "build_extensions", "resolve_collector"]

ExtensionFactory = Callable[[Spec, DataInfo, int], RunExtension | None]
"""``(spec, data info, number of members) -> extension or None when the spec does not ask for it``."""

FACTORIES: list[ExtensionFactory] = []
FACTORIES.append(build_privacy_extension)
FACTORIES.append(build_robustness_extension)


def build_extensions(
    spec: Spec, info: DataInfo, members: int, *, ckks_keys: CKKSKeyMaterial | None = None
) -> list[RunExtension]:
    """The run's extensions, in factory order.

    ``ckks_keys``: a real node's CKKS keys from its startup kit (default: simulation keys, see
    :func:`~fedswarm.privacy.he.ckks.unsafe_simulation_secret_context`).
    """
    out: list[RunExtension] = []
    for factory in FACTORIES:
        if factory is build_privacy_extension and ckks_keys is not None:
            ext: RunExtension | None = build_privacy_extension(spec, info, members, ckks_keys=ckks_keys)
        else:
            ext = factory(spec, info, members)
        if ext is not None:
            out.append(ext)
    resolve_collector(out)
    return out


def resolve_collector(extensions: Sequence[RunExtension]) -> Collector | None:
    """The one collector of a run. A collector with a ``wrap`` method (group-wise robust aggregation) may
    take another extension's collector (secure aggregation) as the way each of its groups is collected."""
    collectors = [c for e in extensions if (c := e.collector()) is not None]
    if len(collectors) <= 1:
        return collectors[0] if collectors else None
    wrappers = [c for c in collectors if hasattr(c, "wrap")]
    inner = [c for c in collectors if not hasattr(c, "wrap")]
    if len(collectors) == 2 and len(wrappers) == 1 and len(inner) == 1:
        outer = wrappers[0]
        outer.wrap(inner[0])
        return outer
    raise ConfigurationError("at most one extension may replace how updates are collected")
