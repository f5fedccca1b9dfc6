"""Fixtures for the X-ray app tests: a real classifier bundle, the study set, servers, a sink SCP."""

from __future__ import annotations

from pathlib import Path

import pytest
from xray_helpers import (
    UNFLAGGED_SEED,
    URGENT_SEED,
    Server,
    SinkSCP,
    StudySet,
    compiled_tiny_bundle,
    write_study,
)


@pytest.fixture(scope="session")
def xray_bundle(zoo_onnx, tmp_path_factory) -> Path:
    """`cxr-densenet-tiny` compiled for `local` (ONNX Runtime)."""
    return compiled_tiny_bundle(zoo_onnx, tmp_path_factory, "local", "xray_bundle")


@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> StudySet:
    """DX/CR frontal MONOCHROME2 and MONOCHROME1, JPEG 2000, lateral, CT slice, a study whose
    preprocessing raises (unknown VOI LUT function), and a truncated file."""
    import pydicom

    folder = tmp_path_factory.mktemp("xray_studies")
    s = StudySet(folder)
    s.uids["urgent_dx"] = write_study(s.path("urgent_dx"), seed=URGENT_SEED, modality="DX", accession="ACC-URG")
    s.uids["plain_cr_mono1"] = write_study(s.path("plain_cr_mono1"), seed=UNFLAGGED_SEED, modality="CR",
                                           photometric="MONOCHROME1", bits_stored=14, rescale_slope=2.0,
                                           rescale_intercept=-100.0, junk_high_bits=True)
    s.uids["urgent_j2k"] = write_study(s.path("urgent_j2k"), seed=URGENT_SEED, compress="jpeg2000")
    s.uids["lateral"] = write_study(s.path("lateral"), seed=URGENT_SEED, view="LL")
    s.uids["ct"] = write_study(s.path("ct"), seed=2, modality="CT")
    s.uids["window_error"] = write_study(s.path("window_error"), seed=UNFLAGGED_SEED)
    ds = pydicom.dcmread(s.path("window_error"))
    ds.VOILUTFunction = "NONSUCH"  # preprocessing raises on this study
    ds.save_as(s.path("window_error"), enforce_file_format=True)
    whole = s.path("urgent_dx").read_bytes()
    trunc = pydicom.dcmread(s.path("urgent_dx"))
    trunc.SOPInstanceUID = trunc.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    trunc.save_as(s.path("truncated"), enforce_file_format=True)
    s.path("truncated").write_bytes(s.path("truncated").read_bytes()[: len(whole) // 2])
    s.uids["truncated"] = str(trunc.SOPInstanceUID)
    return s


@pytest.fixture
def start_server():
    """`start_server(args, report=None) -> Server`; every server is stopped at the end of the test."""
    servers: list[Server] = []

    def start(args: list[str], report: Path | None = None) -> Server:
        server = Server([str(a) for a in args], report)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(30)


@pytest.fixture
def sink():
    """A real storage SCP that keeps the SRs it receives."""
    scp = SinkSCP()
    yield scp
    scp.close()
