"""Build the run extensions a spec asks for (privacy, robustness ...). See :mod:`fedswarm.rounds.extension`.

Each capability contributes one factory ``(spec, info) -> RunExtension | None`` to :data:`FACTORIES`;
order matters: client stages run in factory order, and at most one extension may provide a collector.
"""

from __future__ import annotations

from collections.abc import Callable

from fedswarm.core.errors import ConfigurationError
from fedswarm.core.task import DataInfo
from fedswarm.rounds.extension import RunExtension
from fedswarm.spec.privacy_extension import build_privacy_extension
from fedswarm.spec.robust_extension import build_robustness_extension
from fedswarm.spec.schema import Spec

__all__ = ["FACTORIES", "ExtensionFactory", "build_extensions"]

ExtensionFactory = Callable[[Spec, DataInfo, int], RunExtension | None]
"""``(spec, data info, number of members) -> extension or None when the spec does not ask for it``."""

FACTORIES: list[ExtensionFactory] = []
FACTORIES.append(build_privacy_extension)
FACTORIES.append(build_robustness_extension)


def build_extensions(spec: Spec, info: DataInfo, members: int) -> list[RunExtension]:
    out: list[RunExtension] = []
    for factory in FACTORIES:
        ext = factory(spec, info, members)
        if ext is not None:
            out.append(ext)
    if sum(1 for e in out if e.collector() is not None) > 1:
        raise ConfigurationError("at most one extension may replace how updates are collected")
    return out
