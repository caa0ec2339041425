"""Read models for reports: the compliance report (issue 16 item 7, docs/compliance.md).

:mod:`~custody.report.evidence` gathers what a report is computed from (the store's
metadata and the audit log) or reads it from an exported bundle;
:mod:`~custody.report.compliance` computes the sections; :mod:`~custody.report.render`
prints them as text or HTML. Front ends call these; they never query the store themselves.
"""

from __future__ import annotations

from custody.report.compliance import compliance_report, section_map
from custody.report.evidence import Evidence, gather, load_bundle, write_bundle
from custody.report.render import to_html, to_text

__all__ = [
    "Evidence",
    "compliance_report",
    "gather",
    "load_bundle",
    "section_map",
    "to_html",
    "to_text",
    "write_bundle",
]
