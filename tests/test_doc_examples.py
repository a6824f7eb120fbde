"""The docstring examples of the Python API run, unskipped, against a real twin (the module's demo city).

``citytwin.connect()`` without arguments reads ``CITYTWIN_DATABASE_URL``: the test points it at the demo
twin, so the examples read exactly as an analyst would type them. ``twin`` is also in the examples'
globals, for the docstrings that use it without connecting first.
"""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import citytwin
import citytwin.client
from citytwin.client import Twin

MODULES = {"citytwin": citytwin, "citytwin.client": citytwin.client}
# Methods whose docstrings must hold examples (not only the module's front page).
DOCUMENTED = {"citytwin.client.Twin.buildings_served_by", "citytwin.client.Twin.critical_customers_behind",
              "citytwin.client.Twin.sensors_on", "citytwin.client.Twin.buildings", "citytwin.client.connect",
              "citytwin.client", "citytwin", "citytwin.connect"}


@pytest.fixture(scope="module")
def twin(demo_twin):
    url, data_dir = demo_twin
    twin = citytwin.connect(url, data_dir=data_dir)
    yield twin
    twin.engine.dispose()


def _doctests(module: ModuleType, twin: Twin) -> list[doctest.DocTest]:
    return doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__, extraglobs={"twin": twin})


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_run_against_a_twin(name: str, twin: Twin, demo_twin, monkeypatch) -> None:
    url, data_dir = demo_twin
    monkeypatch.setenv("CITYTWIN_DATABASE_URL", url)
    monkeypatch.setenv("CITYTWIN_DATA_DIR", str(data_dir))
    tests = _doctests(MODULES[name], twin)
    examples = [example for test in tests for example in test.examples]
    assert examples, f"{name} has no docstring examples"
    skipped = [example.source for example in examples if example.options.get(doctest.SKIP)]
    assert not skipped, "examples must run, not be skipped"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    failed = attempted = 0
    for test in tests:
        result = runner.run(test, out=report.append, clear_globs=False)
        failed, attempted = failed + result.failed, attempted + result.attempted
        for value in test.globs.values():  # engines of twins the examples opened themselves
            if isinstance(value, Twin) and value is not twin:
                value.engine.dispose()
        test.globs.clear()
    assert attempted == len(examples)
    assert failed == 0, "".join(report)


def test_the_graph_queries_and_the_front_pages_have_examples(twin: Twin) -> None:
    found = {test.name for module in MODULES.values() for test in _doctests(module, twin) if test.examples}
    assert DOCUMENTED <= found, sorted(DOCUMENTED - found)
