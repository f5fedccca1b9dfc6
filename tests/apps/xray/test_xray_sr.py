"""The fast SR path gives the same SR as highdicom, and that SR reads back with highdicom."""

from __future__ import annotations

import pytest
from anon_helpers import normalised_sr

CHEXNET = ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
           "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening", "hernia"]


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_patched_sr_equals_highdicom_sr(modality):
    import highdicom as hd

    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset
    from medge.apps.xray.sr import Finding, build_sr
    from medge.apps.xray.sr_writer import SRWriter

    first = phantom_dataset(PhantomSpec(size=32, seed=1, modality=modality))
    other = phantom_dataset(PhantomSpec(size=32, seed=2, modality=modality, patient_id="OTHER-2",
                                        patient_name="OTHER^NAME", accession="ACC-2"))
    other.ReferringPhysicianName = "REF^DOC"
    scores = [0.013 * (i + 1) + (0.6 if i % 3 == 0 else 0.0) for i in range(len(CHEXNET))]
    findings = [Finding(name, s, 0.5, s >= 0.5) for name, s in zip(CHEXNET, scores)]
    writer = SRWriter(model_name="cxr-densenet121", model_sha256="ab" * 32, ops_version="0123456789ab")
    writer.build(first, [Finding(f.name, 0.9 - f.score, 0.5, f.score < 0.4) for f in findings])
    patched = writer.build(other, findings)
    assert writer.built_by_highdicom == 1
    reference = build_sr(other, findings, model_name="cxr-densenet121", model_sha256="ab" * 32,
                         ops_version="0123456789ab")
    assert normalised_sr(patched) == normalised_sr(reference)
    # And it reads back as a TID 1500 report about `other`.
    sr = hd.sr.Comprehensive3DSR.from_dataset(patched)
    assert sr.PatientID == "OTHER-2" and sr.StudyInstanceUID == other.StudyInstanceUID
    groups = sr.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == CHEXNET
    for group, finding in zip(groups, findings):
        assert group.source_images[0].referenced_sop_instance_uid == other.SOPInstanceUID
        score = next(m for m in group.get_measurements() if m.name.meaning == "AI score")
        assert score.value == pytest.approx(finding.score)
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.value.meaning == ("Present" if finding.present else "Absent")


def _bytes_at_fixed_times(sr) -> bytes:
    """The SR encoded as written, with its creation times (which must differ between builds) fixed."""
    from pydicom.dataelem import DataElement

    from medge.apps.xray.sr import sr_bytes
    from medge.apps.xray.sr_writer import TIME_KEYWORDS

    for keyword in TIME_KEYWORDS:
        if keyword in sr:
            sr[keyword] = DataElement(sr[keyword].tag, sr[keyword].VR, "20000101" if keyword.endswith("Date") else "0")
    for item in sr.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = "20000101"
    return sr_bytes(sr)


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize("model_name", ["cxr-densenet121", "cxr-dénsenet"])
def test_spliced_sr_is_byte_for_byte_highdicoms(charset, model_name):
    """The SR spliced from a layout's template is highdicom's SR for the same study, byte for byte (creation
    times aside), in any character set, with ASCII text only or not."""
    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset
    from medge.apps.xray.sr import Finding, build_sr
    from medge.apps.xray.sr_writer import SRWriter

    writer_args = {"model_name": model_name, "model_sha256": "ef" * 32, "ops_version": "0123456789ab"}
    first = phantom_dataset(PhantomSpec(size=32, seed=1))
    study = phantom_dataset(PhantomSpec(size=32, seed=2, patient_id="OTHER-2", accession="ACC-2"))
    if charset is not None:
        first.SpecificCharacterSet = study.SpecificCharacterSet = charset
        study.PatientName, study.InstitutionName = "Müller^Jörg", "Hôpital"
    scores = [0.9 - 0.061 * i for i in range(len(CHEXNET))]
    findings = [Finding(name, s, 0.5, s >= 0.5) for name, s in zip(CHEXNET, scores)]
    writer = SRWriter(**writer_args)
    writer.build(first, [Finding(f.name, 1.0 - f.score, 0.5, not f.present) for f in findings])
    spliced = writer.build(study, findings)
    assert writer.built_by_highdicom == 1
    reference = _bytes_at_fixed_times(build_sr(study, findings, **writer_args))
    assert _bytes_at_fixed_times(spliced) == reference
    # The comparison sees one changed value: a score, or the source reference.
    moved = [Finding(f.name, f.score + (0.01 if i == 7 else 0.0), 0.5, f.present) for i, f in enumerate(findings)]
    assert _bytes_at_fixed_times(writer.build(study, moved)) != reference
    other = phantom_dataset(PhantomSpec(size=32, seed=2))
    other.StudyInstanceUID = study.StudyInstanceUID
    assert _bytes_at_fixed_times(writer.build(other, findings)) != reference


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_warm_up_compiles_the_template_each_study_then_uses(modality):
    """`serve` compiles the SR templates before it listens: the first real study's SR is spliced, not built
    by highdicom, and is still highdicom's SR for that study, byte for byte."""
    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset
    from medge.apps.xray.sr import Finding, build_sr
    from medge.apps.xray.sr_writer import SRWriter

    writer_args = {"model_name": "cxr-densenet121", "model_sha256": "cd" * 32, "ops_version": "0123456789ab"}
    writer = SRWriter(**writer_args)
    writer.warm_up([Finding(name, 0.0, 0.5, False) for name in CHEXNET])
    assert writer.built_by_highdicom == 2  # DX and CR
    study = phantom_dataset(PhantomSpec(size=32, seed=5, modality=modality, patient_id="P-5", accession="A-5"))
    findings = [Finding(name, 0.07 * i, 0.5, 0.07 * i >= 0.5) for i, name in enumerate(CHEXNET)]
    spliced = writer.build(study, findings)
    assert writer.built_by_highdicom == 2
    assert _bytes_at_fixed_times(spliced) == _bytes_at_fixed_times(build_sr(study, findings, **writer_args))
