"""No function-local import hides an arrow that runs back up (issue 10).

An import inside a function is fine for a heavy or optional dependency. It is not fine as a
way to import something that stands above the importer: a higher layer, the importer's own
package orchestrator (its ``__init__``), or a module that would close an import cycle if the
import sat at module level. import-linter sees these imports too, but only as edges; this
scan names the ones that were hidden on purpose. Definitions: tests/archscan.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.archscan import LocalImport, load_graph, local_imports, runs_back_up
from tests.conftest import ROOT

# Today's offenders, in files other helpers own; each line goes when its owner lands the fix
# (the test below fails when a listed one is gone, so the list only shrinks).
KNOWN = {
    # held.py takes the HSM and SecretLost helpers from steps.base, while steps/__init__
    # imports held at module level (ShareInput and TokenNeeded now come from runner/io.py).
    "ceremonies/runner/held.py -> ceremonies.runner.steps.base",
}


def _key(i: LocalImport) -> str:
    return f"{i.path} -> {i.target}"


def _upward(root: Path) -> list[tuple[str, str]]:
    graph = load_graph(root)
    return [
        (_key(i), f"{i.path}:{i.line} {i.function}(): {why}")
        for i in local_imports(root)
        if (why := runs_back_up(i, graph))
    ]


def test_no_new_function_local_import_runs_back_up():
    new = [where for key, where in _upward(ROOT) if key not in KNOWN]
    assert new == [], "move these imports to module level, or move what they import down"


def test_known_offenders_are_still_there():
    seen = {key for key, _ in _upward(ROOT)}
    gone = sorted(KNOWN - seen)
    assert gone == [], f"fixed: delete these from KNOWN in {Path(__file__).name}"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in ("custody", "ceremonies", "tui", "custody_cli"):
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").touch()
    return root


@pytest.mark.parametrize(
    ("files", "why"),
    [
        (  # a lower layer reaching up to a higher one
            {"custody/a.py": "def f():\n    from ceremonies import runner\n"},
            "layer 0 imports layer 1",
        ),
        (  # a front end's layer: the library must not reach the TUI either
            {"ceremonies/a.py": "def f():\n    import tui.app\n", "tui/app.py": ""},
            "layer 1 imports layer 2",
        ),
        (  # a package's module reaching its own orchestrator
            {
                "ceremonies/runner/__init__.py": "from ceremonies.runner import held\n",
                "ceremonies/runner/held.py": "def f():\n    from ceremonies.runner import X\n",
            },
            "orchestrator",
        ),
        (  # a relative import of the orchestrator counts the same
            {
                "ceremonies/runner/__init__.py": "X = 1\n",
                "ceremonies/runner/held.py": "def f():\n    from . import X\n",
            },
            "orchestrator",
        ),
        (  # a cycle hidden in a function: b imports a at module level
            {
                "custody/rekey/__init__.py": "",
                "custody/rekey/a.py": "def f():\n    from custody.rekey import b\n",
                "custody/rekey/b.py": "from custody.rekey.a import f\n",
            },
            "cycle",
        ),
        (  # ... also when the cycle runs through a package __init__ that loading runs
            {
                "ceremonies/runner/__init__.py": "",
                "ceremonies/runner/held.py": (
                    "def f():\n    from ceremonies.runner.steps import base\n"
                ),
                "ceremonies/runner/steps/__init__.py": "from ceremonies.runner import held\n",
                "ceremonies/runner/steps/base.py": "",
            },
            "cycle",
        ),
    ],
)
def test_the_scan_flags_each_kind(tmp_path, files, why):
    root = _tree(tmp_path, files)
    found = _upward(root)
    assert len(found) == 1 and why in found[0][1], found


@pytest.mark.parametrize(
    "files",
    [
        # downward, lazily (a heavy dependency): allowed
        {"custody_cli/a.py": "def f():\n    import tui.app\n", "tui/app.py": ""},
        {"tui/a.py": "def f():\n    from custody import errors\n", "custody/errors.py": ""},
        # the orchestrator importing its own step modules lazily: downward
        {
            "ceremonies/runner/__init__.py": "def f():\n    from ceremonies.runner import steps\n",
            "ceremonies/runner/steps.py": "from ceremonies.runner import views\n",
            "ceremonies/runner/views.py": "",
        },
        # a TYPE_CHECKING import is not a load-time arrow
        {
            "custody/rekey/__init__.py": "",
            "custody/rekey/a.py": "def f():\n    from custody.rekey import b\n",
            "custody/rekey/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from custody.rekey.a import f\n"
            ),
        },
    ],
)
def test_the_scan_passes_what_points_down(tmp_path, files):
    assert _upward(_tree(tmp_path, files)) == []
