"""DICOM ECG waveforms in and out (12-lead ECG / General ECG Waveform Storage).

`read_dicom_ecg` reads the rhythm multiplex group of an ECG waveform object into mV with lead
names taken from the channel sources ("Lead I (Einthoven)" → I).  `write_dicom_ecg` writes twelve
channels as signed 16-bit at 1 µV per count in a new series (new Series and SOP Instance UIDs; patient
and study copied from a DICOM source when there is one, never logged).  What is computed is said
where viewers look (`medge.apps.ecg.provenance`): the Series Description, a waveform annotation on
the whole group ("COMPUTED ECG, NOT FOR DIAGNOSIS: ..."), and on every channel a Channel Label
(``V2 computed`` / ``II measured``) and an annotation of its own with the model's full sha256; a
computed channel's Channel Derivation Description names the model and its sha256 as far as the
64 characters of an LO allow.  The group's Waveform Originality is DERIVED.  Missing samples get
the Waveform Padding Value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from medge.apps.ecg.io_wfdb import EcgRecord
from medge.apps.ecg.provenance import Provenance
from medge.common.errors import DataError
from medge.common.fileio import atomic_path
from medge.common.registry import import_optional

TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
GENERAL_ECG = "1.2.840.10008.5.1.4.1.1.9.1.2"
TWELVE_LEAD_MAX_SAMPLES = 16384
PADDING = -32768
SCPECG_CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
                "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}
_COPY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
_UNIT_TO_MV = {"uv": 1e-3, "mv": 1.0, "v": 1e3}


def _lead_name(meaning: str) -> str:
    text = re.sub(r"\(.*?\)", "", str(meaning)).strip()
    text = re.sub(r"^lead\s+", "", text, flags=re.IGNORECASE).strip()
    for name in SCPECG_CODES:
        if text.lower() == name.lower():
            return name
    return text


def is_dicom_file(path: Path) -> bool:
    """Whether `path` starts like a DICOM Part 10 file (preamble + 'DICM') or ends in .dcm."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_dicom_ecg(path: str | os.PathLike):
    """(`EcgRecord`, dataset) for the rhythm group of a DICOM ECG waveform file."""
    pydicom = import_optional("pydicom", what="reading DICOM ECG waveforms")
    name = Path(path).name
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001 - pydicom raises InvalidDicomError, EOFError, ...
        raise DataError(f"cannot read {name} as DICOM ({type(exc).__name__}); pass an ECG waveform .dcm") from None
    groups = list(getattr(ds, "WaveformSequence", []) or [])
    if not groups:
        raise DataError(f"{name} has no Waveform Sequence; it is not a DICOM ECG waveform object")
    order = sorted(range(len(groups)), key=lambda i: (str(getattr(groups[i], "MultiplexGroupLabel", "")).upper()
                                                      != "RHYTHM", -int(groups[i].NumberOfWaveformSamples)))
    index = order[0]
    group = groups[index]
    try:
        values = ds.waveform_array(index)
    except Exception as exc:  # noqa: BLE001 - truncated or inconsistent waveform data
        raise DataError(f"{name}: waveform data cannot be decoded ({str(exc).splitlines()[0][:120]}); "
                        "the file may be truncated") from None
    leads, scale = [], []
    for ch in group.ChannelDefinitionSequence:
        src = ch.ChannelSourceSequence[0] if "ChannelSourceSequence" in ch else None
        leads.append(_lead_name(src.CodeMeaning if src is not None else f"ch{len(leads) + 1}"))
        units = ch.ChannelSensitivityUnitsSequence[0].CodeValue if "ChannelSensitivityUnitsSequence" in ch else "uV"
        scale.append(_UNIT_TO_MV.get(str(units).lower(), 1e-3))
    padding = getattr(group, "WaveformPaddingValue", None)
    sig = values.T.astype(np.float64) * np.asarray(scale)[:, None]
    if padding is not None:
        raw = np.frombuffer(group.WaveformData, dtype="<i2" if group.WaveformBitsAllocated == 16 else "<i1")
        raw = raw[:values.size].reshape(values.shape).T
        pad = int.from_bytes(bytes(padding)[:2], "little", signed=True) if isinstance(padding, bytes) else int(padding)
        sig[raw == pad] = np.nan
    return EcgRecord(leads, sig, float(group.SamplingFrequency), Path(path).stem), ds


