"""Who is acting, for the commands that ask access control (secret, access, principal).

The local operator, who holds the token PIN, is super-admin by default. ``--as NAME`` acts
as a named principal instead (a person, or a service for testing its policy); a service
authenticates with its token from ``--token-file F`` (mode 0600) or ``$CUSTODY_TOKEN``, never
from argv. A TOTP code, where the policy asks for one, comes from ``--mfa-code-file`` or
``$CUSTODY_MFA_CODE``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from custody.errors import UsageError
from custody_cli import common

if TYPE_CHECKING:
    from custody.access import AccessControl, Principal
    from custody.deployment import Deployment


UNVERIFIED = (
    "warning: access-control rows NOT verified: this command ran without the token PIN, so "
    "the access seal was not checked and what it shows or records may rest on rows altered "
    "on disk (docs/access.md, 'Sealed access-control rows'); give --pin-file to check it"
)


def seal_note(dep: Deployment, ac: AccessControl | None = None) -> dict[str, str]:
    """Say whether this command's access-control rows are checked against the access seal:
    ``checked`` with the token open (they are checked here, whatever the command decided
    through access control: through *ac*'s seal when the command has one open, else the
    home's), else ``unverified``, with :data:`UNVERIFIED` on stderr (in text and JSON mode
    alike). Returns the ``{"access_seal": ...}`` field for a command's JSON document.

    Raises:
        IntegrityError: the rows fail their seal (audited; the caller shows nothing).
    """
    if dep.hsm is not None:
        if ac is not None:
            ac.check_rows()
        else:
            from custody.access.local import home_seal

            seal = home_seal(dep, dep.home)
            if seal is not None:
                seal.check()
        return {"access_seal": "checked"}
    print(UNVERIFIED, file=sys.stderr)
    return {"access_seal": "unverified"}


def add_principal_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("acting principal (default: the local operator, super-admin)")
    g.add_argument("--as", dest="as_principal", metavar="NAME", help="act as this principal")
    g.add_argument(
        "--token-file",
        metavar="FILE",
        help="a service principal's API token (mode 0600); else $CUSTODY_TOKEN",
    )
    g.add_argument(
        "--mfa-code-file",
        metavar="FILE",
        help="a file holding the current TOTP code; else $CUSTODY_MFA_CODE",
    )


def add_mfa_code_arg(p: argparse.ArgumentParser) -> None:
    """``--mfa-code-file`` alone, for the super-admin actions gated by
    :meth:`~custody.access.control.AccessControl.require_admin` (mfa, principal)."""
    p.add_argument(
        "--mfa-code-file",
        metavar="FILE",
        help="the acting super-admin's current TOTP code (needed once the local operator is "
        "bound: 'custody access local-mfa'); else $CUSTODY_MFA_CODE",
    )


def require_admin(ac: AccessControl, args: argparse.Namespace, op: str, target: str) -> None:
    """Refuse *op* on *target* unless the acting principal is a super-admin and gives its
    TOTP code when enrolled (the bound local operator is): audited, nothing changed."""
    ac.require_admin(acting(ac, args), op, target, mfa_code(args))


@contextmanager
def opened(dep: Deployment, args: argparse.Namespace) -> Iterator[AccessControl]:
    """Access control over *dep*'s store, auditing to its home's log (closed after):
    :func:`custody.access.local.local_access`, shared with the TUI."""
    from custody.access.local import local_access

    with local_access(dep, common.home_of(args)) as ac:
        yield ac


def _token(args: argparse.Namespace) -> str | None:
    from custody.secretsource import read_secret_file

    f = getattr(args, "token_file", None)
    if f:
        return read_secret_file(f)
    return os.environ.get("CUSTODY_TOKEN") or None


def mfa_code(args: argparse.Namespace) -> str | None:
    from custody.secretsource import read_secret_file

    f = getattr(args, "mfa_code_file", None)
    if f:
        return read_secret_file(f).strip()
    return os.environ.get("CUSTODY_MFA_CODE") or None


def acting(ac: AccessControl, args: argparse.Namespace) -> Principal:
    """The principal this command acts as.

    Raises:
        UsageError: both --as and a token.
        AuthError: an unknown or revoked principal, or a refused token.
    """
    from custody.audit.scope import actor_name

    name = getattr(args, "as_principal", None)
    token = _token(args)
    if name and token:
        raise UsageError("Give --as or a token, not both", "A token names its principal.")
    if token:
        return ac.authenticate_token(token)
    if name:
        return ac.acting_as(name)
    return ac.operator(actor_name())


__all__ = [
    "UNVERIFIED",
    "acting",
    "add_mfa_code_arg",
    "add_principal_args",
    "mfa_code",
    "opened",
    "require_admin",
    "seal_note",
]
