"""The step script of each ceremony kind (what the transcript policy's ``script`` holds).

Each script is the ordered list of step names a transcript must follow (the recorder and
``custody transcript verify`` enforce the order). ``open`` and ``close`` are the
transcript's own meta events and are not steps.

* :data:`INPUT_STEPS` wait for people: shares handed in, or signed approvals (the
  custodian quorum of rotate-root's ``approve``, the super-admin or custodian quorum of an
  enrolment, and emergency-rotate's ``second-person``: a witness or a second super-admin).
* :data:`COMMIT_STEP` is the single store transaction after which a ceremony rolls
  *forward* on resume; before it, an interrupted ceremony that lost its in-memory secret
  rolls *back* (nothing half-done is kept).
* :data:`SECRET_STEPS` need the recovery key RK in the runner's memory; it is never
  persisted, so these cannot be redone after a crash.
"""

from __future__ import annotations

SCRIPTS: dict[str, tuple[str, ...]] = {
    "enrol": ("review", "enrol"),
    "generate": (
        "hsm-check",
        "generate-root",
        "generate-rk",
        "wrap-blob",
        "lock-root",
        "split",
        "issue-shares",
        "verify-shares",
        "finalise",
    ),
    "recover": (
        "hsm-check",
        "collect-shares",
        "rebuild-rk",
        "import-root",
        "verify-keks",
        "finalise",
    ),
    "reshare": (
        "hsm-check",
        "collect-shares",
        "rebuild-rk",
        "generate-root",
        "generate-rk",
        "wrap-blob",
        "lock-root",
        "split",
        "issue-shares",
        "verify-shares",
        "finalise",
        "rewrap",
        "retire-epoch",
    ),
    "rotate-root": (
        "hsm-check",
        "approve",
        "generate-root",
        "seal-blob",
        "lock-root",
        "finalise",
        "rewrap",
    ),
    "emergency-rotate": (
        "hsm-check",
        "incident",
        "second-person",
        "generate-root",
        "seal-blob",
        "lock-root",
        "finalise",
        "rewrap",
        "disable-old",
        "revoke",
        "report",
    ),
    "drill": (
        "collect-shares",
        "rebuild-rk",
        "scratch-token",
        "compare-kcv",
        "destroy-scratch",
        "record",
    ),
}
KINDS: tuple[str, ...] = tuple(SCRIPTS)

INPUT_STEPS: dict[str, str] = {
    "collect-shares": "shares",
    "verify-shares": "shares",
    "approve": "approvals",
    "enrol": "approvals",  # waits only when the coordinator alone is not a quorum
    "second-person": "approvals",  # emergency-rotate: a witness or a second super-admin
}

COMMIT_STEP: dict[str, str] = {
    "enrol": "enrol",
    "generate": "finalise",
    "recover": "finalise",
    "reshare": "finalise",
    "rotate-root": "finalise",
    "emergency-rotate": "finalise",
    "drill": "record",
}

SECRET_STEPS: frozenset[str] = frozenset(
    {
        "generate-rk",
        "wrap-blob",
        "split",
        "issue-shares",
        "rebuild-rk",
        "import-root",
        "scratch-token",
        "compare-kcv",
    }
)
