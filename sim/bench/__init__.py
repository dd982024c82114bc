"""Benchmarks of the harness against a plain-PyTorch FedAvg reference (`python -m sim.bench`).

    workloads.py  the benchmark settings, as override lists for `python -m sim`
    reference.py  `run_reference(cfg, run_dir)`: single-process FedAvg with the harness's
                  exact semantics (the correctness oracle; its history matches the harness's)
    pack_pool.py  the reference's packs at once in plain processes (its `parallel=True` run)
    measure.py    a harness run from outside: start-up, peak PSS of all its processes and of the driver
    __main__.py   the command line: the runs per workload, bench.csv and a printed table
"""
