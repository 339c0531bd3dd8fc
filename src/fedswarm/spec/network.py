"""The ``[network]`` section of a spec: how a federation of real nodes is laid out and paced.

Only ``fedswarm provision``, ``fedswarm up`` and ``fedswarm node start`` read it; ``fedswarm simulate``
ignores it. Timeouts are in seconds, sizes in bytes.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["NetworkSpec", "default_member_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
MIB = 1 << 20


def default_member_name(member: int) -> str:
    """The name of member ``member`` when ``network.names`` is not given (``member-00003``)."""
    return f"member-{member:05d}"


class NetworkSpec(BaseModel):
    """Addresses, pacing and limits of a networked federation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="host of every member's address when provisioning")
    base_port: int = Field(
        7700, ge=0, le=65535, description="member i listens on base_port + i; 0 lets `fedswarm up` pick free ports"
    )
    names: list[str] | None = Field(None, description="member names in member-id order (default member-00000 ...)")
    aggregator: int = Field(0, ge=0, description="star topology: the id of the member that aggregates")
    chunk_bytes: int = Field(MIB, ge=4096, le=64 * MIB, description="size of streamed chunks")
    max_message_bytes: int = Field(4 * MIB, ge=64 * 1024, description="largest single gRPC message")
    max_model_bytes: int = Field(4 << 30, ge=1024, description="largest model, update or state blob accepted")
    round_timeout: float = Field(300.0, gt=0, description="how long a coordinator waits for members' updates")
    evaluate_timeout: float = Field(120.0, gt=0, description="how long a coordinator waits for evaluations")
    rpc_timeout: float = Field(10.0, gt=0, description="deadline of control calls (assign, commit, status)")
    takeover_grace: float = Field(
        10.0, gt=0, description="swarm: the next leader takes over this long after the round deadline passed"
    )
    gather_timeout: float = Field(
        60.0, ge=0, description="at start, how long a coordinator waits for every member to be reachable"
    )
    keepalive: float = Field(20.0, ge=1, description="HTTP/2 keepalive ping interval on idle connections")
    max_clock_skew: float = Field(300.0, gt=0, description="largest accepted clock difference between members")
    probe_interval: float = Field(2.0, gt=0, description="how often unreachable or awaited members are probed")
    validity_days: int = Field(365, ge=1, description="lifetime of member certificates issued by provision")
    num_classes: int | None = Field(None, ge=2, description="classes, for members that bring their own data")

    @field_validator("names")
    @classmethod
    def _valid_names(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        for name in names:
            if not _NAME.match(name) or name.lower() == "ca":
                raise ValueError(
                    f"{name!r}: member names are 1-63 letters, digits, '.' or '-', starting alphanumeric, not 'ca'"
                )
        lowered = [n.lower() for n in names]
        duplicates = sorted({n for n in names if lowered.count(n.lower()) > 1})
        if duplicates:
            raise ValueError(f"duplicate member names {duplicates}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSpec:
        if self.max_message_bytes < self.chunk_bytes + 64 * 1024:
            raise ValueError(
                f"max_message_bytes ({self.max_message_bytes}) must exceed chunk_bytes ({self.chunk_bytes}) by 64 KiB"
            )
        return self

    def member_names(self, members: int) -> list[str]:
        """Names of members ``0 .. members-1``.

        Raises
        ------
        ValueError
            ``names`` is given with another length than ``members``.
        """
        if self.names is None:
            return [default_member_name(m) for m in range(members)]
        if len(self.names) != members:
            raise ValueError(f"network.names lists {len(self.names)} names, federation.members is {members}")
        return list(self.names)
