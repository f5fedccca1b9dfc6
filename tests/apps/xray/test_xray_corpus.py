"""Fault injection (issue #20): `medge xray serve` receives pydicom's whole test-file corpus and
anonymised / unusual chest studies over one real association; every acknowledged study ends
analysed or not_analysed for a stated reason (never an analysis error), every chest study gets
its SR at the destination SCP, the server stays up, and no patient name reaches the outputs."""

from __future__ import annotations

import json
import signal
import warnings
from collections import Counter
from pathlib import Path

from anon_helpers import strip
from xray_helpers import URGENT_SEED, db_states, uid_hash, wait_for, worklist_json

LARGE = (3000, 2500)
# form → (PhantomSpec fields, attribute types removed).
# Sent first, so that highdicom builds the first SR of each layout from them: an anonymised DX (as
# in the issue, whose SR failed) and a CR with odd values and a name highdicom warns about.
FIRST = ("DX-no_type2", "CR-odd_values")
CHEST_FORMS = {
    "no_type2": ({}, {"2", "2C"}),
    "type1_only": ({}, {"2", "2C", "3"}),
    "mono1": ({"photometric": "MONOCHROME1", "bits_stored": 14}, set()),
    "8bit": ({"bits_allocated": 8, "bits_stored": 8}, set()),
    "large": ({}, set()),
    "rle": ({"compress": "rle"}, set()),
    "jpegls": ({"compress": "jpegls"}, set()),
    "jpeg2000": ({"compress": "jpeg2000"}, set()),
    "odd_values": ({}, set()),  # see ODD_VALUES
}
# Values highdicom rejects or warns about (quoting them), as vendors and anonymisers write them:
ODD_VALUES = {"PatientSex": "X", "PatientBirthDate": "19000230", "SpecificCharacterSet": "", "StudyTime": "25",
              "BodyPartExamined": "chest ", "ViewPosition": ["AP", "PA"]}
LOSSLESS = ("no_type2", "type1_only", "mono1", "rle", "jpegls", "jpeg2000", "odd_values")


def _chest_studies(folder: Path) -> dict[str, Path]:
    """One DX and one CR study per form, every one of the same phantom (distinct names and UIDs)."""
    from scipy.ndimage import zoom

    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset, phantom_image

    base = phantom_image(256, URGENT_SEED)[0]
    large = zoom(base, (LARGE[0] / 256, LARGE[1] / 256), order=1)
    folder.mkdir()
    paths = {}
    for modality in ("DX", "CR"):
        for form, (fields, removed) in CHEST_FORMS.items():
            # One component only: highdicom warns about such a name, quoting it.
            spec = PhantomSpec(modality=modality, patient_name=f"CHEST{modality}{form.upper()}",
                               patient_id=f"ID-{modality}-{form}", **fields)
            ds = phantom_dataset(spec, image=large if form == "large" else base)
            strip(ds, removed)
            if form == "odd_values":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for keyword, value in ODD_VALUES.items():
                        setattr(ds, keyword, value)
            path = paths[f"{modality}-{form}"] = folder / f"{modality}-{form}.dcm"
            ds.save_as(path, enforce_file_format=True)
    return paths


def _corpus() -> list[tuple[str, object]]:
    """Every pydicom test file with a SOP Class and Instance UID, in its own transfer syntax."""
    import pydicom
    from pydicom.data import get_testdata_files
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(get_testdata_files("*")):
            try:
                ds = pydicom.dcmread(path, force=True)
                uids = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            except Exception:  # noqa: BLE001 - not DICOM (json, dumps) or no UIDs
                continue
            if not all(uids):
                continue
            if ds.file_meta.get("TransferSyntaxUID") is None:  # a dataset written without a file meta
                implicit, little = ds.original_encoding
                ds.file_meta = ds.file_meta if len(ds.file_meta) else FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else (
                    ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            found.append((Path(path).name, ds))
    return found


def _send(items: list[tuple[str, object]], port: int) -> dict[str, str]:
    """C-STORE every dataset on one association; name → '0xSSSS', or why it was not sent."""
    from pynetdicom import AE, build_context

    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in items})
    ae = AE(ae_title="CORPUS")
    ae.requested_contexts = [build_context(sop, ts) for sop, ts in pairs]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDGE")
    assert assoc.is_established
    accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    assert accepted == set(pairs), f"the SCP rejected {sorted(set(pairs) - accepted)}"
    outcome = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, ds in items:
            try:
                status = assoc.send_c_store(ds)
            except Exception as exc:  # noqa: BLE001 - the sender cannot encode this file
                outcome[name] = f"not sent ({type(exc).__name__})"
                continue
            outcome[name] = f"0x{int(status.Status):04X}" if "Status" in status else "no response"
    assoc.release()
    return outcome


