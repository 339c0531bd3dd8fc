"""Startup kits: what provisioning hands each member, and the checks a node runs before it starts.

This module is the public face of provisioning; the work is done in small modules next to it:

* :mod:`fedswarm.node.manifest`: the CA-signed manifest (members, roles, addresses, keys, CKKS digests);
* :mod:`fedswarm.node.signed_manifest`: its signed envelope ``manifest.sig`` and the field-by-field check
  of the readable ``manifest.json``;
* :mod:`fedswarm.node.startup_kit`: a kit on disk (:func:`write_kit`, :func:`load_kit`, :func:`update_kit`,
  :func:`reload_kit`, :func:`ckks_material`);
* :mod:`fedswarm.node.ca_operator`: the operator's side (:func:`provision`, :func:`add_member`,
  :func:`revoke_member`);
* :mod:`fedswarm.node.joining`: the newcomer's side (:func:`create_join_request`, :func:`complete_join`);
* :mod:`fedswarm.node.ckks_keys`: the CKKS contexts of a federation aggregating with
  ``privacy.secure_aggregation = "ckks"``.

Provisioning (:func:`provision`) creates the federation CA and one kit per member::

    OUT/ca/            kept by the operator: ca-key.pem (0600), ca.pem, crl.pem, manifest.json,
                       manifest.sig, issued/<member>.pem [, ckks-public.ctx, ckks-secret.ctx (0600)]
    OUT/<member>/      the member's kit: ca.pem, crl.pem, manifest.json, manifest.sig, tls.pem,
                       tls-key.pem (0600), signing-key.pem (0600) [, ckks-public.ctx, ckks-secret.ctx (0600),
                       the latter never in a star topology aggregator's kit]

Private keys and the CKKS secret context are encrypted with the kit's password when one is given.
:func:`load_kit` checks everything at start and fails closed, naming the file (see
:mod:`fedswarm.node.startup_kit`).
"""

from __future__ import annotations

from fedswarm.node.ca_operator import CA_KEY_FILE, ISSUED_DIR, Provisioned, add_member, provision, revoke_member
from fedswarm.node.ckks_keys import CKKS_PUBLIC_FILE, CKKS_SECRET_FILE, CKKSMaterial
from fedswarm.node.joining import (
    JOIN_CONTEXT,
    JOIN_KEY_FILE,
    Admission,
    AdmittedCKKS,
    JoinRequest,
    complete_join,
    create_join_request,
)
from fedswarm.node.manifest import (
    CA_DIR,
    MANIFEST_CONTEXT,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    CKKSKeys,
    Manifest,
    MemberEntry,
    MemberSpec,
    Role,
)
from fedswarm.node.signed_manifest import SignedManifest
from fedswarm.node.startup_kit import (
    CA_FILE,
    CRL_FILE,
    SIGNING_KEY_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    Kit,
    Publication,
    ckks_material,
    kit_is_encrypted,
    load_kit,
    reload_kit,
    update_kit,
    write_kit,
)

__all__ = [
    "CA_DIR",
    "CA_FILE",
    "CA_KEY_FILE",
    "CKKS_PUBLIC_FILE",
    "CKKS_SECRET_FILE",
    "CRL_FILE",
    "ISSUED_DIR",
    "JOIN_CONTEXT",
    "JOIN_KEY_FILE",
    "MANIFEST_CONTEXT",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "SIGNING_KEY_FILE",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "Admission",
    "AdmittedCKKS",
    "CKKSKeys",
    "CKKSMaterial",
    "JoinRequest",
    "Kit",
    "Manifest",
    "MemberEntry",
    "MemberSpec",
    "Provisioned",
    "Publication",
    "Role",
    "SignedManifest",
    "add_member",
    "ckks_material",
    "complete_join",
    "create_join_request",
    "kit_is_encrypted",
    "load_kit",
    "provision",
    "reload_kit",
    "revoke_member",
    "update_kit",
    "write_kit",
]
