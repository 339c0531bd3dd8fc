"""Exact, fast parsing of ``update_submitted`` entries, the bulk of every log.

A federation's log is mostly one ``update_submitted`` entry per member and round. Their canonical bytes
(:mod:`fedswarm.ledger.entries`) always have the same shape::

    {"author":A,"body":{"bytes":B,"examples":E,"norm":N,"round":R,"update":"<64 hex>"},
     "federation":F,"key":{"$b":"<64 hex>"},"kind":"update_submitted","seq":S,"v":1}

:class:`UpdateParser` matches that shape with one regular expression and checks each field with the rules
:meth:`fedswarm.ledger.entries.Entry.decode` applies (printable names of 1 to 256 characters, lowercase
hex digests and keys, integers in canonical decimal, a finite ``norm`` written exactly as the canonical
encoder writes it), so that whatever it accepts, ``Entry.decode`` accepts with the same values, without
building a JSON tree, a dataclass per field and a re-encoding per record. Anything else (another kind,
a name with characters JSON escapes, an integer of more than 31 digits, a non-canonical number) is
declined with ``None`` and the caller falls back to ``Entry.decode``, which also names the problem.
Tests check the equivalence on generated and mutated records.
"""

from __future__ import annotations

import math
import re

__all__ = ["UpdateFields", "UpdateParser"]

UpdateFields = tuple[str, bytes, int, str]
"""``(author, 32-byte public key, round, update digest)`` of an ``update_submitted`` entry."""

_INT = rb"(0|[1-9][0-9]{0,30})"
_NAME = rb'"([^"\\\x00-\x1f]{1,1024})"'
_UPDATE = re.compile(
    rb'\{"author":' + _NAME + rb',"body":\{"bytes":' + _INT + rb',"examples":' + _INT + rb',"norm":'
    rb"(-?[0-9][0-9.e+\-]{0,30})"
    rb',"round":([1-9][0-9]{0,30}),"update":"([0-9a-f]{64})"\},"federation":' + _NAME + rb',"key":\{"\$b":"'
    rb'([0-9a-f]{64})"\},"kind":"update_submitted","seq":' + _INT + rb',"v":1\}\Z'
)


def _is_name(text: str) -> bool:
    """The rule of entry names: 1 to 256 printable characters."""
    return 0 < len(text) <= 256 and text.isprintable()


class UpdateParser:
    """Parses canonical ``update_submitted`` messages of one federation, caching names and keys.

    Parameters
    ----------
    federation
        The federation id every entry must carry; a message of another federation is declined.
    """

    __slots__ = ("_enabled", "_federation", "_keys", "_names")

    def __init__(self, federation: str) -> None:
        self._federation = federation.encode("utf-8")
        self._enabled = _is_name(federation)
        self._names: dict[bytes, str] = {}
        self._keys: dict[bytes, bytes] = {}

    def parse(self, message: bytes, seq: int) -> UpdateFields | None:
        """The fields of ``message`` if it is the canonical ``update_submitted`` entry ``seq``, else ``None``.

        ``None`` means only "not recognized here": the message may still be a valid entry of another
        kind (or an invalid one); decode it with :meth:`fedswarm.ledger.entries.Entry.decode` then.
        """
        if not self._enabled:
            return None
        found = _UPDATE.match(message)
        if found is None:
            return None
        author_raw, _size, _examples, norm, round_raw, update, federation, key_hex, seq_raw = found.groups()
        if federation != self._federation or int(seq_raw) != seq:
            return None
        author = self._names.get(author_raw)
        if author is None:
            try:
                text = author_raw.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if not _is_name(text):
                return None
            author = self._names[author_raw] = text
        try:
            value = float(norm) + 0.0  # the canonical encoder writes repr(float), never -0.0
        except ValueError:
            return None
        if not math.isfinite(value) or repr(value).encode("ascii") != norm:
            return None
        key = self._keys.get(key_hex)
        if key is None:
            key = self._keys[key_hex] = bytes.fromhex(key_hex.decode("ascii"))
        return author, key, int(round_raw), update.decode("ascii")
