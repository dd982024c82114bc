"""Benchmarks of the harness against a plain-PyTorch FedAvg reference (`python -m sim.bench`).

    workloads.py  the benchmark settings, as override lists for `python -m sim`
    reference.py  `run_reference(cfg, run_dir)`: single-process FedAvg with the harness's
                  exact semantics (the correctness oracle; its history matches the harness's)
    measure.py    a harness run from outside: start-up, peak PSS of all its processes
    __main__.py   the command line: both runs per workload, bench.csv and a printed table
"""
