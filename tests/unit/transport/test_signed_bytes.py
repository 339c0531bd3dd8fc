"""The signed bytes of an envelope: the fast path equals the general canonical encoder on any envelope."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.envelope import canonical_signed_bytes, signed_bytes

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    protocol=st.integers(0, 2**32 - 1),
    federation_id=texts,
    rnd=st.integers(0, 2**64 - 1),
    sender=texts,
    nonce=st.binary(max_size=24),
    timestamp_ms=st.integers(-(2**63), 2**63 - 1),
    kind=texts,
    body=st.binary(max_size=64),
)
def test_signed_bytes_match_the_canonical_encoding(
    protocol: int, federation_id: str, rnd: int, sender: str, nonce: bytes, timestamp_ms: int, kind: str, body: bytes
) -> None:
    envelope = pb.Envelope(protocol=protocol, federation_id=federation_id, round=rnd, sender=sender, nonce=nonce,
                           timestamp_ms=timestamp_ms, kind=kind, body=body)  # fmt: skip
    assert signed_bytes(envelope) == canonical_signed_bytes(envelope)


def test_known_answer() -> None:
    envelope = pb.Envelope(protocol=1, federation_id="f", round=2, sender='a"\n\u00e9', nonce=b"\x00\xff",
                           timestamp_ms=-5, kind="k", body=b"\x01")  # fmt: skip
    expected = (
        b'fedswarm.envelope.v1\x00{"body":{"$b":"01"},"federation_id":"f","kind":"k","nonce":{"$b":"00ff"},'
        b'"protocol":1,"round":2,"sender":"a\\"\\n\xc3\xa9","timestamp_ms":-5}'
    )
    assert signed_bytes(envelope) == expected
