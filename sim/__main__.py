"""`python -m sim [overrides]`: one federated simulation (or a sweep with -m).

    python -m sim                                   # CIFAR-10, 100 clients, FedAvg
    python -m sim dataset=synthetic num_rounds=3    # seconds, no files needed
    python -m sim partition=dirichlet partition.alpha=0.3 client.epochs=2
    python -m sim -m client.lr=0.01,0.05 seed=0,1   # a sweep under results/multirun/
"""

import os
import shutil
import sys
from contextlib import suppress
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import sim  # noqa: F401  (switches off telemetry before flwr/ray are imported)

# A W&B service inherited from the process that launched us (a notebook, a test) is not this
# run's: sharing it would outlive a killed run and hold its run id; logger=wandb starts its own.
os.environ.pop("WANDB_SERVICE", None)
from sim.data import DataError
from sim.run.sweep import FAILED_JOBS
from sim.errors import RunAborted
from sim.run.process_memory import limit_malloc_arenas, release_freed_memory
from sim.config.validate import ConfigError, validate

USER_ERRORS = (ConfigError, DataError)  # bad input: one line, exit code 2
EXIT_BAD_INPUT = 2
EXIT_RUN_ABORTED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def _remove_if_untouched(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but Hydra's own files (and a header-only history.csv)."""
    if not run_dir.is_dir():
        return

    def untouched(path: Path) -> bool:  # Hydra's own files, or a history.csv with its header only
        if path.name == "history.csv" and path.is_file():
            return len(path.read_text().splitlines()) <= 1
        return path.name in {".hydra", "__main__.log"}

    if all(untouched(p) for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        with suppress(OSError):
            run_dir.parent.rmdir()  # the date folder, when this run was its only one


def saved_config(run_dir: Path) -> DictConfig:
    """The resolved config a run directory was made with (for `resume=`)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        raise ConfigError(f"resume={run_dir} is not a run directory: {path} does not exist")
    return OmegaConf.load(path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Validate, then run the configured simulation; return the final central accuracy."""
    from sim.run.console import quiet_libraries

    quiet_libraries(cfg.get("verbose") is True)  # before flwr and ray are imported and log
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from sim.federation.ray_runtime import keep_ray_between_runs

        keep_ray_between_runs(True)  # a sweep's jobs share one Ray and its workers (same Ray settings)
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.get("fail_fast") is True and FAILED_JOBS:
        print(f"error: sweep stopped: job {FAILED_JOBS[0]} failed and fail_fast=true", file=sys.stderr)
        _remove_if_untouched(run_dir)
        sys.exit(EXIT_RUN_ABORTED)  # SystemExit passes Hydra's per-job error handling: the sweep ends
    try:
        validate(cfg)
        resume = bool(cfg.resume)
        if resume:
            cfg = saved_config(Path(cfg.resume))
            validate(cfg)
        from sim.run.recipe import run

        return run(cfg, run_dir, resume=resume)  # Ctrl-C/SIGTERM: see sim/run/interrupt.py
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the job is marked failed in sweep.csv (its config stays); the sweep goes on
        _remove_if_untouched(run_dir)
        sys.exit(EXIT_BAD_INPUT)
    except RunAborted as error:
        print(f"error: {error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(EXIT_RUN_ABORTED)
    except KeyboardInterrupt:  # Ctrl-C outside the rounds (during them, sim/run/interrupt.py stops the run)
        print("interrupted by SIGINT outside the training rounds; finished rounds, if any, are in history.csv",
              file=sys.stderr)
        _remove_if_untouched(run_dir)
        sys.exit(EXIT_INTERRUPTED)  # in a sweep too: SystemExit ends the sweep
    finally:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            release_freed_memory()  # before sweep.csv records the driver's memory; the next job starts flat


if __name__ == "__main__":
    limit_malloc_arenas()
    main()
