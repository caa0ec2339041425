"""The custody HTTPS API: a third front end beside the CLI and the TUI (docs/api.md).

:mod:`~custody_server.tls` (TLS 1.3 only; the verified client certificate in the ASGI
scope), :mod:`~custody_server.backend` (the worker thread that owns the store and token),
:mod:`~custody_server.guard` (authentication, lockout, rate limits),
:mod:`~custody_server.api` (the request path: authorise, audit, answer),
:mod:`~custody_server.native` (``/api/v1``), :mod:`~custody_server.kv` (Vault KV v2 under
``/v1``), :mod:`~custody_server.app` (the assembly) and :mod:`~custody_server.serve`
(``python -m custody_server``, which ``custody serve`` runs).
"""
