"""`medge build`: the chain (`chain`: export → quantize with gate → compile → compare → profile),
the prune step before export (`prune_step`), the report (`report`) and the demo feeds for zoo
models fed by another model (`derived_feeds`)."""
