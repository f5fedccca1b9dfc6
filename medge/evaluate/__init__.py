"""The evaluation core: metrics, statistics, parity and the one gate every other room uses.

* `medge.evaluate.metrics`: task metrics (AUROC, sensitivity at specificity, Dice/IoU, accuracy),
  ECG per lead (one NaN rule) and fidelity.
* `medge.evaluate.statistics`: the bootstrap CI (scipy) and the latency summary.
* `medge.evaluate.parity`: the one comparison of two outputs and the one cosine.
* `medge.evaluate.gate`: `Gate` → `GateResult` and the budget table `DEFAULT_MAX_DROP`.

It imports only the common modules (errors) and numpy/scipy.
"""
