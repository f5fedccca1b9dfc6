"""Registry, errors and the CLI frame."""

from __future__ import annotations

import pytest

from medge.common.errors import MissingDependencyError, UnknownNameError
from medge.common.registry import Registry, import_optional


def test_registry_rejects_duplicates_and_suggests():
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    reg.register("beta", "math:pi")
    with pytest.raises(ValueError):
        reg.register("alpha", 2)
    assert reg.names() == ["alpha", "beta"]
    assert reg.get("beta") == pytest.approx(3.14159, abs=1e-4)
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'"):
        reg.get("alpah")


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with pytest.raises(MissingDependencyError, match=r"medge\[openvino\]"):
        import_optional("openvino", what="the OpenVINO runtime")


def test_cli_usage_error_is_one_line(run_cli):
    res = run_cli("no-such-command")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_version(run_cli):
    res = run_cli("--version")
    assert res.returncode == 0 and "medge" in res.stdout
