"""Point-of-care chest X-ray triage: DICOM in over the network, a prioritised worklist that never
loses a study, DICOM SR out.

receiver (pynetdicom storage SCP) → store (fsync + SQLite, then success) → worklist (WAL queue,
priority only goes up) → worker (runtime + the model's preprocessing) → sr (highdicom TID 1500)
→ sender (C-STORE outbox with backoff).  `service` ties them together for ``medge xray``.
"""
