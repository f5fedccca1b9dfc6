"""Structured pruning before export: methods (`methods`), the pruner and its recovery fine-tune
(`pruner`, `recover`), the sparsity search (`search`), knowledge distillation (`distill`,
`distill_data`, `losses`) and the prune gate (`gate`, built on `medge.evaluate.Gate`)."""
