"""Attacks on service tokens by a network client with a stolen, altered or guessed token, and
by the operator with the disk: what is stored, what a refusal says, what is logged, and
whether a revoked or replaced token still works. Real store and audit log."""

from __future__ import annotations

import base64
import json

import pytest

from custody.access import AuthError
from custody.access import tokens as tk
from custody.errors import IntegrityError
from custody.store.rows import PrincipalRow
from tests.custody.access.seal_fixtures import sealed_copy
from tests.custody.access.test_grants import T0, world

__all__ = ["world"]


def _parse(token: str | None) -> tuple[str, bytes]:
    parsed = tk.parse(token or "")
    assert parsed is not None
    return parsed


def _refused(ac, token: str) -> str:
    with pytest.raises(AuthError) as exc:
        ac.authenticate_token(token)
    return f"{exc.value.title}|{exc.value.hint}"


def test_only_a_salted_hash_of_256_random_bits_is_stored_or_logged(world, tmp_path):
    _flow, ac, store, log, _clock = world
    _p, token = ac.add_principal("svc-a", kind="service", role="service-user",
                                 services=("payments",), by="root")  # fmt: skip
    _p, token_b = ac.add_principal("svc-b", kind="service", role="service-user",
                                   services=("payments",), by="root")  # fmt: skip
    _tid, secret = _parse(token)
    assert len(secret) * 8 == 256 and _parse(token_b)[1] != secret
    assert ac.authenticate_token(token).name == "svc-a"
    k = len(token) - 20  # one character of the secret changed: a wrong token
    _refused(ac, token[:k] + ("B" if token[k] == "A" else "A") + token[k + 1 :])
    b64 = token.split("_", 2)[2]  # the secret itself may hold "_"
    row = store.principal("svc-a")
    stored = b"\0".join(  # every column of every principal, raw
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
        for r in store.query("SELECT * FROM principals")
        for v in r
    )
    assert row.token_hash in stored and row.token_salt in stored  # the query saw the columns
    files = [f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()]
    for raw in (stored, *files):
        assert secret not in raw and b64.encode() not in raw and token.encode() not in raw
    assert row.token_hash != secret and len(row.token_salt) == 16
    for text in (repr(row), repr(tk.mint()), b"\n".join(log.lines()).decode()):
        assert b64 not in text and row.token_hash.hex() not in text


def test_a_refusal_says_the_same_whatever_was_wrong(world):
    _flow, ac, _store, log, _clock = world
    _p, token = ac.add_principal("svc-a", kind="service", role="service-user",
                                 services=("payments",), by="root")  # fmt: skip
    _p, other = ac.add_principal("svc-b", kind="service", role="service-user",
                                 services=("payments",), by="root")  # fmt: skip
    tid, _secret = _parse(token)
    _oid, osecret = _parse(other)
    swapped = f"cst_{tid}_" + base64.urlsafe_b64encode(osecret).decode().rstrip("=")
    ac.revoke("svc-b", by="root", token_only=True)
    answers = {
        _refused(ac, "cst_" + "0" * 16 + "_" + "A" * 43),  # unknown id
        _refused(ac, swapped),  # svc-a's id, svc-b's secret
        _refused(ac, other),  # revoked token
        _refused(ac, "not-a-token"),
        _refused(ac, ""),
    }
    assert len(answers) == 1
    # each refusal is audited with its reason, never with the token or its secret part
    entries = [e for e in map(json.loads, log.lines()) if e["op"] == "access authenticate"]
    assert len(entries) == 5 and all(e["outcome"] == "denied" for e in entries)
    text = json.dumps(entries)
    assert other.split("_", 2)[2] not in text and swapped.split("_", 2)[2] not in text


def test_a_replaced_or_revoked_token_and_a_revoked_principal_are_dead(world):
    _flow, ac, _store, _log, _clock = world
    _p, old = ac.add_principal("svc-a", kind="service", role="service-user",
                               services=("payments",), by="root")  # fmt: skip
    new = ac.new_token("svc-a", by="root")
    _refused(ac, old)
    assert ac.authenticate_token(new).name == "svc-a"
    ac.revoke("svc-a", by="root", token_only=True)
    _refused(ac, new)
    newer = ac.new_token("svc-a", by="root")  # a new token after a token-only revocation
    assert ac.authenticate_token(newer).name == "svc-a"
    ac.revoke("svc-a", by="root")
    _refused(ac, newer)
    with pytest.raises(AuthError):
        ac.new_token("svc-a", by="root")  # nor can a revoked principal be given a new one


def test_a_token_is_accepted_only_in_its_one_canonical_spelling(world):
    """Other spellings of the same secret (junk characters base64 skips, the unused low bits
    of the last character, '=' padding) would slip past a leaked-token scanner or a
    deny-list of exact strings; each is refused."""
    _flow, ac, _store, _log, _clock = world
    _p, token = ac.add_principal("svc-a", kind="service", role="service-user",
                                 services=("payments",), by="root")  # fmt: skip
    prefix, tid, b64 = token.split("_", 2)  # the secret itself may hold "_"
    head = f"{prefix}_{tid}"
    b64_chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = b64_chars[b64_chars.index(b64[-1]) ^ 1]  # differs only in a bit base64 drops
    variants = [f"{head}_{b64[:10]}!{b64[10:]}", f"{head}_{b64}=", f"{head}_{b64[:-1]}{twin}",
                f"{head}_{b64[:20]}.{b64[20:]}"]  # fmt: skip
    for v in variants:
        assert v != token
        _refused(ac, v)
    assert ac.authenticate_token(token).name == "svc-a"
    assert ac.authenticate_token(f"  {token}\n").name == "svc-a"  # read from a file


@pytest.mark.hsm
def test_a_principal_row_written_by_the_disk_operator_is_not_honoured(world, hsm):
    _flow, ac, store, _log, _clock = world
    ac = sealed_copy(ac, hsm)  # the token is open (the server, a CLI command with the PIN)
    m = tk.mint()  # the operator mints a token of their own and writes its hash
    store.add_principal(PrincipalRow(name="ghost", kind="service", role="service-admin",
                        services=("payments",), envs=(), created=T0, created_by="root",
                        token_id=m.token_id, token_salt=m.salt, token_hash=m.digest,
                        token_created=T0))  # fmt: skip
    with pytest.raises(IntegrityError, match="fail their seal"):
        ac.authenticate_token(m.token)
