"""custody: the library.

Owns the model of keys, shares, the HSM port and adapter, the versioned key hierarchy,
the SQLite store, rotation policy and the audit log. It imports nothing from
``ceremonies`` or ``tui``; only the :mod:`custody.hsm.pkcs11` package imports ``pkcs11``.
"""

__version__ = "0.1.0"
