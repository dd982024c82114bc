"""`python -m sim.deploy.supernode [flower-supernode options]`: Flower's SuperNode, polling faster.

    python -m sim.deploy.supernode --insecure --superlink 127.0.0.1:9092 --node-config "partition-id=0 ..."

Flower's own `flower-supernode` (the same options, the same code), with two changes
(shims 9 and 12 of `sim/federation/flower_internals.py`): with no message to pull it asks its
SuperLink again after `SUPERNODE_POLL_S` (0.2 s) instead of 3 s, and it looks for a
ClientApp's reply as often instead of every 0.5 s; a message's objects not yet on the
SuperLink are asked for again within 0.2 s instead of after 1, 2, 4... s. A deployed round no longer waits up to
3 s for its last SuperNode to notice its message; the price is more small requests to
the SuperLink while nodes are idle (ten nodes: fifty a second). Given a doorbell path in
`SIM_SUPEREXEC_DOORBELL` (`sim/deploy/doorbell.py`), it also rings its SuperExec each time it
has stored a message (shim 13), so that SuperExec need not poll it often. `sim.deploy` starts
its SuperNodes this way unless told `--nodes flower`.
"""

from __future__ import annotations

import functools
import os
import sys

import sim  # noqa: F401  (offline environment first)
from sim.deploy.doorbell import DOORBELL_ENV, ring
from sim.federation.flower_internals import (ring_when_messages_arrive, shorten_object_pull_backoff,
                                             shorten_supernode_polls)


def main() -> int:
    """Run `flower-supernode` with the given arguments, its polls and pull retries shortened."""
    shorten_supernode_polls()
    shorten_object_pull_backoff()
    if os.environ.get(DOORBELL_ENV):
        ring_when_messages_arrive(functools.partial(ring, os.environ[DOORBELL_ENV]))
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    return flower_supernode() or 0


if __name__ == "__main__":
    sys.exit(main())