def write_dicom_ecg(path: str | os.PathLike, leads: tuple[str, ...], signal_mv: np.ndarray, rate_hz: float, *,
                    provenance: Provenance, source=None) -> None:
    """Write (12, N) mV as a DICOM ECG waveform (12-lead IOD when N ≤ 16384, else General ECG), every
    computed lead marked as computed by `provenance`'s model and every input lead as measured."""
    import_optional("pydicom", what="writing DICOM ECG waveforms")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sig = np.asarray(signal_mv, dtype=np.float64)
    counts = np.where(np.isfinite(sig), np.clip(np.round(sig * 1000.0), PADDING + 1, 32767), PADDING).astype("<i2")
    sop_class = TWELVE_LEAD_ECG if sig.shape[1] <= TWELVE_LEAD_MAX_SAMPLES and 200 <= rate_hz <= 1000 else GENERAL_ECG
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    for kw in _COPY_KEYWORDS:
        if source is not None and kw in source:
            setattr(ds, kw, getattr(source, kw))
    ds.PatientName = ds.get("PatientName", "")
    ds.PatientID = ds.get("PatientID", "")
    ds.StudyInstanceUID = ds.get("StudyInstanceUID", generate_uid())
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "ECG", 1, 1
    ds.SeriesDescription = provenance.series_description()
    ds.Manufacturer, ds.ManufacturerModelName = "medge", provenance.tool
    ds.ContentDate = ds.get("StudyDate", "")
    ds.AcquisitionDateTime = ""
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformOriginality = "DERIVED"
    group.MultiplexGroupTimeOffset = 0
    group.NumberOfWaveformChannels = len(leads)
    group.NumberOfWaveformSamples = sig.shape[1]
    group.SamplingFrequency = f"{rate_hz:g}"
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformPaddingValue = int(PADDING).to_bytes(2, "little", signed=True)
    channels, notes = [], [_annotation(provenance.statement(), 0)]
    for number, lead in enumerate(leads, start=1):
        ch = Dataset()
        code = Dataset()
        code.CodeValue = f"5.6.3-9-{SCPECG_CODES[lead]}"
        code.CodingSchemeDesignator, code.CodingSchemeVersion = "SCPECG", "1.3"
        code.CodeMeaning = "Lead I (Einthoven)" if lead == "I" else f"Lead {lead}"
        ch.ChannelSourceSequence = Sequence([code])
        unit = Dataset()
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "uV", "UCUM", "microvolt"
        ch.ChannelSensitivity, ch.ChannelSensitivityUnitsSequence = "1", Sequence([unit])
        ch.ChannelSensitivityCorrectionFactor, ch.ChannelBaseline, ch.ChannelSampleSkew = "1", "0", "0"
        ch.WaveformBitsStored = 16
        ch.ChannelLabel = provenance.label(lead)
        if lead in provenance.computed:
            ch.ChannelDerivationDescription = provenance.short_derivation(lead)
        notes.append(_annotation(provenance.derivation(lead), number))
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformData = np.ascontiguousarray(counts.T).tobytes()
    ds.WaveformSequence = Sequence([group])
    ds.WaveformAnnotationSequence = Sequence(notes)
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)


def _annotation(text: str, channel: int):
    """A Waveform Annotation item on channel `channel` of group 1 (0: the whole group)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.UnformattedTextValue = text
    item.ReferencedWaveformChannels = [1, channel]
    item.AnnotationGroupNumber = 0
    return item
