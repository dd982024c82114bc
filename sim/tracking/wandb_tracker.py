"""Weights & Biases: offline by default, files under `<run dir>/wandb/`.

    wandb sync results/2026-11-28/12-00-00/wandb/offline-run-*    # upload later, when online
    python -m sim logger=wandb logger.wandb.mode=online             # or log online (needs `wandb login`)

`mode` defaults to `$WANDB_MODE` or else `offline`: nothing contacts a host unless the
user says `online`. W&B's error reporting is off (`WANDB_ERROR_REPORTING=false`, set on
import of `sim`), and so are its system monitor (unless `system_metrics=true`), git and
code capture and console capture (the progress bar stays as it is). Config: the
flattened resolved config and `overrides`; history: every history.csv column per round
(step = round); summary: summary.json's figures; an artifact of type `results` with
curves.png, summary.json and the partition plot. A multirun's jobs share one W&B group,
the sweep. A resume reopens the same run id (offline: a new `offline-run-*` folder of
that id, holding only the rounds the first one lacks). W&B writes its offline file every
`FLUSH_INTERVAL_S`, and a killed process loses what was not yet written, so a resume
reads the offline files (`offline_records`) to learn the last round they really hold.
"""

from __future__ import annotations

import json
import re
import secrets
import struct
from pathlib import Path
from typing import Any, Iterator, Mapping

from sim.tracking.base import RunInfo, Tracker

MODES = ("offline", "online", "disabled")
FLUSH_INTERVAL_S = 2.0  # W&B writes its offline file this often (its default: 15 s)
_BLOCK, _HEADER = 32768, 7  # the .wandb file: LevelDB-log framing, 32 KiB blocks, 7-byte chunk headers


def offline_files(run_dir: Path, run_id: str) -> list[Path]:
    """The `.wandb` files of run `run_id` under `run_dir/wandb/`, oldest first.

    W&B names a run's folder `offline-run-<YYYYmmdd_HHMMSS>-<id>`, and a folder of the same
    run started within the same second `...-<id>-1`, `-2`, ...
    """
    pattern = re.compile(rf"offline-run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?")
    found = []
    for path in Path(run_dir, "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"):
        if match := pattern.fullmatch(path.parent.name):
            found.append(((match[1], int(match[2] or 0)), path))
    return [path for _, path in sorted(found)]


def offline_records(run_dir: Path, run_id: str) -> Iterator[Any]:
    """Every record of W&B run `run_id`'s offline files under `run_dir/wandb/`, oldest folder first.

    A `.wandb` file is W&B's transaction log: a header (':W&B', 0xBEE1, version), then
    32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full,
    2 first, 3 middle, 4 last) holding `wandb_internal_pb2.Record` messages. A chunk cut
    short (a killed writer) ends the file.
    """
    from wandb.proto import wandb_internal_pb2

    for path in offline_files(run_dir, run_id):
        data = path.read_bytes()
        if data[:4] != b":W&B":
            continue
        pos, pending = _HEADER, b""
        while pos + _HEADER <= len(data):
            left = _BLOCK - pos % _BLOCK
            _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
            if left < _HEADER or (length == 0 and kind == 0):  # padding to the end of the block
                pos += left
                continue
            if pos + _HEADER + length > len(data):
                break
            chunk, pos = data[pos + _HEADER : pos + _HEADER + length], pos + _HEADER + length
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):
                yield wandb_internal_pb2.Record.FromString(pending)
                pending = b""


def offline_history(run_dir: Path, run_id: str) -> list[tuple[int, dict[str, Any]]]:
    """[(step, {key: value})] logged to W&B run `run_id`, read from its offline files."""
    rows = []
    for record in offline_records(run_dir, run_id):
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            rows.append((record.history.step.num, {k: v for k, v in items.items() if not k.startswith("_")}))
    return rows


class WandbTracker(Tracker):
    """Logs through `wandb.init(...)`'s run object."""

    requires = "wandb"
    extra = "wandb"

    def __init__(self, mode: str = "offline", project: str = "sim", entity: str | None = None,
                 system_metrics: bool = False):
        self.mode = mode
        self.project = project
        self.entity = entity
        self.system_metrics = system_metrics
        self.run = None

    def start(self, info: RunInfo, state: dict[str, Any]) -> int | None:
        import wandb

        settings = wandb.Settings(
            mode=self.mode, silent=True, console="off", disable_git=True, disable_code=True,
            x_disable_stats=not self.system_metrics, x_disable_meta=not self.system_metrics,
            x_disable_machine_info=not self.system_metrics, x_save_requirements=False,
            x_transaction_log_flush_interval=FLUSH_INTERVAL_S,
        )
        resumed = "run_id" in state
        state.setdefault("run_id", secrets.token_hex(4))  # W&B ids: lowercase letters and digits
        state.setdefault("group", info.group)
        state.setdefault("name", info.label)
        self.run = wandb.init(
            project=self.project, entity=self.entity, dir=str(info.run_dir), id=state["run_id"], resume="allow",
            group=state["group"], name=state["name"], job_type="sweep-job" if state["group"] else "run",
            settings=settings, reinit="finish_previous",
        )
        if resumed and self.mode == "offline":  # what the offline files hold, not what was sent
            return max((step for step, _ in offline_history(info.run_dir, state["run_id"])), default=-1)
        return None

    def log_params(self, params: Mapping[str, Any], overrides: tuple[str, ...]) -> None:
        self.run.config.update({**params, "overrides": " ".join(overrides)}, allow_val_change=True)

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_summary(self, summary: Mapping[str, Any], files: list[Path]) -> None:
        import wandb

        self.run.summary.update(dict(summary))
        if files:
            artifact = wandb.Artifact(f"results-{self.run.id}", type="results")
            for path in files:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
