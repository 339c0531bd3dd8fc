"""``ledger.quorum``: the fraction of registered members whose cosignatures make a checkpoint final.

In TOML the quorum is a string ``"N/D"`` (``quorum = "2/3"``, also ``--set ledger.quorum=1/2`` on the
command line); in Python it is the pair ``(N, D)`` that ``federation_created.quorum`` records. A checkpoint
is final when **strictly more** than ``N/D`` of the registered members cosigned it
(:func:`fedswarm.ledger.checkpoint.quorum_size`), so ``N/D`` must lie strictly between 0 and 1: ``0`` would
make a single cosignature final, and at ``1`` or above no checkpoint could ever be final. The fraction is
kept as written (``"4/6"`` stays ``(4, 6)``; it needs the same cosigners as ``"2/3"``).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer
from pydantic_core import PydanticCustomError

__all__ = ["DEFAULT_QUORUM", "MAX_DENOMINATOR", "Quorum", "format_quorum", "parse_quorum"]

DEFAULT_QUORUM: tuple[int, int] = (2, 3)
"""More than two thirds of the registered members."""

MAX_DENOMINATOR = 1_000_000
"""Largest denominator accepted (finer fractions make no difference for any federation size we support)."""

_FRACTION = re.compile(r"\s*(\d{1,7})\s*/\s*(\d{1,7})\s*")


def parse_quorum(value: object) -> tuple[int, int]:
    """The quorum ``(N, D)`` of a spec value: a string ``"N/D"`` (or, from Python, a pair of ints).

    Raises
    ------
    ValueError
        (a pydantic custom error, reported as ``ledger.quorum: ...``) if ``value`` is not such a fraction,
        is 0, or is 1 or more.
    """
    if isinstance(value, tuple) and len(value) == 2 and all(type(v) is int for v in value):
        numerator, denominator = value
        text = f"{numerator}/{denominator}"
    elif isinstance(value, str):
        text = value
        match = _FRACTION.fullmatch(value)
        if match is None:
            raise _error(f'{value!r} is not a fraction "N/D" of whole numbers, such as "2/3"')
        numerator, denominator = int(match[1]), int(match[2])
    else:
        raise _error(f'expected a fraction as a string such as "2/3", got {value!r} ({type(value).__name__})')
    if denominator < 1 or denominator > MAX_DENOMINATOR:
        raise _error(f"{text!r}: the denominator must be between 1 and {MAX_DENOMINATOR}")
    if numerator <= 0:
        raise _error(f"{text!r} must be more than 0 (at 0 a single cosignature would make a checkpoint final)")
    if numerator >= denominator:
        raise _error(f"{text!r} must be less than 1 (strictly more than every member can never cosign)")
    return numerator, denominator


def format_quorum(value: tuple[int, int]) -> str:
    """The TOML form ``"N/D"`` of a quorum."""
    return f"{value[0]}/{value[1]}"


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("quorum", "{reason}", {"reason": message})


Quorum = Annotated[
    tuple[int, int],
    BeforeValidator(parse_quorum),
    PlainSerializer(format_quorum, return_type=str),
]
"""A spec field holding a quorum: ``(N, D)`` in Python, ``"N/D"`` in TOML and in :meth:`Spec.to_dict`."""
