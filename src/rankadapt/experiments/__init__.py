"""Experiments: sweeps over methods, seeds, tasks and models at equal adapter budgets, reports, the
source repositories' command lines, and adapters from elsewhere.

- :mod:`.budget` — ``method.budget: N`` → each method's rank settings (pure functions);
- :mod:`.sweep` — ``rankadapt sweep SWEEP.yaml``: the grid, one run directory per combination,
  finished runs skipped, interrupted ones resumed;
- :mod:`.report` / :mod:`.plots` — ``rankadapt report RUNS_DIR``: Markdown + self-contained HTML;
- :mod:`.compat` — ``rankadapt run-glue``: the flags of the official ``run_glue.py`` scripts;
- :mod:`.loralib` — microsoft/LoRA ``loralib`` checkpoints (``lora_A``/``lora_B`` keys), both ways;
- :mod:`.init_from` — ``init_from: RUN_DIR``: start a run from another run's adapter.

Nothing is imported here eagerly: ``rankadapt.recipes.finetune`` imports :mod:`.budget` and :mod:`.init_from`,
and :mod:`.sweep` imports ``rankadapt.recipes.finetune``.
"""
