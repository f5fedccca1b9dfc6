"""What the app reads from a received instance, read so that odd or anonymised headers never break it.

Anonymisers remove type 2 attributes (Patient's Birth Date and Sex, Accession Number, Referring
Physician) and type 3 ones; vendors write multi-valued, lower-case or out-of-range values.  Two
readers here cope with both:

* `cs_values` reads a code string (Modality, View Position, Body Part Examined) as upper-case
  values, whatever the multiplicity, and as no value when it is missing or does not decode;
* `sr_source` is the header the SR is built from: the source's UIDs, every root attribute of its
  Patient and Study modules, its Specific Character Set and the General Equipment fields the SR
  lists as contributing equipment.  Type 2 attributes of the mandatory Patient and General Study
  modules that are missing are present and empty (as DICOM requires of the SR), and values the SR
  cannot carry (Patient's Sex other than M/F/O, dates and times that do not parse, a multi-valued
  name, a character set highdicom rejects) are written empty or, for the character set, as UTF-8.

highdicom and the fast `SRWriter` path both build from `sr_source`, so an SR does not depend on
which study of its layout arrived first.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR, what `sr.build_sr` writes
IDENTIFYING_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
EQUIPMENT_KEYWORDS = ("Manufacturer", "ManufacturerModelName", "SoftwareVersions", "DeviceSerialNumber",
                      "InstitutionName", "InstitutionalDepartmentName", "InstitutionAddress", "StationName",
                      "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime")
_PATIENT_SEXES = frozenset({"M", "F", "O"})
_UTF8 = "ISO_IR 192"


def _element(ds: Any, keyword: str) -> Any:
    """The data element `keyword` of `ds`, or None when it is missing or does not decode."""
    try:
        return ds[keyword] if keyword in ds else None
    except Exception:  # noqa: BLE001 - a malformed raw element is as good as a missing one
        return None


def cs_values(ds: Any, keyword: str) -> list[str]:
    """The values of a code-string attribute, stripped and upper-case ([] when missing, empty or unreadable)."""
    element = _element(ds, keyword)
    value = None if element is None else element.value
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    items = value.split("\\") if isinstance(value, str) else list(value)
    return [text for item in items if (text := str(item).strip().upper())]


def missing_uids(ds: Any) -> list[str]:
    """The identifying UIDs (`IDENTIFYING_UIDS`) that `ds` lacks, or has empty or unreadable."""
    missing = []
    for keyword in IDENTIFYING_UIDS:
        element = _element(ds, keyword)
        if element is None or not str(element.value or "").strip():
            missing.append(keyword)
    return missing


@lru_cache(maxsize=None)
def iod_of(sop_class_uid: str) -> str | None:
    """The IOD key (highdicom's tables) of a SOP class, or None when highdicom does not know it."""
    from highdicom._standard_utils import get_sop_class_iod_map

    return get_sop_class_iod_map().get(sop_class_uid)


@lru_cache(maxsize=None)
def patient_study_keywords(sop_class_uid: str) -> tuple[str, ...]:
    """Root attributes of the Patient and Study IEs of the IOD of `sop_class_uid` (what highdicom copies)."""
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map

    modules, attributes = get_iod_module_map(), get_module_attribute_map()
    return tuple(str(item["keyword"]) for module in modules[iod_of(sop_class_uid)]
                 if module["ie"] in ("Patient", "Study")
                 for item in attributes[module["key"]] if len(item["path"]) == 0)


@lru_cache(maxsize=None)
def required_empty_keywords() -> tuple[str, ...]:
    """Type 2 root attributes of the SR's mandatory Patient and Study modules (present even when unknown)."""
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map

    modules, attributes = get_iod_module_map(), get_module_attribute_map()
    return tuple(str(item["keyword"]) for module in modules[iod_of(SR_SOP_CLASS)]
                 if module["ie"] in ("Patient", "Study") and module["usage"] == "M"
                 for item in attributes[module["key"]] if len(item["path"]) == 0 and item["type"] == "2")


def _valid_for_sr(keyword: str, value: Any) -> bool:
    """Whether highdicom's SR constructor accepts `value` for `keyword` (it checks only these)."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DA, TM

    if value is None or value == "":
        return True
    if isinstance(value, (MultiValue, list, bytes)):
        return keyword not in ("PatientName", "PatientSex", "PatientBirthDate", "StudyDate", "StudyTime")
    try:
        if keyword == "PatientSex":
            return str(value) in _PATIENT_SEXES
        if keyword in ("PatientBirthDate", "StudyDate"):
            DA(value)
        elif keyword == "StudyTime":
            TM(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _character_set(ds: Any) -> Any:
    """The source's Specific Character Set when highdicom accepts it, else UTF-8 (None: the default)."""
    from highdicom.valuerep import _check_specific_character_set

    element = _element(ds, "SpecificCharacterSet")
    if element is None:
        return None
    try:
        _check_specific_character_set(element.value)
    except (TypeError, ValueError):
        return _UTF8
    return element.value


def sr_source(ds: Any) -> Any:
    """The header the SR copies from `ds`, normalised as the module docstring says (pixels left out).

    `ds` must have the four identifying UIDs and a SOP class highdicom knows (`check_analysable`
    makes sure of both before a study is analysed)."""
    from pydicom.dataset import Dataset

    out = Dataset()
    for keyword in IDENTIFYING_UIDS:
        setattr(out, keyword, str(ds[keyword].value).strip())
    charset = _character_set(ds)
    if charset is not None:
        out.SpecificCharacterSet = charset
    for keyword in (*patient_study_keywords(out.SOPClassUID), *EQUIPMENT_KEYWORDS):
        element = _element(ds, keyword)
        if element is not None and keyword not in IDENTIFYING_UIDS:
            out[keyword] = element if _valid_for_sr(keyword, element.value) else _empty(keyword)
    for keyword in required_empty_keywords():
        if keyword not in out:
            out[keyword] = _empty(keyword)
    return out


def _empty(keyword: str) -> Any:
    """An empty element (zero length) of `keyword` with its dictionary VR."""
    from pydicom.dataelem import DataElement
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    return DataElement(tag_for_keyword(keyword), dictionary_VR(keyword), None)
