"""Anonymised and unusual studies get an SR, the same whichever study of its layout came first,
and the view/body-part checks read odd headers (issue #20)."""

from __future__ import annotations

import pytest
from anon_helpers import normalised_sr, strip

from medge.apps.xray.classifier import NotAnalysable, check_analysable
from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset
from medge.apps.xray.sr import Finding, build_sr
from medge.apps.xray.sr_writer import SRWriter

LABELS = ["effusion", "pneumothorax", "nodule", "cardiomegaly"]
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
         "StudyTime", "ReferringPhysicianName")
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR", "ignore:The string .* person name")
WRITER = {"model_name": "cxr-densenet-tiny", "model_sha256": "cd" * 32, "ops_version": "0123456789ab"}


def _sources(modality: str) -> dict:
    complete = phantom_dataset(PhantomSpec(size=32, seed=1, modality=modality, patient_name="FULL^PATIENT"))
    complete.ReferringPhysicianName, complete.InstitutionName = "REF^DOC", "Hospital"
    anonymised = phantom_dataset(PhantomSpec(size=32, seed=2, modality=modality))
    assert "PatientBirthDate" in strip(anonymised, {"2", "2C"})
    minimal = phantom_dataset(PhantomSpec(size=32, seed=3, modality=modality))
    assert "ViewPosition" in strip(minimal, {"2", "2C", "3"})
    odd = phantom_dataset(PhantomSpec(size=32, seed=4, modality=modality, patient_name="ODDNAME"))
    odd.PatientSex, odd.PatientBirthDate, odd.StudyTime, odd.SpecificCharacterSet = "X", "19000230", "25", ""
    odd.ViewPosition, odd.BodyPartExamined = ["AP", "PA"], "chest "
    return {"complete": complete, "anonymised": anonymised, "minimal": minimal, "odd": odd}


@pytest.mark.parametrize("order", ["anonymised_first", "complete_first"])
@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_sr_is_the_same_whatever_the_arrival_order(modality, order):
    import highdicom as hd

    sources = _sources(modality)
    names = list(sources) if order == "complete_first" else list(reversed(sources))
    findings = [Finding(name, 0.2 + 0.2 * i, 0.5, 0.2 + 0.2 * i >= 0.5) for i, name in enumerate(LABELS)]
    writer = SRWriter(**WRITER)
    served = {name: writer.build(sources[name], findings) for name in names}  # first by highdicom, then patched
    assert writer.built_by_highdicom == 1
    for name, source in sources.items():
        check_analysable(source)
        alone = SRWriter(**WRITER).build(source, findings)  # the first SR of its layout
        assert normalised_sr(served[name]) == normalised_sr(alone), name
        assert normalised_sr(alone) == normalised_sr(build_sr(source, findings, **WRITER)), name
        sr = hd.sr.Comprehensive3DSR.from_dataset(served[name])
        assert sr.StudyInstanceUID == source.StudyInstanceUID
        assert [g.tracking_identifier for g in sr.content.get_image_measurement_groups()] == LABELS
        for keyword in TYPE2:  # type 2: always present, empty when the source has no (valid) value
            assert keyword in sr, (name, keyword)
    for keyword in TYPE2:
        assert served["anonymised"][keyword].is_empty and served["minimal"][keyword].is_empty
    assert served["complete"].PatientName == "FULL^PATIENT" and served["complete"].ReferringPhysicianName == "REF^DOC"
    assert served["odd"].PatientName == "ODDNAME" and served["odd"].StudyDate == "20260101"
    assert served["odd"]["PatientSex"].is_empty and served["odd"]["PatientBirthDate"].is_empty
    assert served["odd"].SpecificCharacterSet == "ISO_IR 192"
    assert "ContributingEquipmentSequence" in served["complete"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"ViewPosition": ["PA", "LL"]}, "lateral view (LL)"),
    ({"ViewPosition": "ll "}, "lateral view (LL)"),
    ({"BodyPartExamined": "KNEE"}, "body part KNEE is not the chest"),
    ({"Modality": ["DX", "CT"], "BodyPartExamined": "Thorax"}, None),
    ({"SeriesInstanceUID": ""}, "no SeriesInstanceUID"),
    ({"SOPClassUID": "1.2.3.4"}, "SOP class 1.2.3.4 is not an image storage class"),
])
def test_view_and_body_part_checks_read_odd_headers(change, reason):
    ds = phantom_dataset(PhantomSpec(size=32))
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    if reason is None:
        check_analysable(ds)
    else:
        with pytest.raises(NotAnalysable, match=reason.replace("(", r"\(").replace(")", r"\)")):
            check_analysable(ds)
