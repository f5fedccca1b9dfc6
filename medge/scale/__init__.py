"""Scale-out: a models × targets × precisions build matrix (local processes or Ray) and a device farm.

``spec`` reads and validates MATRIX.yaml, ``cell`` runs one cell as child processes, ``engines``
schedules cells (local or Ray), ``results`` writes results.jsonl/md/json/png, ``farm`` reads FARM.yaml and
leases its devices, ``farm_profile`` profiles bundles on them, ``matrix_farm`` is a matrix's on-device step
with ``--farm``.  Importing this package is light.
"""
