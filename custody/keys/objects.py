"""Wrapped objects: DEKs and secret values sealed under a KEK version *in process*
(AES-256-GCM via ``cryptography``). Every ciphertext is an envelope
(:mod:`custody.keys.wrapped`) naming the key id and version it is under.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from custody.errors import IntegrityError, PolicyError, UsageError
from custody.hsm import KekSealMismatch
from custody.keys import wrapped as envelope
from custody.keys.keks import KekKeys
from custody.store.rows import NewObject

_OBJ_CTX = b"custody/obj/"
_DIGEST_DOMAIN = "custody/object-digest/v1"
# domain_hash's prefix for the object digest, hashed once and copied per object
_DIGEST_PREFIX = hashlib.sha256(
    len(_DIGEST_DOMAIN.encode()).to_bytes(2, "big") + _DIGEST_DOMAIN.encode()
)


def object_context(uid: bytes) -> bytes:
    return _OBJ_CTX + uid


def object_digest(uid: bytes, plaintext: bytes) -> bytes:
    """Digest recorded for an object's plaintext, to check a later decrypt against:
    ``domain_hash("custody/object-digest/v1", uid, plaintext)``, computed from a copy of the
    domain's hashed prefix."""
    h = _DIGEST_PREFIX.copy()
    h.update(len(uid).to_bytes(8, "big") + uid + len(plaintext).to_bytes(8, "big") + plaintext)
    return h.digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    checked: int
    failed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failed


