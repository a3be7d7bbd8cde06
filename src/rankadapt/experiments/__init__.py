"""Experiments: sweeps over methods, seeds, tasks and models at equal adapter budgets, reports, and the
source repositories' command lines. The top of the library: it runs recipes, nothing below imports it.

- :mod:`.sweep` / :mod:`.runner` — ``rankadapt sweep SWEEP.yaml``: the grid, one run directory per
  combination, finished runs skipped, interrupted ones resumed;
- :mod:`.report` / :mod:`.plots` / :mod:`.document` — ``rankadapt report RUNS_DIR``: Markdown +
  self-contained HTML;
- :mod:`.run_glue` — ``rankadapt run-glue``: the flags of the official ``run_glue.py`` scripts (each
  method module says which flags select it and which it reads).

Budgets (``method.budget``), loralib checkpoints and ``init_from`` are adapter work and live in
:mod:`rankadapt.methods` (``budget``, ``loralib``, ``init_from``).
"""
