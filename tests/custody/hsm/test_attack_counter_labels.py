"""Counter labels that are prefixes of one another or hold ':' and '/', in both forms
(custody/hsm/pkcs11/counters.py), on a real SoftHSMv2 token: each counter holds its own
value, an advance of one never destroys another's objects, and a key-held value whose
CKA_ID names another label is ignored. The key form is exercised on SoftHSM by telling the
adapter its token keeps no data objects (as NSS softokn does)."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.hsm

SUFFIXES = ("", "/", ":", "/generation", "/local-mfa:", "/local-mfa:ops:aa", ":x/y")


@pytest.mark.parametrize("as_keys", [False, True], ids=["data objects", "keys"])
def test_prefix_labels_keep_their_own_values(hsm, as_keys):
    base = f"attack-{uuid.uuid4().hex[:8]}"
    labels = [base + s for s in SUFFIXES]
    hsm._counters_as_keys = as_keys
    try:
        for i, lab in enumerate(labels):
            assert hsm.advance_counter(lab, 10 + i) == 10 + i
        for i, lab in enumerate(labels):  # advance each again: others' objects stay
            assert hsm.advance_counter(lab, 100 + i) == 100 + i
        assert [hsm.counter(lab) for lab in labels] == [100 + i for i in range(len(labels))]
        assert hsm.advance_counter(labels[0], 5) == 100  # never lowered
        assert hsm.counter(base + "/gen") is None  # no counter of a label's prefix
        held = set(hsm.counter_labels())
        assert set(labels) <= held
    finally:
        hsm._counters_as_keys = False


def test_a_key_held_value_naming_another_label_is_ignored(hsm):
    """A private key labelled for counter A whose CKA_ID carries B's digest (what NSS's
    merge of equal ids could leave) holds nothing for A."""
    from pkcs11 import Attribute, KeyType

    from custody.hsm.pkcs11 import counters as c
    from custody.hsm.pkcs11.secretkeys import NO_USE, label_id

    a, b = f"attack-a-{uuid.uuid4().hex[:8]}", f"attack-b-{uuid.uuid4().hex[:8]}"
    hsm._counters_as_keys = True
    try:
        assert hsm.advance_counter(a, 3) == 3
        with hsm._op("plant") as s:
            s.generate_key(KeyType.GENERIC_SECRET, c.KEY_BITS, label=c.KEY_PREFIX + a,
                           id=(1 << 40).to_bytes(8, "big") + label_id(b), store=True,
                           template={Attribute.TOKEN: True, Attribute.PRIVATE: True,
                                     **NO_USE})  # fmt: skip
        assert hsm.counter(a) == 3
        assert hsm.counter(b) is None
    finally:
        hsm._counters_as_keys = False
