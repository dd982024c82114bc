"""The configuration: value rules, validation before any work, and composition outside `python -m sim`.

`rules` says what a value may be and words the one-line error; `validate` checks a whole
resolved config against them; `compose` builds the Hydra config of a run that `flwr run .`
or `sim.deploy` starts. The settings themselves live in `conf/` (Hydra's config tree).
"""
