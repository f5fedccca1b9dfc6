"""`medge zoo list` / `medge zoo show` through the real CLI."""

from __future__ import annotations

from medge.zoo import MODELS, get_card


def test_zoo_list_reports_every_model(run_cli):
    res = run_cli("zoo", "list", report=True)
    assert res.returncode == 0, res.stderr
    items = {item["name"]: item for item in res.report["items"]}
    assert sorted(items) == MODELS.names()
    for name, item in items.items():
        card = get_card(name)
        assert item["task"] == card.task and item["modality"] == card.modality
        assert item["params"] == card.params and item["macs"] == card.macs > 0
        assert item["demo_weights"] is (card.weights is not None)
        assert item["input"] == "x".join(map(str, card.input_shape))
    assert items["cxr-densenet121"]["demo_weights"] is False
    assert items["cxr-densenet121"]["params"] > 6_000_000


def test_zoo_show_gives_the_whole_card(run_cli):
    res = run_cli("zoo", "show", "ecg-3to12", report=True)
    assert res.returncode == 0, res.stderr
    card = res.report
    assert card["name"] == "ecg-3to12"
    assert card["input_shape"] == [1, 3, 5000] and card["output_shape"] == [1, 12, 5000]
    assert card["labels"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert card["preprocessing"]["kind"] == "signal" and card["preprocessing"]["leads"] == ["II", "V1", "V5"]
    assert "not for clinical use" in card["note"]


def test_zoo_show_unknown_name_suggests_the_closest(run_cli):
    res = run_cli("zoo", "show", "cxr-densenet-tny")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'cxr-densenet-tiny'" in lines[0]
    assert "Traceback" not in res.stderr


def test_zoo_usage_errors(run_cli):
    assert run_cli("zoo").returncode == 2
    res = run_cli("zoo", "show")
    assert res.returncode == 2 and "needs a model name" in res.stderr
