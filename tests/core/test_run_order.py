"""The suite's run order (`fixtures.durations`): whole modules, longest expected first."""

from __future__ import annotations

import json
from types import SimpleNamespace

from fixtures import durations


def test_modules_run_longest_first_and_stay_whole(tmp_path, monkeypatch):
    table = tmp_path / "durations.json"
    table.write_text(json.dumps({"tests/b.py": 50.0, "tests/c.py": 5.0}))
    monkeypatch.setattr(durations, "DURATIONS", table)
    ids = ["tests/a.py::t1", "tests/b.py::t1", "tests/a.py::t2", "tests/c.py::t1", "tests/b.py::t2", "tests/d.py::t1"]
    items = [SimpleNamespace(nodeid=i) for i in ids]
    durations.longest_modules_first(items)
    # b (50 s), c (5 s), then the modules without a figure in collection order (a, d); each module whole
    assert [i.nodeid for i in items] == ["tests/b.py::t1", "tests/b.py::t2", "tests/c.py::t1", "tests/a.py::t1",
                                         "tests/a.py::t2", "tests/d.py::t1"]
    table.write_text("{not json")
    items = [SimpleNamespace(nodeid=i) for i in ids]
    durations.longest_modules_first(items)  # a broken table changes nothing but the order: modules grouped
    assert [i.nodeid for i in items][:2] == ["tests/a.py::t1", "tests/a.py::t2"]
