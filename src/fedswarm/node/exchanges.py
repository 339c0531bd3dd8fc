"""Extension exchanges over the network: which kinds exist, how long a coordinator waits, how replies are read.

Run extensions (:mod:`fedswarm.rounds.extension`) add exchange kinds to a round: ``privacy.fit`` (a
protected update in the clear), the four SecAgg+ phases, ``ckks.fit`` and ``ckks.decrypt``. Their requests
and replies are :class:`~fedswarm.rounds.privacy.wire.WireMessage` s, so a node ships them as opaque
bytes: the request in a ``WORK_EXCHANGE`` assignment, the reply as the data of an update whose header
names the kind (:mod:`fedswarm.node.roundloop`, :mod:`fedswarm.node.worker`).

The coordinator reads a reply only through :func:`decode_reply`: a strict registry maps each exchange kind
to the one reply class it accepts (all from :mod:`fedswarm.rounds.privacy.messages`), so no other class
is ever instantiated from a member's bytes, and a reply that claims to come from another member than
the one that signed it is refused.

Deadlines (:func:`exchange_timeout`): the kinds in which members train (``*.fit``) get
``network.round_timeout``, like a plain fit. The other phases do no training: key agreement, encrypting
a few shares, unmasking, one CKKS decryption. They cost at most what an evaluation of the model costs,
so they get ``network.evaluate_timeout``; a member that died is noticed earlier anyway, by the
coordinator's health probes.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedswarm.core.errors import VerificationError
from fedswarm.rounds.privacy.messages import (
    CKKSDecrypted,
    CKKSEncrypted,
    PrivateFitReply,
    SecAggKeys,
    SecAggMasked,
    SecAggRevealed,
    SecAggShares,
)
from fedswarm.rounds.privacy.wire import WireMessage, decode_one_of
from fedswarm.spec.network import NetworkSpec
from fedswarm.spec.schema import Spec
from fedswarm.transport.envelope import MessageRefused

__all__ = ["FIT_KINDS", "REPLIES", "decode_reply", "exchange_timeout", "round_seconds"]

REPLIES: Mapping[str, type[WireMessage]] = {
    "privacy.fit": PrivateFitReply,
    "secagg.advertise": SecAggKeys,
    "secagg.share": SecAggShares,
    "secagg.fit": SecAggMasked,
    "secagg.unmask": SecAggRevealed,
    "ckks.fit": CKKSEncrypted,
    "ckks.decrypt": CKKSDecrypted,
}
"""The reply class each extension exchange kind accepts."""

FIT_KINDS = frozenset({"privacy.fit", "secagg.fit", "ckks.fit"})
"""Exchange kinds in which members train."""

_CKKS_DECRYPT_ATTEMPTS = 3  # fedswarm.rounds.privacy.ckks.DECRYPT_ATTEMPTS (not imported: TenSEAL stays optional)


def exchange_timeout(kind: str, settings: NetworkSpec) -> float:
    """Seconds a coordinator waits for the replies of an exchange of ``kind`` (see the module docstring)."""
    if kind == "fit" or kind in FIT_KINDS:
        return settings.round_timeout
    return settings.evaluate_timeout


def round_seconds(spec: Spec) -> float:
    """The longest a round's exchanges may take before its evaluation, when every phase waits to its deadline.

    A plain round has one fit exchange; SecAgg+ adds three short phases, CKKS up to three decryption
    attempts; group-wise aggregation runs the collection once per group, one group after the other.
    """
    s = spec.network
    p = spec.privacy
    one = s.round_timeout
    if p.secure_aggregation == "secagg+":
        one += 3 * s.evaluate_timeout
    elif p.secure_aggregation == "ckks":
        one += _CKKS_DECRYPT_ATTEMPTS * s.evaluate_timeout
    groups = spec.robustness.groupwise.groups
    return one * max(1, min(groups, spec.federation.members))


def decode_reply(kind: str, data: bytes | bytearray, *, sender: str) -> WireMessage:
    """The reply of ``sender`` to an exchange of ``kind``, checked.

    Raises
    ------
    MessageRefused
        ``malformed``: an unknown kind, bytes that are not the kind's reply class, or a reply naming another
        member than ``sender``.
    """
    expected = REPLIES.get(kind)
    if expected is None:
        raise MessageRefused("malformed", f"reply from {sender}: unknown exchange kind {kind[:40]!r}")
    try:
        reply = decode_one_of(data, (expected,), where=f"{kind} reply from {sender}")
    except VerificationError as exc:
        raise MessageRefused("malformed", str(exc)) from None
    claimed = getattr(reply, "member", sender)
    if claimed != sender:
        raise MessageRefused("malformed", f"{kind} reply from {sender} claims to come from {str(claimed)[:70]!r}")
    return reply
