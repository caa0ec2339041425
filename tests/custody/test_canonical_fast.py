"""The direct encoder behind :func:`custody.canonical.canonical_bytes` writes exactly what
the ``rfc8785`` library writes, or leaves the value to it: over random JSON values (plain
and not: escapes, non-ASCII, control characters, DEL, floats, integers at and past the
safe range, deep nesting, subclasses of str, int and dict), the result, or the error,
is the library's."""

from __future__ import annotations

import enum

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.canonical import _fast, canonical_bytes

_EDGE_TEXT = st.sampled_from(["", "a", 'q"', "b\\s", "\x7f", "\x00", "\n", "é", "\u2028", "~ "])
_TEXT = st.one_of(_EDGE_TEXT, st.text(max_size=12))
_INTS = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 0]),
)
_LEAF = st.one_of(st.none(), st.booleans(), _INTS, _TEXT, st.floats(allow_nan=False))
_JSON = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(_TEXT, inner, max_size=5),
    ),
    max_leaves=30,
)


def _library(v):
    try:
        return rfc8785.dumps(v)
    except rfc8785.CanonicalizationError:
        return ValueError


def _ours(v):
    try:
        return canonical_bytes(v)
    except ValueError:
        return ValueError


@settings(max_examples=600, deadline=None)
@given(_JSON)
def test_the_direct_encoder_agrees_with_the_library(v):
    assert _ours(v) == _library(v)
    fast = _fast(v)
    assert fast is None or fast == rfc8785.dumps(v)


class _Kind(enum.StrEnum):
    A = "a"


class _Num(enum.IntEnum):
    ONE = 1


def test_subclasses_and_deep_values_are_left_to_the_library():
    assert _fast(_Kind.A) is None and _fast(_Num.ONE) is None and _fast(True) == b"true"
    assert _fast({"k": _Num.ONE}) is None
    deep: list = []
    for _ in range(40):
        deep = [deep]
    assert _fast(deep) is None and canonical_bytes(deep) == rfc8785.dumps(deep)
    with pytest.raises(ValueError):
        canonical_bytes({1: "non-string key"})
    assert canonical_bytes({"b": 2, "a": [None, "x"]}) == b'{"a":[null,"x"],"b":2}'
