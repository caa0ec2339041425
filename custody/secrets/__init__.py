"""Secrets: typed, versioned, rotated values on the key hierarchy (docs/secrets.md).

:mod:`~custody.secrets.categories` (the policy's categories and classes),
:mod:`~custody.secrets.standards` (how each is generated and checked) and
:mod:`~custody.secrets.vault` (storage, versions, labels, lifecycle).
"""

from custody.secrets.categories import Category, SecretPolicy, SecurityClass, parse_category
from custody.secrets.standards import RULES, WeakSecret, find_api_keys
from custody.secrets.vault import (
    CasMismatch,
    Revealed,
    SecretNotFound,
    SecretUnavailable,
    Vault,
    Written,
)

__all__ = [
    "RULES",
    "CasMismatch",
    "Category",
    "Revealed",
    "SecretNotFound",
    "SecretPolicy",
    "SecretUnavailable",
    "SecurityClass",
    "Vault",
    "WeakSecret",
    "Written",
    "find_api_keys",
    "parse_category",
]
