"""`python -m sim [overrides]`: one federated simulation (or a sweep with -m).

    python -m sim                                   # CIFAR-10, 100 clients, FedAvg
    python -m sim dataset=synthetic num_rounds=3    # seconds, no files needed
    python -m sim partition=dirichlet partition.alpha=0.3 client.epochs=2
    python -m sim -m client.lr=0.01,0.05 seed=0,1   # a sweep under results/multirun/
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import sim  # noqa: F401  (switches off telemetry before flwr/ray are imported)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the configured simulation; return the final central accuracy for sweepers."""
    from sim.console import quiet_libraries

    quiet_libraries(cfg.verbose)  # before flwr and ray are imported and log
    from sim.run import run

    return run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
