"""Scale-out: a models × targets × precisions build matrix (local processes or Ray) and a device farm.

``spec`` reads and validates MATRIX.yaml, ``cell`` runs one cell as child processes, ``engines``
schedules cells (local or Ray), ``results`` writes results.jsonl/md/json/png, ``farm`` leases the
devices of FARM.yaml and profiles bundles on them.  Importing this package is light.
"""
