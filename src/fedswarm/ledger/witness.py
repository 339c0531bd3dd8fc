"""Gathering members' cosignatures of tree heads into final checkpoints.

Every node appends the same entries in the same order, so after each round every honest replica has the
same tree head: ``(federation, size, root, time)`` with ``time`` taken from the signed commit that carried
the round's entries. Each member cosigns the head of its own replica and sends the cosignature to a round's
leader (in its reply to the commit, with its next update, or in a ``Checkpoint`` call). The leader's
:class:`WitnessPool` checks each one against its own head of that size: a cosignature over another root
is proof that the member holds another history (:class:`~fedswarm.ledger.replica.ForkDetected`). Once
strictly more than the quorum of registered members cosigned a head, it is a final checkpoint (the
witness cosigning of Syta et al., IEEE S&P 2016).

**Who signs a checkpoint.** On the network the ledger's coordinator is the member that founded it, under
a name of its own with that member's key, so its signature of a head is the same bytes as that member's
cosignature. A checkpoint is the coordinator's when the founding member is among its cosigners (then the
pool signs nothing: the cosignature is the signature), as in simulation. A federation on the network has no
fixed operator, though: when the founding member did not cosign (it is down, or its cosignature did not
arrive), the node that gathered the quorum (a round's leader) signs the checkpoint itself, under its member
name, with its own cosignature. Finality rests on the cosigners, never on the signer: whichever member is
down, a quorum of live members makes a head final.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.checkpoint import Checkpoint, Cosignature, CosignedHead, TreeHead, quorum_size
from fedswarm.ledger.replica import ForkDetected

__all__ = ["Coordinator", "WitnessPool"]


@dataclass(frozen=True, slots=True)
class Coordinator:
    """The ledger's coordinator: its name on the ledger, its key, and the member who holds that key."""

    name: str
    key: bytes
    member: str


class WitnessPool:
    """Cosignatures of this node's recent tree heads, and the final checkpoints they make.

    Parameters
    ----------
    signer
        This node's member name: it signs the checkpoints it makes final that the founding member did not
        cosign, with its own cosignature.
    keep
        How many recent heads to remember (cosignatures of older ones are ignored).
    """

    def __init__(self, *, signer: str, keep: int = 16) -> None:
        self._signer = signer
        self._keep = keep
        self._heads: dict[int, TreeHead] = {}
        self._due: set[int] = set()
        self._cosignatures: dict[int, dict[str, Cosignature]] = {}
        self._final: Checkpoint | None = None

    @property
    def latest_final(self) -> Checkpoint | None:
        """The largest final checkpoint this pool knows (made here or offered)."""
        return self._final

    def head(self, size: int) -> TreeHead | None:
        """This node's head of ``size`` entries, if it is recent."""
        return self._heads.get(size)

    def record(self, head: TreeHead, *, due: bool) -> None:
        """Remember this node's head after an append; only ``due`` heads become checkpoints."""
        self._heads[head.size] = head
        if due:
            self._due.add(head.size)
        for size in sorted(self._heads)[: -self._keep]:
            self._heads.pop(size, None)
            self._due.discard(size)
            self._cosignatures.pop(size, None)

    def add(
        self,
        item: CosignedHead,
        *,
        registry: Mapping[str, bytes],
        coordinator: Coordinator | None,
        quorum: tuple[int, int],
        own: bool = False,
    ) -> Checkpoint | None:
        """Check a member's cosigned head; return the checkpoint it makes final, if it does.

        Parameters
        ----------
        item
            The member's cosignature with the head it signed.
        registry
            Registered members and their keys (the cosigners that count).
        coordinator
            The ledger's coordinator, if it is a member's (it signs the checkpoints that member cosigned).
        quorum
            Strictly more than this fraction of ``registry`` must cosign.
        own
            The cosignature is this node's own (made here: its signature is not checked again).

        Raises
        ------
        ForkDetected
            The member cosigned another root than this node's for the same size.
        VerificationError
            The member is not registered, the key or the signature is wrong, or the head differs from
            this node's in another way (its time).
        """
        head, cosignature = item.head, item.cosignature
        registered = registry.get(cosignature.member)
        if registered is None:
            raise VerificationError(f"cosignature by {cosignature.member}, who is not a registered member")
        mine = self._heads.get(head.size)
        if mine is None:
            return None  # too old, or not appended here yet
        wanted = head.size in self._due and (self._final is None or self._final.head.size < head.size)
        differs = mine.root != head.root or mine.federation != head.federation
        signed = self._cosignatures.setdefault(head.size, {}) if wanted else {}
        known = signed.get(cosignature.member) == cosignature and not differs and mine.time == head.time
        checked = (own and registered == cosignature.key) or known  # made here, or the same bytes checked already
        if (wanted or differs or mine.time != head.time) and not checked:
            item.verify(registered)  # a cosignature that counts, or evidence, must be valid
        if differs:
            raise ForkDetected(
                f"{cosignature.member} cosigned a log of {head.size} entries with root {head.root.hex()[:16]}..., "
                f"this node's has root {mine.root.hex()[:16]}...",
                evidence=(Checkpoint(head, cosignature.member, cosignature.key, cosignature.signature),),
            )
        if mine.time != head.time:
            raise VerificationError(
                f"{cosignature.member} cosigned the head of size {head.size} with time {head.time}, not {mine.time}"
            )
        if not wanted or known:
            return None
        signed[cosignature.member] = cosignature
        return self._finalize(mine, signed, registry=registry, coordinator=coordinator, quorum=quorum)

    def _finalize(
        self,
        head: TreeHead,
        signed: Mapping[str, Cosignature],
        *,
        registry: Mapping[str, bytes],
        coordinator: Coordinator | None,
        quorum: tuple[int, int],
    ) -> Checkpoint | None:
        """The checkpoint of ``head`` once a quorum cosigned it, signed by the coordinator when its founding
        member cosigned, else by this node when it did."""
        if sum(1 for name in signed if name in registry) < quorum_size(len(registry), quorum=quorum):
            return None
        founder = signed.get(coordinator.member) if coordinator is not None else None
        own = signed.get(self._signer)
        if coordinator is not None and founder is not None and founder.key == coordinator.key:
            checkpoint = Checkpoint(head, coordinator.name, coordinator.key, founder.signature)
        elif own is not None and own.key == registry.get(self._signer):
            checkpoint = Checkpoint(head, self._signer, own.key, own.signature)
        else:
            return None
        checkpoint = checkpoint.with_cosignatures(list(signed.values()))
        self._final = checkpoint
        for size in [s for s in self._cosignatures if s <= head.size]:
            del self._cosignatures[size]
        return checkpoint

    def offer_final(self, checkpoint: Checkpoint) -> None:
        """Remember a final checkpoint made elsewhere (checked by the caller) if it is the largest known."""
        if self._final is None or checkpoint.head.size > self._final.head.size:
            self._final = checkpoint
