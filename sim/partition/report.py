"""What a partition looks like: per-client label counts as CSV and as a plot.

Beside every partition manifest `<stem>.npz` (`sim.partition.manifest`) two files are written:

- `<stem>_label_counts.csv`: one row per client with the columns
  `client_id, n_train, n_val, label_0, ..., label_{C-1}`, where `label_k` counts the
  client's examples of class k over train and validation together, so each row's
  `label_*` columns sum to `n_train + n_val`.
- `<stem>_labels.png`: left, stacked bars of the class counts of the first 100 clients
  (all of them when there are fewer); right, a histogram of client sizes over all clients.

Counting is vectorised (one `np.bincount`), so 50,000 clients take well under a second.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sim.partition.manifest import Partition

MAX_PLOTTED_CLIENTS = 100  # the bar chart shows at most this many clients


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`.

    Readers never see a half-written file, and concurrent writers of the same path leave
    one complete version behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as handle:  # unlike mkstemp, keeps the usual umask permissions
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def label_counts(
    indices: np.ndarray, offsets: np.ndarray, labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """Count the labels of every client of one CSR index table.

    Returns an int64 array of shape `(num_clients, num_classes)`: entry `[c, k]` is how
    many of `indices[offsets[c]:offsets[c + 1]]` have label k.
    """
    num_clients = len(offsets) - 1
    client_of = np.repeat(np.arange(num_clients, dtype=np.int64), np.diff(offsets))
    flat = client_of * num_classes + np.asarray(labels, dtype=np.int64)[indices]
    counts = np.bincount(flat, minlength=num_clients * num_classes)
    return counts.reshape(num_clients, num_classes)


def partition_label_counts(
    partition: Partition, labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """Per-client class counts over train and validation examples together."""
    train = label_counts(partition.train_indices, partition.train_offsets, labels, num_classes)
    val = label_counts(partition.val_indices, partition.val_offsets, labels, num_classes)
    return train + val


def write_label_counts_csv(partition: Partition, counts: np.ndarray, path: Path) -> None:
    """Write `client_id, n_train, n_val, label_0..label_{C-1}` (one row per client)."""
    num_classes = counts.shape[1]
    table = np.column_stack(
        [
            np.arange(partition.num_clients, dtype=np.int64),
            partition.train_sizes(),
            partition.val_sizes(),
            counts,
        ]
    )
    columns = ["client_id", "n_train", "n_val"] + [f"label_{k}" for k in range(num_classes)]
    import pandas as pd  # the same bytes as np.savetxt(fmt="%d"), about twice as fast for 1,000,000 rows

    text = pd.DataFrame(table, columns=columns).to_csv(index=False, lineterminator="\n")
    atomic_write(path, text.encode())


def plot_label_distribution(counts: np.ndarray, path: Path, title: str = "") -> None:
    """Plot stacked per-class bars for the first clients and a histogram of client sizes.

    Uses the Agg canvas directly (no pyplot state), so it is safe in any process.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    num_clients, num_classes = counts.shape
    shown = counts[:MAX_PLOTTED_CLIENTS]
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_bar, ax_hist = fig.subplots(1, 2, width_ratios=[3, 1])

    cmap = colormaps["tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "viridis"]
    if num_classes <= 20:
        colors = [cmap(k) for k in range(num_classes)]
    else:
        colors = [cmap(k / (num_classes - 1)) for k in range(num_classes)]
    x = np.arange(len(shown))
    bottom = np.zeros(len(shown))
    for k in range(num_classes):
        ax_bar.bar(
            x, shown[:, k], bottom=bottom, width=0.9, color=colors[k], label=str(k), linewidth=0
        )
        bottom += shown[:, k]
    which = "all" if num_clients <= MAX_PLOTTED_CLIENTS else f"first {len(shown)} of"
    ax_bar.set_title(f"Labels per client ({which} {num_clients} clients, train + val)")
    ax_bar.set_xlabel("client id")
    ax_bar.set_ylabel("examples")
    ax_bar.set_xlim(-0.5, len(shown) - 0.5)
    if num_classes <= 20:
        ax_bar.legend(title="label", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))

    sizes = counts.sum(axis=1)
    ax_hist.hist(sizes, bins=min(50, max(1, len(np.unique(sizes)))), color="0.4")
    ax_hist.set_title(f"Client sizes (all {num_clients})")
    ax_hist.set_xlabel("examples per client")
    ax_hist.set_ylabel("clients")
    if title:
        fig.suptitle(title, fontsize="small")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())


def report_paths(manifest: Path) -> tuple[Path, Path]:
    """The CSV and PNG paths that belong to a manifest `<stem>.npz`."""
    manifest = Path(manifest)
    stem = manifest.with_suffix("")
    return Path(f"{stem}_label_counts.csv"), Path(f"{stem}_labels.png")


def write_report(
    partition: Partition, labels: np.ndarray, num_classes: int, manifest: Path
) -> tuple[Path, Path]:
    """Write the label-count CSV and the plot beside `manifest`; return their paths."""
    csv_path, png_path = report_paths(manifest)
    counts = partition_label_counts(partition, labels, num_classes)
    write_label_counts_csv(partition, counts, csv_path)
    plot_label_distribution(counts, png_path, title=Path(manifest).stem)
    return csv_path, png_path
