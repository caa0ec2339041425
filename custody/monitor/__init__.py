"""Monitoring: rules over the audit log that raise alerts, and the alerts themselves.

The rules are data (:mod:`custody.monitor.rules`, the ``[monitor]`` table of
``custody.toml``); each kind is a streaming state machine (:mod:`custody.monitor.kinds`)
run by the :class:`~custody.monitor.detect.Detector`. :func:`~custody.monitor.scanner.scan`
reads the entries added since the last scan, records new alerts in the audit log as
``alert.raised`` and hands them to the alert hook; :mod:`custody.monitor.records` lists and
acknowledges them, from the log alone. See docs/monitoring.md.
"""

from __future__ import annotations

from custody.monitor.detect import Detector
from custody.monitor.model import Alert
from custody.monitor.records import AlertRecord, ack, evidence, find, list_alerts
from custody.monitor.rules import KINDS, MonitorConfig, RuleSpec, load_config, parse_config
from custody.monitor.scanner import STATE_FILE, ScanResult, scan

__all__ = [
    "KINDS",
    "STATE_FILE",
    "Alert",
    "AlertRecord",
    "Detector",
    "MonitorConfig",
    "RuleSpec",
    "ScanResult",
    "ack",
    "evidence",
    "find",
    "list_alerts",
    "load_config",
    "parse_config",
    "scan",
]
