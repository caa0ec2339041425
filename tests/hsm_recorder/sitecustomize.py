"""Test instrumentation: record every call that crosses the HSM adapter boundary.

Put this directory first on PYTHONPATH and set ``CUSTODY_TEST_HSM_RECORD=FILE``: at start-up
every public method of the real :class:`custody.hsm.pkcs11.adapter.Pkcs11Hsm` is wrapped so
that each call appends one JSON line to FILE: the method, its arguments and its result, with
every ``bytes`` value in hex (inside tuples, lists, dicts and dataclasses too). The token
underneath is the real SoftHSMv2 one; nothing is mocked. tests/test_root_sealing.py reads
the file to check what the host saw.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

_PATH = os.environ.get("CUSTODY_TEST_HSM_RECORD")


def _plain(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        return {"hex": bytes(v).hex()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return repr(v)


def _install(path: str) -> None:
    from custody.hsm.pkcs11.adapter import Pkcs11Hsm

    def wrap(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            entry: dict[str, Any] = {"method": name, "args": _plain([*args, kwargs])}
            try:
                result = fn(self, *args, **kwargs)
            except BaseException as exc:
                entry["raised"] = type(exc).__name__
                _write(path, entry)
                raise
            entry["result"] = _plain(result)
            _write(path, entry)
            return result

        return recorded

    for name in dir(Pkcs11Hsm):
        fn = getattr(Pkcs11Hsm, name)
        if name.startswith("_") or not callable(fn) or isinstance(fn, type):
            continue
        setattr(Pkcs11Hsm, name, wrap(name, fn))


def _write(path: str, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


if _PATH:
    _install(_PATH)
