"""Wearable ECG app: 3-lead serial stream → live 12-lead reconstruction, fit, WFDB/DICOM I/O.

Modules: `protocol` (medge wire frames), `cyton` (OpenBCI Cyton packets), `serial_reader`
(receiver rules, port reading), `simulator` (device simulator), `filters` (stateful filters),
`reconstruct` (windows, cross-fade, lead derivation, metrics), `ecg_model` (model loading),
`io_wfdb`, `io_dicom`, `plot` (12-lead paper plot), `fit` (training + linear baseline),
`stream` (the live app).  The wire format is documented in docs/ecg-protocol.md.
"""
