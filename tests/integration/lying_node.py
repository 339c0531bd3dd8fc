"""A node whose commits lie about one member's update, for the lying-leader integration test only.

Run as ``python lying_node.py MODE MEMBER ROUND start --kit KIT ...``: it runs the normal ``fedswarm node``
command (everything after ``ROUND``) in a process where the commit of round ``ROUND`` is altered just
before it is signed:

* ``omit``: the input ``MEMBER`` delivered is left out of the commit's declared inputs;
* ``alter``: that input is declared with another update digest.

The production code has no switch for this: the patch wraps :meth:`fedswarm.node.network.Network.seal`
(the point where every message is signed) in this process only, so the lie is signed with the node's
real key and is indistinguishable on the wire from an honest commit.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import Any

from fedswarm.node.network import Network
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

log = logging.getLogger("fedswarm.node")


def install(mode: str, member: str, lie_round: int) -> None:
    """Make this process's commits of round ``lie_round`` lie about ``member``'s update."""
    honest_seal = Network.seal

    def lying_seal(self: Network, body: Any, *, round: int) -> pb.Envelope:
        if isinstance(body, pb.Commit) and round == lie_round:
            inputs = list(body.inputs)
            mine = [i for i in inputs if i.member == member]
            if mine and mode == "omit":
                del body.inputs[:]
                body.inputs.extend(i for i in inputs if i.member != member)
                log.warning("LYING: round %d commit omits the update %s of %s", round, mine[0].update_digest, member)
            elif mine and mode == "alter":
                forged = hashlib.sha256(b"forged" + mine[0].update_digest.encode()).hexdigest()
                log.warning("LYING: round %d commit declares %s for %s, which sent %s", round, forged, member,
                            mine[0].update_digest)  # fmt: skip
                mine[0].update_digest = forged
        return honest_seal(self, body, round=round)

    Network.seal = lying_seal  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    mode, member, lie_round, *node_args = argv
    if mode not in ("omit", "alter"):
        raise SystemExit(f"lying_node.py: MODE must be 'omit' or 'alter', not {mode!r}")
    install(mode, member, int(lie_round))
    from fedswarm.cli.node import app

    app(args=node_args, prog_name="fedswarm node")


if __name__ == "__main__":
    main(sys.argv[1:])
