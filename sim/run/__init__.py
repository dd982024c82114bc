"""One run from config to results: the recipe, its history, checkpoints, interrupts and console.

`recipe.run` is what `python -m sim` calls per job; `history` writes `history.csv`,
`summary.json` and `curves.png`; `checkpoint` saves and resumes; `interrupt` handles
Ctrl-C and SIGTERM; `console` keeps the output to one progress bar; `sweep` writes a
multirun's `sweep.csv`; `process_memory` keeps the driver flat across a sweep's jobs.
"""
