"""CKKS homomorphic aggregation inside a round: members encrypt, the aggregator adds, a member decrypts.

Exchanges:

``ckks.fit``
    The member trains, applies its client stages and client-level DP, and encrypts the vector with the
    federation's secret context, one ciphertext per ``slots`` values (:mod:`fedswarm.privacy.he.ckks`).
``ckks.decrypt``
    The aggregator, holding only the public context, has added the ciphertexts (and, for
    ``dp = "central"``, its own Gaussian noise encrypted with the public key, so that the decrypting
    member never sees an un-noised sum); it asks one contributor to decrypt the sum, trying the next
    contributor if that one does not answer (at most :data:`DECRYPT_ATTEMPTS`). Only contributors whose
    ``ckks.fit`` reply says they hold the secret context are asked: a star aggregator that trains
    encrypts its own update with the public context and is never asked to decrypt. The member refuses a
    sum of fewer than ``min_inputs`` inputs.

Weighting: every contributor counts once (no number of examples is sent). What the aggregator holds:
ciphertexts and the decrypted sum. See :mod:`fedswarm.privacy.he.ckks` for the key distribution (a
simulation shortcut) and the error bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import RoundAborted, VerificationError
from fedswarm.privacy.he.ckks import CKKSAdder, CKKSKeyHolder, CKKSParams, CKKSPublicHolder, ckks_error_bound
from fedswarm.rounds.collect import Collection, CollectorGenerator
from fedswarm.rounds.member import MemberHandler, MemberRuntime
from fedswarm.rounds.messages import Dropout, Exchange, FitRequest
from fedswarm.rounds.privacy.member import MemberProtection
from fedswarm.rounds.privacy.messages import (
    CKKSDecrypted,
    CKKSDecryptRequest,
    CKKSEncrypted,
    CKKSFitRequest,
    FitOrder,
)
from fedswarm.rounds.privacy.release import SumRelease
from fedswarm.rounds.privacy.wire import expect
from fedswarm.rounds.stages import ServerContext

__all__ = ["DECRYPT_ATTEMPTS", "KIND_DECRYPT", "KIND_FIT", "CKKSCollector", "CKKSMemberSide"]

KIND_FIT = "ckks.fit"
KIND_DECRYPT = "ckks.decrypt"
DECRYPT_ATTEMPTS = 3


class CKKSMemberSide:
    """Member handlers of ``ckks.fit`` and ``ckks.decrypt``; the secret context is loaded on first use."""

    def __init__(
        self, protection: MemberProtection, *, params: CKKSParams, secret: Callable[[], bytes], min_inputs: int
    ) -> None:
        self.protection = protection
        self.params = params
        self._secret = secret
        self._holder: CKKSKeyHolder | None = None
        self.min_inputs = int(min_inputs)

    def handlers(self) -> dict[str, MemberHandler]:
        return {KIND_FIT: self.fit, KIND_DECRYPT: self.decrypt}

    @property
    def holder(self) -> CKKSKeyHolder:
        if self._holder is None:
            self._holder = CKKSKeyHolder(self._secret(), self.params)
        return self._holder

    @property
    def decrypts(self) -> bool:
        """Whether this member holds the secret context (a public-context holder encrypts only)."""
        return not isinstance(self.holder, CKKSPublicHolder)

    def fit(
        self, runtime: MemberRuntime, member: int, request: Any, global_vector: npt.NDArray[np.float64]
    ) -> CKKSEncrypted | Dropout:
        request = expect(request, CKKSFitRequest, kind=KIND_FIT)
        out = self.protection.protected_update(runtime, member, request.order, request.privacy, global_vector)
        if isinstance(out, Dropout):
            return out
        chunks = self.holder.encrypt(out.vector)
        return CKKSEncrypted(runtime.member_name(member), len(out.vector), chunks, self.decrypts)

    def decrypt(self, runtime: MemberRuntime, member: int, request: Any, global_vector: Any) -> CKKSDecrypted:
        request = expect(request, CKKSDecryptRequest, kind=KIND_DECRYPT)
        if request.num_inputs < self.min_inputs:
            raise VerificationError(
                f"{runtime.member_name(member)}: refusing to decrypt a sum of {request.num_inputs} input(s), "
                f"fewer than privacy.ckks.min_inputs = {self.min_inputs}"
            )
        total = self.holder.decrypt(request.chunks, length=request.length)
        return CKKSDecrypted(runtime.member_name(member), total)


class CKKSCollector:
    """Aggregator side of CKKS aggregation (see the module docstring).

    Parameters
    ----------
    release
        The run's DP release state.
    adder
        Ciphertext addition with the public context only.
    min_contributors
        The fewest inputs a decrypted sum may have (``max(strategy.min_members, privacy.ckks.min_inputs)``).
    """

    reveals_individual_updates = False

    def __init__(self, release: SumRelease, *, adder: CKKSAdder, min_contributors: int) -> None:
        self.release = release
        self.adder = adder
        self.min_contributors = int(min_contributors)
        self.last_round: dict[str, Any] = {}

    def collect(
        self,
        rnd: int,
        requests: Mapping[int, FitRequest],
        *,
        dimension: int,
        ctx: ServerContext,
        screen: Callable[[int, npt.NDArray[np.float64]], str | None],
        member_name: Callable[[int], str],
    ) -> CollectorGenerator:
        release = self.release
        privacy = release.member_privacy()
        length = dimension + release.extra
        n_chunks = self.adder.params.chunks(length)
        orders = {m: CKKSFitRequest(FitOrder.from_config(r.config), privacy) for m, r in requests.items()}
        replies = yield Exchange(KIND_FIT, rnd, orders)
        dropouts: dict[int, str] = {}
        rejected: dict[int, str] = {}
        inputs: list[tuple[bytes, ...]] = []
        contributors: list[int] = []
        decrypters: list[int] = []  # contributors holding the secret context, in member order
        up = down = 0
        for m in sorted(requests):
            reply = replies.get(m)
            if reply is None or isinstance(reply, Dropout):
                dropouts[m] = reply.reason if reply is not None else f"{member_name(m)}: no reply"
            elif not isinstance(reply, CKKSEncrypted) or reply.length != length or len(reply.chunks) != n_chunks:
                rejected[m] = f"expected {n_chunks} ciphertext(s) of a {length}-value vector"
            else:
                inputs.append(reply.chunks)
                contributors.append(m)
                if reply.decrypts:
                    decrypters.append(m)
                up += sum(len(c) for c in reply.chunks)
        if len(contributors) < self.min_contributors:
            raise RoundAborted(
                f"round {rnd}: CKKS aggregation: {len(contributors)} encrypted update(s) from {len(requests)} "
                f"selected member(s), need at least {self.min_contributors}; nothing is decrypted"
            )
        release.check_contributors(len(contributors))
        if not decrypters:
            raise RoundAborted(
                f"round {rnd}: CKKS aggregation: none of the {len(contributors)} contributor(s) holds the secret "
                "context, nobody can decrypt the sum"
            )
        total_ct = self.adder.add(inputs, length=length)
        noise = release.central_noise(length, cohort=len(requests))
        if noise is not None:
            total_ct = self.adder.add([total_ct, self.adder.encrypt(noise)], length=length)
        request = CKKSDecryptRequest(rnd, length, len(contributors), total_ct)
        decrypted: CKKSDecrypted | None = None
        problems: list[str] = []
        asked = 0
        for m in decrypters[:DECRYPT_ATTEMPTS]:
            asked += 1
            answer = yield Exchange(KIND_DECRYPT, rnd, {m: request})
            down += sum(len(c) for c in total_ct)
            got = answer.get(m)
            if isinstance(got, CKKSDecrypted) and np.shape(got.total) == (length,) and np.isfinite(got.total).all():
                decrypted = got
                break
            problems.append(got.reason if isinstance(got, Dropout) else f"{member_name(m)}: no valid decryption")
        if decrypted is None:
            raise RoundAborted(f"round {rnd}: CKKS aggregation: no member decrypted the sum: {'; '.join(problems)}")
        total, count = release.release(
            decrypted.total,
            dimension=dimension,
            contributors=len(contributors),
            cohort=len(requests),
            noise_added=noise is not None,
        )
        self.last_round = {
            "transport": "ckks",
            "contributors": len(contributors),
            "ciphertexts_per_member": n_chunks,
            "error_bound": ckks_error_bound(len(contributors) + (1 if noise is not None else 0), self.adder.params),
            "decrypt_requests": asked,
        }
        return Collection(
            members=contributors,
            updates=None,
            weights=np.zeros(0),
            total=total,
            count=count,
            dropouts=dropouts,
            rejected=rejected,
            bytes_up=up,
            extra_bytes_down=down,
        )
