"""Signed ceremony transcripts: model, fail-closed recorder, offline verifier.

The ceremony runner uses :class:`Recorder` (create/resume, record, record_action,
exception, checkpoint, close) with a signed :class:`Policy`; auditors use
:func:`verify_bundle` with keys they pinned. See ``docs/transcripts.md``.
"""

from custody.audit.signers import Ed25519Signer, HsmSigner, Signer, TrustKey, parse_trust_key

from .bundle import BundleData, load_bundle, to_archive, write_dir
from .guard import secret_findings
from .model import Policy, RosterEntry, SignedPolicy, Threshold
from .recorder import Recorder
from .records import Approval, Checkpoint, Event, action_digest
from .verify import CHECK_IDS, Report, verify_bundle

__all__ = [
    "CHECK_IDS",
    "Approval",
    "BundleData",
    "Checkpoint",
    "Ed25519Signer",
    "Event",
    "HsmSigner",
    "Policy",
    "Recorder",
    "Report",
    "RosterEntry",
    "SignedPolicy",
    "Signer",
    "Threshold",
    "TrustKey",
    "action_digest",
    "load_bundle",
    "parse_trust_key",
    "secret_findings",
    "to_archive",
    "verify_bundle",
    "write_dir",
]
