"""The import contracts of docs/architecture.md (`.importlinter`): the rooms' layer order, apps that
import no toolchain room, and common modules that import no room."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # import-linter finds `medge` on sys.path and reads the config from here
    code = lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    assert out.count("KEPT") == 3 and "BROKEN" not in out, out[-4000:]
