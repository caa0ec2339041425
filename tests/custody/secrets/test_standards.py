"""Every category's generation standard, table-driven: what ``generate`` makes passes the
rule ``put`` applies, and the weak values a person might supply are refused with the rule
they break (never the value)."""

from __future__ import annotations

import base64
import os
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from custody.secrets import RULES, Category, WeakSecret, find_api_keys
from custody.secrets import standards as st
from custody.secrets.categories import DEFAULT_CATEGORY_CLASS, SecretPolicy, SecurityClass

API = [Category.EXTERNAL_API_KEY, Category.INTERNAL_API_KEY, Category.TEST_API_KEY]
KEYS = [Category.DATA_ENCRYPTION_KEY, Category.TRANSPORT_KEY, Category.BACKUP_KEY]
PASSWORDS = [
    Category.DATABASE_CREDENTIAL,
    Category.SERVICE_CREDENTIAL,
    Category.VPN_CREDENTIAL,
    Category.SYSTEM_CREDENTIAL,
    Category.DEVELOPMENT_CREDENTIAL,
]
TOKENS = [
    Category.SERVICE_TOKEN,
    Category.WEBHOOK_SECRET,
    Category.OAUTH_CLIENT_SECRET,
    Category.JWT_SECRET,
    Category.SESSION_SECRET,
]
PRIVATE = [Category.SIGNING_KEY, Category.CERTIFICATE_PRIVATE_KEY]
GENERATED = API + KEYS + PASSWORDS + TOKENS + PRIVATE


def test_the_table_covers_the_policys_nineteen_categories_and_three_classes():
    assert len(Category) == 19 and set(RULES) == set(Category)
    pol = SecretPolicy()
    days = {c: pol.period_days(c) for c in Category}
    assert {days[c] for c in [*KEYS, Category.SIGNING_KEY, Category.DATABASE_CREDENTIAL]} == {90}
    assert days[Category.VPN_CREDENTIAL] == 90
    assert {days[c] for c in [*API[:2], Category.SERVICE_CREDENTIAL, Category.JWT_SECRET]} == {180}
    assert days[Category.OAUTH_CLIENT_SECRET] == 180
    assert {
        days[c]
        for c in (
            Category.CONFIGURATION_SECRET,
            Category.DEVELOPMENT_CREDENTIAL,
            Category.TEST_API_KEY,
        )
    } == {365}
    assert set(DEFAULT_CATEGORY_CLASS.values()) == set(SecurityClass)


def test_policy_from_config_overrides_periods_and_refuses_nonsense():
    pol = SecretPolicy.from_mapping({"classes": {"high": 30}, "categories": {"jwt-secret": "high"}})
    assert pol.period_days(Category.JWT_SECRET) == 30
    bads: list[dict] = [{"classes": {"high": 0}}, {"classes": {"ultra": 9}}, {"environments": []}]
    for bad in bads:
        with pytest.raises(Exception, match="secrets"):
            SecretPolicy.from_mapping(bad)


@pytest.mark.parametrize("category", GENERATED, ids=lambda c: c.value)
def test_generated_values_meet_their_own_rule(category: Category):
    seen = set()
    for _ in range(20):
        value, source = st.generate(category, os.urandom, prefix="pay_live")
        st.check(category, value, prefix="pay_live")
        assert source in ("hsm-rng", "os-csprng")
        seen.add(value)
    assert len(seen) == 20  # never repeats


@pytest.mark.parametrize("category", API, ids=lambda c: c.value)
def test_api_keys_have_prefix_256_bits_and_a_checksum(category: Category):
    value, _ = st.generate(category, os.urandom, prefix="pay_live")
    m = re.fullmatch(r"pay_live_([A-Za-z0-9_-]{43})([0-9A-Za-z]{6})", value)
    assert m, value
    assert len(base64.urlsafe_b64decode(m.group(1) + "=")) == 32
    assert st.api_key_valid(value)
    flipped = value[:-1] + ("A" if value[-1] != "A" else "B")  # a typo or a random string
    assert not st.api_key_valid(flipped)
    with pytest.raises(WeakSecret, match="checksum"):
        st.check(category, flipped)
    with pytest.raises(WeakSecret, match="prefix"):
        st.check(category, value, prefix="pay_test")
    text = f"config:\n  key: {value}\n  other: {flipped}\n"
    assert [k for _, k in find_api_keys(text)] == [value]
    with pytest.raises(Exception, match="needs --prefix"):
        st.generate(category, os.urandom)


def test_api_key_prefix_rule():
    for bad in ("", "X", "9abc", "pay-live", "a" * 17, "a_b_c_d"):
        with pytest.raises(Exception, match="prefix"):
            st.make_api_key(bad, os.urandom)


@pytest.mark.parametrize("category", PASSWORDS, ids=lambda c: c.value)
@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("Sh0rt!pass", "shorter than 16"),
        ("alllowercaseletters-and-1", "lacks one"),
        ("NoDigitsHere!!AtAllOk", "lacks one"),
        ("Password1!Password1!", "guessable"),
        ("", "empty"),
    ],
)
def test_weak_passwords_are_refused_with_the_rule(category: Category, value: str, why: str):
    with pytest.raises(WeakSecret) as ei:
        st.check(category, value)
    assert why in ei.value.title and "16 characters" in ei.value.hint
    assert not value or value not in str(ei.value)


def test_generated_passwords_are_24_chars_of_all_four_classes():
    for _ in range(50):
        pw = st.make_password(os.urandom)
        assert len(pw) == 24 and st._classes(pw) == 4


@pytest.mark.parametrize("category", KEYS, ids=lambda c: c.value)
def test_keys_are_256_bit_hex(category: Category):
    for bad, why in (("ab" * 16, "64"), ("AB" * 32, "64"), ("0" * 64, "entropy")):
        with pytest.raises(WeakSecret, match=why):
            st.check(category, bad)


@pytest.mark.parametrize("category", TOKENS, ids=lambda c: c.value)
def test_tokens_need_256_bits(category: Category):
    short = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")  # 192 bits
    for bad in (short, "a" * 64, "not base64 at all!" * 4):
        with pytest.raises(WeakSecret):
            st.check(category, bad)
    st.check(category, os.urandom(32).hex())  # 64 hex digits are 256 bits


@pytest.mark.parametrize("category", PRIVATE, ids=lambda c: c.value)
def test_private_keys_refuse_small_rsa_and_odd_curves(category: Category):
    def pem(k) -> str:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    st.check(category, pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(WeakSecret, match="RSA"):
        st.check(category, pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with pytest.raises(WeakSecret, match="RSA"):
        st.check(category, pem(ec.generate_private_key(ec.SECP256K1())))
    with pytest.raises(WeakSecret, match="PEM"):
        st.check(category, "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


def test_configuration_secrets_take_text_but_not_empty_or_huge_or_surrogates():
    c = Category.CONFIGURATION_SECRET
    st.check(c, "url = postgres://db/x")
    for bad in ("", "x" * (64 * 1024 + 1), "a\udc80b"):
        with pytest.raises(WeakSecret):
            st.check(c, bad)
    with pytest.raises(Exception, match="does not generate"):
        st.generate(c, os.urandom)
