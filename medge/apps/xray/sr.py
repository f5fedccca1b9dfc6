"""The result as DICOM: a highdicom Comprehensive 3D SR holding a TID 1500 measurement report.

One measurement group (TID 1501) per finding, each with

* the finding type (SNOMED CT where pydicom's code dictionary has the concept, otherwise a code of
  the private scheme ``99MEDGE``),
* a qualitative evaluation: the finding *Present* / *Absent* at the operating point,
* the model's score as a measurement (unit ``1``) and the threshold used (DCM *Threshold value*),
* the algorithm: name, version = the model's sha256, parameters = operating-point version and the
  threshold,
* a reference to the source image (SOP class + instance).

The SR joins the original study (patient and study modules are copied by highdicom from
`source.sr_source`, the source's header with missing type 2 attributes present and empty) in a new
series.  Its UIDs are derived from the source SOPInstanceUID, the model hash
and the operating-point version, so re-analysing the same image gives the same SR (idempotent at
the PACS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medge.apps.xray.source import sr_source

PRIVATE_SCHEME = "99MEDGE"
SR_SERIES_NUMBER = 9901
MANUFACTURER = "medge"
_SCT_NAMES = {
    "effusion": "PleuralEffusion", "pneumothorax": "Pneumothorax", "nodule": "Nodule", "cardiomegaly": "Cardiomegaly",
    "mass": "Mass", "edema": "PulmonaryEdema", "fibrosis": "Fibrosis",
}


@dataclass(frozen=True)
class Finding:
    """One finding's result."""

    name: str
    score: float
    threshold: float
    present: bool


def finding_code(name: str) -> Any:
    """The coded concept of a finding label (SNOMED CT when known, else the private scheme)."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    attr = _SCT_NAMES.get(name)
    if attr is not None:
        return getattr(codes.SCT, attr)
    return CodedConcept(value=name[:16], scheme_designator=PRIVATE_SCHEME, meaning=name.replace("_", " "))


def sr_uids(source_sop_instance_uid: str, model_sha256: str, ops_version: str) -> tuple[str, str]:
    """Deterministic (series, instance) UIDs of the SR for one source image and model version."""
    from pydicom.uid import generate_uid

    key = [source_sop_instance_uid, model_sha256, ops_version]
    return generate_uid(entropy_srcs=["series", *key]), generate_uid(entropy_srcs=["instance", *key])


def device_uid(model_sha256: str) -> str:
    """The observer-device UID: one per model version."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["device", model_sha256])


def build_sr(source: Any, findings: list[Finding], *, model_name: str, model_sha256: str, ops_version: str) -> Any:
    """A `highdicom.sr.Comprehensive3DSR` for `source` (a pydicom dataset, pixel data not needed)."""
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    source = sr_source(source)
    series_uid, sop_uid = sr_uids(str(source.SOPInstanceUID), model_sha256, ops_version)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(model_sha256),
        name="medge xray triage", manufacturer_name=MANUFACTURER, model_name=model_name[:64])
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    source_image = hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=str(source.SOPClassUID), referenced_sop_instance_uid=str(source.SOPInstanceUID))
    score_name = CodedConcept(value="score", scheme_designator=PRIVATE_SCHEME, meaning="AI score")
    groups = []
    for finding in findings:
        algorithm = hd.sr.AlgorithmIdentification(
            name=model_name[:64], version=model_sha256,
            parameters=[f"operating_points={ops_version}", f"threshold={finding.threshold:.6g}"])
        tracking = hd.sr.TrackingIdentifier(
            uid=sr_uids(str(source.SOPInstanceUID), finding.name, ops_version)[1], identifier=finding.name[:64])
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            finding_type=finding_code(finding.name),
            algorithm_id=algorithm,
            source_images=[source_image],
            measurements=[
                hd.sr.Measurement(name=score_name, value=float(finding.score), unit=codes.UCUM.NoUnits),
                hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=float(finding.threshold),
                                  unit=codes.UCUM.NoUnits),
            ],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=finding_code(finding.name), value=codes.SCT.Present if finding.present else codes.SCT.Absent)],
        ))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ChestImaging,
                                     imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[source], content=report, series_instance_uid=series_uid, series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description="medge AI triage (not for diagnosis)")


def sr_bytes(sr: Any) -> bytes:
    """The SR encoded in the DICOM file format."""
    from io import BytesIO

    buf = BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
