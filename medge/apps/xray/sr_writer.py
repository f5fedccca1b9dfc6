"""Fast SRs: highdicom builds the first SR of each layout; later studies patch a copy of it.

highdicom constructs, deep-copies and re-parses the whole content tree of every SR it writes, which
costs ~0.5 s of pure Python for 14 findings and holds the GIL, so it would cap the app at ~2
studies/s.  The content of our SRs differs between studies only in a few values: the UIDs, the
patient/study attributes copied from the source, the source-image references, the scores and the
present/absent codes.  `SRWriter` keeps the first highdicom SR of each layout (source SOP class,
findings, thresholds) as encoded bytes, and for each later study parses a copy and sets exactly
those values, in ~20 ms.  Both paths start from `source.sr_source` (the source header with
missing type 2 attributes present and empty), so the first SR of a layout and every later one are
built from the same attributes whatever the arrival order.  Tests check that the result equals
highdicom's own SR for the same study, element by element (creation times aside), in both orders
of an anonymised and a complete study.
"""

from __future__ import annotations

import datetime
import threading
from io import BytesIO
from typing import Any

from medge.apps.xray.source import patient_study_keywords, sr_source
from medge.apps.xray.sr import PRIVATE_SCHEME, Finding, build_sr, sr_bytes, sr_uids

TIME_KEYWORDS = ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime", "SeriesDate",
                 "SeriesTime")
_IMAGING_MEASUREMENTS, _GROUP, _TRACKING_UID, _SOURCE = "126010", "125007", "112040", "121112"
_ACQUISITION_EQUIPMENT = "109101"


def _code(item: Any) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def _groups(sr: Any) -> list[Any]:
    container = next(i for i in sr.ContentSequence if i.ValueType == "CONTAINER" and _code(i) == _IMAGING_MEASUREMENTS)
    return [g for g in container.ContentSequence if _code(g) == _GROUP]


def _is_acquisition(item: Any) -> bool:
    purpose = item.get("PurposeOfReferenceCodeSequence")
    return bool(purpose) and str(purpose[0].CodeValue) == _ACQUISITION_EQUIPMENT


class SRWriter:
    """Builds the SR of one study for one model version and operating point (thread-safe)."""

    def __init__(self, *, model_name: str, model_sha256: str, ops_version: str) -> None:
        self.model_name, self.model_sha256, self.ops_version = model_name, model_sha256, ops_version
        self._templates: dict[tuple, bytes] = {}
        self._lock = threading.Lock()
        self.built_by_highdicom = 0

    def build(self, source: Any, findings: list[Finding]) -> Any:
        """The SR dataset for `source` (a pydicom dataset) and its findings."""
        source = sr_source(source)
        key = (str(source.SOPClassUID), tuple((f.name, f.threshold) for f in findings))
        with self._lock:
            template = self._templates.get(key)
        if template is None:
            sr = build_sr(source, findings, model_name=self.model_name, model_sha256=self.model_sha256,
                          ops_version=self.ops_version)
            with self._lock:
                self._templates.setdefault(key, sr_bytes(sr))
                self.built_by_highdicom += 1
            return sr
        return self._patch(template, source, findings)

    def _patch(self, template: bytes, source: Any, findings: list[Finding]) -> Any:
        import pydicom
        from highdicom.base_content import ContributingEquipment
        from pydicom.sr.codedict import codes
        from pydicom.valuerep import DS

        sr = pydicom.dcmread(BytesIO(template))
        series_uid, sop_uid = sr_uids(str(source.SOPInstanceUID), self.model_sha256, self.ops_version)
        sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = sop_uid
        sr.SeriesInstanceUID = series_uid
        for keyword in ("SpecificCharacterSet", *patient_study_keywords(str(source.SOPClassUID))):
            if keyword in sr:
                delattr(sr, keyword)
            if keyword in source:
                sr[keyword] = source[keyword]
        now = datetime.datetime.now()
        for keyword in TIME_KEYWORDS:
            if keyword in sr:
                sr[keyword].value = now.strftime("%Y%m%d") if keyword.endswith("Date") else now.strftime("%H%M%S.%f")
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        evidence.StudyInstanceUID = source.StudyInstanceUID
        evidence.ReferencedSeriesSequence[0].SeriesInstanceUID = source.SeriesInstanceUID
        reference = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
        others = [item for item in sr.get("ContributingEquipmentSequence", []) if not _is_acquisition(item)]
        try:
            acquisition = [ContributingEquipment.for_image_acquisition(source)]
        except Exception:  # noqa: BLE001 - highdicom leaves it out the same way when the source lacks the fields
            acquisition = []
        if acquisition or others:
            sr.ContributingEquipmentSequence = acquisition + others
        for group, finding in zip(_groups(sr), findings):
            for item in group.ContentSequence:
                concept = item.ConceptNameCodeSequence[0]
                if item.ValueType == "UIDREF" and concept.CodeValue == _TRACKING_UID:
                    item.UID = sr_uids(str(source.SOPInstanceUID), finding.name, self.ops_version)[1]
                elif item.ValueType == "NUM" and concept.CodingSchemeDesignator == PRIVATE_SCHEME:
                    value = item.MeasuredValueSequence[0]
                    value.NumericValue = DS(float(finding.score), auto_format=True)
                    value.FloatingPointValue = float(finding.score)  # as highdicom writes a float
                elif item.ValueType == "CODE" and concept.CodeValue != "121071":
                    code = codes.SCT.Present if finding.present else codes.SCT.Absent
                    target = item.ConceptCodeSequence[0]
                    target.CodeValue, target.CodingSchemeDesignator, target.CodeMeaning = \
                        code.value, code.scheme_designator, code.meaning
                elif item.ValueType == "IMAGE" and concept.CodeValue == _SOURCE:
                    ref = item.ReferencedSOPSequence[0]
                    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
        return sr
