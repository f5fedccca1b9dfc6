"""Anonymised and unusual chest studies for the X-ray tests (attributes removed by type, as
anonymisers and minimal modalities leave them), and SRs compared element by element."""

from __future__ import annotations

from typing import Any


def attributes_of_types(sop_class_uid: str, types: set[str]) -> set[str]:
    """Root attributes of the IOD of `sop_class_uid` whose type is in `types` in every module that lists them."""
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

    listed: dict[str, set[str]] = {}
    attributes = get_module_attribute_map()
    for module in get_iod_module_map()[get_sop_class_iod_map()[sop_class_uid]]:
        for item in attributes[module["key"]]:
            if not item["path"]:
                listed.setdefault(str(item["keyword"]), set()).add(str(item["type"]))
    return {keyword for keyword, found in listed.items() if found <= types}


def strip(ds: Any, types: set[str]) -> list[str]:
    """Delete from `ds` every attribute of `types` (e.g. {"2", "2C"}); returns the deleted keywords."""
    from pydicom.datadict import tag_for_keyword

    removed = sorted(k for k in attributes_of_types(str(ds.SOPClassUID), types)
                     if tag_for_keyword(k) is not None and k in ds)  # overlay keywords are repeating groups
    for keyword in removed:
        delattr(ds, keyword)
    return removed


def normalised_sr(sr: Any) -> dict:
    """The SR as written, as JSON, without its creation times (for element-by-element comparison)."""
    from io import BytesIO

    import pydicom

    from medge.apps.xray.sr import sr_bytes
    from medge.apps.xray.sr_writer import TIME_KEYWORDS

    ds = pydicom.dcmread(BytesIO(sr_bytes(sr)))
    for keyword in TIME_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            del item.ContributionDateTime
    return {"meta": ds.file_meta.to_json_dict(), "data": ds.to_json_dict()}
