"""The server's hold on the deployment: one worker thread that owns the store and the token.

SQLite connections belong to the thread that opened them, and python-pkcs11 serialises
calls on a module anyway, so every store or token operation of the server runs on one
dedicated worker thread (:class:`Backend`), which opens the home with the PIN at start-up
and keeps the token session for the server's life (the PIN itself is not kept). The event
loop hands it work with :meth:`Backend.run` and awaits the result; audit appends run in the
loop's thread pool instead, so concurrent requests share the audit log's group commits.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from custody.access import AccessControl
from custody.audit.log import AuditLog
from custody.config import Home
from custody.deployment import Deployment, open_deployment
from custody.secrets import SecretPolicy, Vault

T = TypeVar("T")


@dataclass
class Context:
    """What a worker call gets: the opened deployment, its vault and access control."""

    dep: Deployment
    vault: Vault
    access: AccessControl
    audit: AuditLog


_STOP = object()


class Backend:
    """One worker thread owning *home*'s deployment (opened with *pin* at start).

    Args:
        home: the custody home.
        pin: the token user PIN (used to log in once, then dropped).
        audit: the shared audit log (thread-safe; group commit).
        alert: called on the worker with each vault alert.

    Raises:
        CustodyError: from :func:`~custody.deployment.open_deployment` (bad home or PIN).
    """

    def __init__(
        self,
        home: Home,
        pin: str,
        audit: AuditLog,
        *,
        alert: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._ctx: Context | None = None
        self._thread = threading.Thread(
            target=self._main, args=(home, pin, audit, alert), name="custody-backend", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(
        self,
        home: Home,
        pin: str,
        audit: AuditLog,
        alert: Callable[[Mapping[str, Any]], None] | None,
    ) -> None:
        try:
            dep = open_deployment(home, pin)
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
            return
        del pin
        rng = dep.hsm.random if dep.hsm is not None else None
        vault = Vault(
            dep.store,
            dep.hierarchy,
            policy=SecretPolicy.for_home(home.config_path),
            actor="custody-server",
            alert=alert,
            rng=rng,
        )
        self._ctx = Context(
            dep=dep, vault=vault, access=AccessControl(dep.store, audit), audit=audit
        )
        self._ready.set()
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    break
                fn, done = job
                try:
                    result = fn(self._ctx)
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                    done(None, exc)
                else:
                    done(result, None)
        finally:
            dep.close()

    async def run(self, fn: Callable[[Context], T]) -> T:
        """Run ``fn(context)`` on the worker thread and return its result (or raise)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            def settle() -> None:
                if fut.cancelled():
                    return
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)

            loop.call_soon_threadsafe(settle)

        self._jobs.put((fn, done))
        return await fut

    def call(self, fn: Callable[[Context], T]) -> T:
        """Run ``fn(context)`` on the worker from a plain thread (start-up, tests)."""
        box: dict[str, Any] = {}
        ev = threading.Event()

        def done(result: Any, exc: BaseException | None) -> None:
            box.update(result=result, exc=exc)
            ev.set()

        self._jobs.put((fn, done))
        ev.wait()
        if box["exc"] is not None:
            raise box["exc"]
        return box["result"]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout=30)
