"""`python -m sim.bench.partitions`: how long natural partitions of many ids take to build.

    python -m sim.bench.partitions                      # 1,000,000 ids, one example each
    python -m sim.bench.partitions --ids 3597 --examples 814277   # FEMNIST-shaped

For one generated id column (`--examples` rows, `--ids` distinct ids, labels from 10
classes, seed 0), side by side in one process:

- `build_s`: `sim.partition.natural` (`natural_csr` + `split_validation_csr`), the split
  a run computes;
- `manifest_s`: `load_or_create_partition` into a fresh temporary folder: the split, the
  `.npz` manifest, the label-count CSV and the plot, as a run's step 2 does it;
- `report_s`: the CSV and the plot alone (`write_report`);
- `flwr_s`: flwr-datasets' own `NaturalIdPartitioner` computing its partition-id ->
  indices map on the same shuffled column (the oracle the tests compare against), and
  `flwr_s / build_s`. `--no-flwr` skips it.

Target (issue 11): a natural partition of 1,000,000 ids built in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

import numpy as np
from omegaconf import OmegaConf

log = logging.getLogger("sim.bench.partitions")


def measure(examples: int, ids: int, val_fraction: float, flwr: bool) -> dict[str, float]:
    """Timings (seconds) of the natural partition of a generated column; see the module doc."""
    from sim.partition.manifest import load_or_create_partition
    from sim.partition.natural import natural_csr, split_validation_csr
    from sim.partition.report import write_report

    rng = np.random.default_rng(0)
    column = np.concatenate([np.arange(ids), rng.integers(0, ids, examples - ids)]) if examples > ids else np.arange(ids)
    labels = rng.integers(0, 10, len(column))
    row: dict[str, float] = {"examples": len(column), "ids": ids}

    started = time.perf_counter()
    perm = np.random.default_rng(0).permutation(len(column))
    csr = natural_csr(column, perm, ids, "id")
    split_validation_csr(*csr, val_fraction, 0)
    row["build_s"] = time.perf_counter() - started

    cfg = OmegaConf.create({"scheme": "natural", "by": "id", "val_fraction": val_fraction})
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        partition = load_or_create_partition(
            labels, OmegaConf.merge(cfg, {"dir": scratch}), "generated", 10, ids, 0, ids=column
        )
        row["manifest_s"] = time.perf_counter() - started
        started = time.perf_counter()
        write_report(partition, labels, 10, partition.path)
        row["report_s"] = time.perf_counter() - started

    if flwr:
        from datasets import Dataset
        from flwr_datasets.partitioner import NaturalIdPartitioner

        oracle = NaturalIdPartitioner(partition_by="id")
        oracle.dataset = Dataset.from_dict({"id": column[perm]})
        started = time.perf_counter()
        assert oracle.num_partitions == ids
        oracle._create_partition_id_to_indices()  # what its first load_partition computes for all clients
        row["flwr_s"] = time.perf_counter() - started
        row["flwr_over_build"] = row["flwr_s"] / row["build_s"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure, print one JSON row."""
    parser = argparse.ArgumentParser(prog="python -m sim.bench.partitions", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1_000_000, help="rows of the id column")
    parser.add_argument("--ids", type=int, default=1_000_000, help="distinct ids (= clients); <= examples")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="partition.val_fraction")
    parser.add_argument("--no-flwr", action="store_true", help="skip flwr-datasets' NaturalIdPartitioner")
    args = parser.parse_args(argv)
    if not 1 <= args.ids <= args.examples:
        parser.error("need 1 <= --ids <= --examples")
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(measure(args.examples, args.ids, args.val_fraction, not args.no_flwr)))


if __name__ == "__main__":
    main()
