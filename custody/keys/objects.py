"""Wrapped objects: DEKs and secret values sealed under a KEK version *in process*
(AES-256-GCM via ``cryptography``). Every ciphertext is an envelope
(:mod:`custody.keys.wrapped`) naming the key id and version it is under.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from custody.canonical import domain_hash
from custody.errors import IntegrityError, PolicyError, UsageError
from custody.keys import wrapped as envelope
from custody.keys.keks import KekKeys
from custody.store.rows import NewObject


def object_context(uid: bytes) -> bytes:
    return b"custody/obj/" + uid


def object_digest(uid: bytes, plaintext: bytes) -> bytes:
    """Digest recorded for an object's plaintext, to check a later decrypt against."""
    return domain_hash("custody/object-digest/v1", uid, plaintext)


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
        each is recorded, to verify later decrypts against. Returns the new objects' uids.
        """
        if count < 1:
            raise UsageError("--count must be at least 1", "Ask for one or more keys.")
        kek = self.current_kek(branch)
        key = self.kek_plaintext(branch, kek.version, for_encrypt=True)
        now = self._now()
        uids: list[bytes] = []
        batch = 5000
        for start in range(0, count, batch):
            rows = []
            for _ in range(min(batch, count - start)):
                uid = os.urandom(16)
                dek = os.urandom(32)
                wrapped = envelope.seal(key, branch, kek.version, dek, object_context(uid))
                rows.append(
                    NewObject(
                        uid=uid,
                        kind=kind,
                        branch=branch,
                        kek_version=kek.version,
                        wrapped=wrapped,
                        digest=object_digest(uid, dek),
                        label=label,
                    )
                )
                uids.append(uid)
            self.store.add_objects(rows, now=now)
            if progress:
                progress(len(rows))
        return uids

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

        Args:
            sample: check this many random objects; ``None`` checks all.
        """
        checked = 0
        failed: list[str] = []
        for uid, wrapped, branch, version, digest in self.iter_objects(sample):
            checked += 1
            try:
                plain = self.open_object(uid, wrapped, branch, version)
                if object_digest(uid, plain) != digest:
                    failed.append(uid.hex())
            except (IntegrityError, PolicyError):
                failed.append(uid.hex())
            if progress and checked % 1000 == 0:
                progress(1000)
        return VerifyReport(checked=checked, failed=tuple(failed))

    def object_counts(self) -> dict[str, int]:
        return self.store.object_counts()
