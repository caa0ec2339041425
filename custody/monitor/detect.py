"""The detector: every enabled rule over a stream of audit entries, with resumable state.

:class:`Detector` is pure: feed it parsed audit entries in seq order and it returns the
alerts they complete; :meth:`Detector.dump` is its whole memory as JSON-ready data (the
pending intents, what the rules share, each rule's windows and baselines), from which a
later detector continues exactly where this one stopped. The same log prefix therefore
always gives the same alerts, whether it is read in one scan or in many.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from custody.monitor.events import Joiner
from custody.monitor.kinds import RULE_TYPES, Rule, Shared
from custody.monitor.model import Alert
from custody.monitor.rules import MonitorConfig


class Detector:
    """Runs *config*'s enabled rules over audit entries.

    Args:
        config: the rules and the op vocabulary.
        classes: ``env:path`` -> security class (from the store), for first-high.
        versions: ``env:path`` -> current version number (from the store), for old-version.
        state: what :meth:`dump` returned, to resume; None to start from the log's start.
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        classes: Mapping[str, str] | None = None,
        versions: Mapping[str, int] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        st = state or {}
        self.config = config
        self.joiner = Joiner(
            config.op_kinds(), st.get("pending"), config.unfinished_after, st.get("linked") is True
        )
        self.shared = Shared(config.learn_days, classes or {}, versions or {}, st.get("shared"))
        saved = st.get("rules", {})
        self.rules: list[Rule] = [
            RULE_TYPES[spec.kind](spec, config.max_seqs, saved.get(spec.name))
            for spec in config.rules
            if spec.enabled
        ]
        self.entries = int(st.get("entries", 0))

    def feed(self, entry: Mapping[str, Any]) -> list[Alert]:
        """The alerts completed by one audit entry (parsed JSON), usually none."""
        self.entries += 1
        out = []
        sh = self.shared
        for ev in self.joiner.feed(entry):
            sh.before(ev)
            for rule in self.rules:
                a = rule.feed(ev, sh)
                if a is not None:
                    out.append(a)
            sh.after(ev)
        return out

    def run(self, entries: Iterable[Mapping[str, Any]]) -> Iterator[Alert]:
        for e in entries:
            yield from self.feed(e)

    def dump(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "pending": self.joiner.dump(),
            "linked": self.joiner.linked,
            "shared": self.shared.dump(),
            "rules": {r.name: r.dump() for r in self.rules},
        }
