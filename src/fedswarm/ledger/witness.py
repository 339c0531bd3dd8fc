"""Gathering members' cosignatures of tree heads into final checkpoints.

Every node appends the same entries in the same order, so after each round every honest replica has the
same tree head: ``(federation, size, root, time)`` with ``time`` taken from the signed commit that carried
the round's entries. Each member cosigns the head of its own replica and sends the cosignature to a round's
leader (in its reply to the commit, with its next update, or in a ``Checkpoint`` call). The leader's
:class:`WitnessPool` checks each one against its own head of that size: a cosignature over another root
is proof that the member holds another history (:class:`~fedswarm.ledger.replica.ForkDetected`). Once
strictly more than the quorum of registered members cosigned a head, it is a final checkpoint (the
witness cosigning of Syta et al., IEEE S&P 2016).

A checkpoint is signed by the ledger's coordinator. On the network the coordinator is the member that
founded the ledger, under a name of its own with that member's key, so its signature of a head is the same
bytes as that member's cosignature: a head becomes a checkpoint once the founding member cosigned it too.
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
    keep
        How many recent heads to remember (cosignatures of older ones are ignored).
    """

    def __init__(self, *, keep: int = 16) -> None:
        self._keep = keep
        self._heads: dict[int, TreeHead] = {}
        self._due: set[int] = set()
        self._cosignatures: dict[int, dict[str, Cosignature]] = {}
        self._final: Checkpoint | None = None

    @property
    def latest_final(self) -> Checkpoint | None:
        """The largest checkpoint this pool made final."""
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
        coordinator: Coordinator,
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
            Who signs checkpoints.
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
        if (wanted or differs or mine.time != head.time) and (not own or registered != cosignature.key):
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
        if not wanted:
            return None
        signed = self._cosignatures.setdefault(head.size, {})
        signed[cosignature.member] = cosignature
        founder = signed.get(coordinator.member)
        counted = sum(1 for name in signed if name in registry)
        if founder is None or founder.key != coordinator.key or counted < quorum_size(len(registry), quorum=quorum):
            return None
        checkpoint = Checkpoint(mine, coordinator.name, coordinator.key, founder.signature).with_cosignatures(
            list(signed.values())
        )
        checkpoint.verify_signature(signer_key=coordinator.key)
        self._final = checkpoint
        for size in [s for s in self._cosignatures if s <= head.size]:
            del self._cosignatures[size]
        return checkpoint

    def offer_final(self, checkpoint: Checkpoint) -> None:
        """Remember a final checkpoint made elsewhere (checked by the caller) if it is the largest known."""
        if self._final is None or checkpoint.head.size > self._final.head.size:
            self._final = checkpoint
