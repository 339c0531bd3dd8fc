"""The member side of every privacy mode: train, then protect the update before it leaves.

:meth:`MemberProtection.protected_update` is what each ``*.fit`` handler of the privacy exchanges runs:

1. train through the member runtime (its task and its client stages: clipping of ``[stages]``,
   compression ...), or, for ``dp = "local"``, through the same runtime with the task replaced by
   :class:`~fedswarm.rounds.privacy.dpsgd.DPSGDTask`;
2. client-level DP, last, so that nothing lengthens the vector after it: clip to the round's ``C``
   (:class:`~fedswarm.privacy.dp.stages.DPClip`), note the unclipped bit, add the distributed noise
   share (:class:`~fedswarm.privacy.dp.stages.DistributedNoiseShare`).

The result goes out in the clear (``privacy.fit``), masked (``secagg.fit``) or encrypted (``ckks.fit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedswarm.privacy.dp.mechanisms import secure_generator
from fedswarm.privacy.dp.stages import clip_and_flag
from fedswarm.rounds.member import MemberRuntime
from fedswarm.rounds.messages import Dropout, FitReply, FitRequest
from fedswarm.rounds.privacy.dpsgd import DPSGDTask
from fedswarm.rounds.privacy.messages import FitOrder, MemberPrivacy

__all__ = ["DPSGDSettings", "MemberProtection", "ProtectedUpdate"]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class DPSGDSettings:
    """``dp = "local"``: DP-SGD's noise multiplier and per-example clip."""

    noise_multiplier: float
    max_grad_norm: float


@dataclass(frozen=True, slots=True)
class ProtectedUpdate:
    """A member's vector ready to leave: the update (and trailing bit), examples and train metrics."""

    vector: Vector
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class MemberProtection:
    """Member-side training and client-level DP transforms; one per process, shared by all its members."""

    def __init__(self, *, dpsgd: DPSGDSettings | None = None) -> None:
        self.dpsgd = dpsgd
        self._dp_runtimes: dict[int, MemberRuntime] = {}

    def _training_runtime(self, runtime: MemberRuntime) -> MemberRuntime:
        if self.dpsgd is None:
            return runtime
        cached = self._dp_runtimes.get(id(runtime))
        if cached is None:
            from fedswarm.task.torch_task import TorchTask

            inner = runtime.task
            assert isinstance(inner, TorchTask), "dp = 'local' is refused for tasks that are not TorchTasks"
            cached = MemberRuntime(
                DPSGDTask(inner, noise_multiplier=self.dpsgd.noise_multiplier, max_grad_norm=self.dpsgd.max_grad_norm),
                runtime.data_for,
                schema=runtime.schema,
                stages=runtime.stages,
                state_store=runtime.state_store,
                member_name=runtime.member_name,
            )
            self._dp_runtimes = {id(runtime): cached}
        return cached

    def train(self, runtime: MemberRuntime, member: int, order: FitOrder, global_vector: Vector) -> FitReply | Dropout:
        """Train ``member`` from the global vector; the runtime's client stages apply."""
        request = FitRequest(runtime.parameters_from(global_vector), order.to_config())
        return self._training_runtime(runtime).fit(member, request, global_vector)

    @staticmethod
    def protect(update: Vector, privacy: MemberPrivacy) -> Vector:
        """Clip, flag and noise an update as ``privacy`` says (client-level DP); returns a new vector."""
        u = np.asarray(update, dtype=np.float64)
        bit = 1.0
        if privacy.clip > 0:
            u, bit = clip_and_flag(u, clip=privacy.clip)
        else:
            u = u.copy()
        rng = secure_generator() if privacy.update_noise_std > 0 or privacy.count_noise_std > 0 else None
        if rng is not None and privacy.update_noise_std > 0:
            u += rng.normal(0.0, privacy.update_noise_std, size=u.shape)
        if privacy.report_unclipped:
            b = bit + (
                float(rng.normal(0.0, privacy.count_noise_std))
                if rng is not None and privacy.count_noise_std > 0
                else 0.0
            )
            u = np.concatenate([u, [b]])
        return u

    def protected_update(
        self,
        runtime: MemberRuntime,
        member: int,
        order: FitOrder,
        privacy: MemberPrivacy,
        global_vector: Vector,
    ) -> ProtectedUpdate | Dropout:
        """Train and protect; a failed fit comes back as the runtime's :class:`Dropout`."""
        reply = self.train(runtime, member, order, global_vector)
        if isinstance(reply, Dropout):
            return reply
        return ProtectedUpdate(
            vector=self.protect(reply.update, privacy),
            num_examples=int(reply.num_examples),
            metrics={k: float(v) for k, v in reply.metrics.items() if np.isfinite(v)},
        )
