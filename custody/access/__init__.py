"""Access control (issue 16): principals, roles, grants and MFA (:mod:`custody.access.mfa`)."""