class ObjectKeys(KekKeys):
    """Objects wrapped under the KEKs."""

    def generate_deks(
        self,
        branch: str,
        count: int,
        *,
        kind: str = "dek",
        label: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[bytes]:
        """Create *count* random 256-bit data keys wrapped under the active KEK of *branch*.

        Like a KMS GenerateDataKey, but the plaintexts are not returned: only a digest of
        each is recorded, to verify later decrypts against. Returns the new objects' uids
        (all in memory: for large counts iterate :meth:`iter_generate_deks`).
        """
        uids: list[bytes] = []
        for batch in self.iter_generate_deks(branch, count, kind=kind, label=label):
            uids.extend(batch)
            if progress:
                progress(len(batch))
        return uids

    def iter_generate_deks(
        self,
        branch: str,
        count: int,
        *,
        kind: str = "dek",
        label: str | None = None,
        batch: int = 5000,
    ) -> Iterator[list[bytes]]:
        """:meth:`generate_deks` in committed batches: yields the uids of each batch once it
        is stored, and keeps nothing else, so memory stays flat whatever *count* is.

        Raises:
            UsageError: *count* < 1 (at the call, before any key is made).
            CeremonyError: the branch has no active KEK.
        """
        if count < 1:
            raise UsageError("--count must be at least 1", "Ask for one or more keys.")
        kek = self.current_kek(branch)
        sealer = envelope.Sealer(
            self.kek_plaintext(branch, kek.version, for_encrypt=True), branch, kek.version
        )
        return self._generate(sealer, branch, kek.version, count, kind, label, batch)

    def _generate(
        self,
        sealer: envelope.Sealer,
        branch: str,
        version: int,
        count: int,
        kind: str,
        label: str | None,
        batch: int,
    ) -> Iterator[list[bytes]]:
        now = self._now()
        for start in range(0, count, batch):
            rows = []
            uids = []
            for _ in range(min(batch, count - start)):
                uid = os.urandom(16)
                dek = os.urandom(32)
                rows.append(
                    NewObject(
                        uid=uid,
                        kind=kind,
                        branch=branch,
                        kek_version=version,
                        wrapped=sealer.seal(dek, _OBJ_CTX + uid),
                        digest=object_digest(uid, dek),
                        label=label,
                    )
                )
                uids.append(uid)
            self.store.add_objects(rows, now=now)
            yield uids

    def store_object(
        self, branch: str, plaintext: bytes, *, kind: str, label: str | None = None
    ) -> bytes:
        """Wrap *plaintext* (a key or secret value) under the active KEK and store it."""
        kek = self.current_kek(branch)
        key = self.kek_plaintext(branch, kek.version, for_encrypt=True)
        uid = os.urandom(16)
        wrapped = envelope.seal(key, branch, kek.version, plaintext, object_context(uid))
        obj = NewObject(
            uid=uid,
            kind=kind,
            branch=branch,
            kek_version=kek.version,
            wrapped=wrapped,
            digest=object_digest(uid, plaintext),
            label=label,
        )
        self.store.add_objects([obj], now=self._now())
        return uid

    def open_object(self, uid: bytes, wrapped: bytes, branch: str, kek_version: int) -> bytes:
        env = envelope.parse(wrapped)
        if env.key_id != branch or env.key_version != kek_version:
            raise IntegrityError("An object's envelope disagrees with its row", "Store damaged.")
        key = self.kek_plaintext(branch, kek_version)
        return envelope.open_sealed(key, env, object_context(uid))

    def unwrap_object(self, uid: bytes) -> bytes:
        """Decrypt one stored object by uid.

        Raises:
            UsageError: no such object. IntegrityError/PolicyError: it cannot be decrypted.
        """
        o = self.store.stored_object(uid)
        if o is None:
            raise UsageError("No such object", "Check the object id.")
        return self.open_object(uid, o.wrapped, o.branch, o.kek_version)

    def iter_objects(
        self, sample: int | None = None
    ) -> Iterable[tuple[bytes, bytes, str, int, bytes]]:
        for o in self.store.iter_objects(sample=sample):
            yield o.uid, o.wrapped, o.branch, o.kek_version, o.digest

    def verify_objects(
        self, sample: int | None = None, progress: Callable[[int], None] | None = None
    ) -> VerifyReport:
        """Decrypt objects and compare each to its recorded digest.

        Each object gets the checks of :meth:`open_object` (envelope header names the row's
        branch and version, GCM tag over header and uid) and the digest compare; the KEK of
        each version is looked up (state, HSM unwrap, KCV) once per call, not per object,
        and its ``AESGCM`` object is reused. Objects under a KEK version that cannot decrypt
        (missing, disabled, destroyed, failing its KCV) all fail.

        Args:
            sample: check this many random objects; ``None`` checks all.
        """
        checked = 0
        failed: list[str] = []
        openers: dict[tuple[str, int], envelope.Opener | None] = {}
        prefix = _DIGEST_PREFIX
        for branch, version, rows in self.store.object_groups(sample=sample):
            key = (branch, version)
            op = openers[key] if key in openers else openers.setdefault(key, self._opener(*key))
            checked += len(rows)
            if op is None:
                failed.extend(uid.hex() for uid, _, _ in rows)
                continue
            # envelope.Opener.open, inlined: this loop runs once per stored object
            hdr, aad, decrypt = op.header, op.aad_prefix, op.decrypt
            hl, min_len = len(hdr), op.min_len
            for uid, blob, digest in rows:
                if type(blob) is not bytes or len(blob) < min_len or blob[:hl] != hdr:
                    failed.append(uid.hex())
                    continue
                try:
                    plain = decrypt(blob[hl : hl + 12], blob[hl + 12 :], aad + uid)
                except InvalidTag:
                    failed.append(uid.hex())
                    continue
                h = prefix.copy()
                h.update(len(uid).to_bytes(8, "big") + uid + len(plain).to_bytes(8, "big") + plain)
                if h.digest() != digest:
                    failed.append(uid.hex())
            if progress:
                progress(len(rows))
        return VerifyReport(checked=checked, failed=tuple(failed))

    def _opener(self, branch: str, version: int) -> envelope.Opener | None:
        try:
            key = self.kek_plaintext(branch, version)
            return envelope.Opener(key, branch, version, context_prefix=_OBJ_CTX)
        except KekSealMismatch:
            raise  # the home's record, not this KEK: refuse the whole run
        except (IntegrityError, PolicyError):
            return None

    def object_counts(self) -> dict[str, int]:
        return self.store.object_counts()
