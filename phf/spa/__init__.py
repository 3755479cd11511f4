"""SPA (Kim et al. 2024) as a finetuning stage: self-generated preference pairs, DPO with self-refinement,
rounds. ``phf.spa.pairs`` (prompt pool, sampling, labelers), ``phf.spa.train_dpo`` (the DPO loop),
``phf.spa.rounds`` (the ``phf-spa`` runner). The loss (DPO and label smoothing) is in
``phf.objectives.preference``; its hyperparameters live in the ``objective=dpo`` registry entry
(``phf.objectives.dpo.DPO``, a ``PreferenceObjective``).
"""