def _patient_names(items: list[tuple[str, object]]) -> set[str]:
    """Each input's patient name, and its family name (checked when 4 characters or more, so that
    'PLA' does not match 'PLANE')."""
    names = set()
    for _, ds in items:
        name = str(ds.get("PatientName", "") or "")
        names.update(text for text in (name, name.split("^")[0]) if len(text.strip("^ ")) >= 4)
    return names


def test_corpus_and_unusual_chest_studies(xray_bundle, start_server, sink, run_cli, tmp_path):
    import pydicom

    chest = {name: pydicom.dcmread(path) for name, path in _chest_studies(tmp_path / "chest").items()}
    corpus = _corpus()
    db, sr_dir = tmp_path / "wl.sqlite", tmp_path / "sr"
    server = start_server(["--bundle", xray_bundle, "--db", db, "--store", tmp_path / "store", "--sr-dir", sr_dir,
                           "--sr-dest", sink.address], report=tmp_path / "serve.json")
    items = [(name, chest[name]) for name in FIRST] + [(n, ds) for n, ds in chest.items() if n not in FIRST] + corpus
    outcome = _send(items, server.port)

    acknowledged = {name for name, status in outcome.items() if status == "0x0000"}
    assert set(chest) <= acknowledged, {n: outcome[n] for n in chest}
    uid_of = {name: str(ds.SOPInstanceUID) for name, ds in items}
    hashes = {uid_hash(db, uid_of[name]) for name in acknowledged}
    wait_for(lambda: (states := db_states(db)) and hashes <= set(states)
             and all(states[h][0] in ("analysed", "not_analysed") for h in hashes), 300,
             "every acknowledged study to be analysed or not_analysed")
    wait_for(lambda: all(len(sink.by_source.get(str(ds.SOPInstanceUID), [])) == 1 for ds in chest.values()), 120,
             "one SR per chest study at the destination")
    rows = {row["sop_instance_uid_hash"]: row for row in worklist_json(run_cli, db)}
    final = {name: rows[uid_hash(db, uid_of[name])] for name in acknowledged}
    errors = {name: row["reason"] for name, row in final.items() if "analysis error" in (row["reason"] or "")}
    assert not errors
    for name in chest:
        assert final[name]["state"] == "analysed", (name, final[name])
        assert (sr_dir / f"{final[name]['sop_instance_uid_hash']}.dcm").exists()
    assert len(list(sr_dir.glob("*.dcm"))) == len(chest)  # nothing from the corpus is a chest CR/DX
    for modality in ("DX", "CR"):  # lossless encodings of one phantom read the same
        reference = final[f"{modality}-no_type2"]["scores"]
        for form in LOSSLESS:
            scores = final[f"{modality}-{form}"]["scores"]
            assert all(abs(scores[k] - reference[k]) < 0.03 for k in reference), (modality, form, scores, reference)
    sr = sink.by_source[str(chest["DX-no_type2"].SOPInstanceUID)][0]  # type 2: present and empty
    assert all(k in sr and sr[k].is_empty for k in ("PatientBirthDate", "PatientSex", "AccessionNumber"))

    status_echo = run_cli("xray", "send", tmp_path / "chest" / "DX-mono1.dcm", "--to", server.address, report=True)
    assert status_echo.returncode == 0 and server.proc.poll() is None  # still up, and a resend is fine
    assert server.stop(signal.SIGTERM) == 0

    audit = db.with_name(db.name + ".audit.jsonl").read_text()
    outputs = {"log": server.log, "audit": audit, "worklist": json.dumps(list(rows.values())),
               "report": (tmp_path / "serve.json").read_text()}
    phi = _patient_names(items) | {ODD_VALUES["PatientBirthDate"]}
    leaks = {(where, name) for name in phi for where, text in outputs.items() if name in text}
    assert not leaks

    distinct = {row["sop_instance_uid_hash"]: row for row in final.values()}
    reasons = Counter((row["state"], (row["reason"] or "").split(" (")[0]) for row in distinct.values())
    refused = {name: status for name, status in outcome.items() if name not in acknowledged}
    print(f"\n{len(corpus)} corpus files + {len(chest)} chest studies sent; {len(acknowledged)} acknowledged "
          f"({len(distinct)} distinct instances); not acknowledged: {refused}")
    for (state, reason), count in sorted(reasons.items()):
        print(f"  {count:3d} {state} {reason}")
