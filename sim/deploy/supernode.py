"""`python -m sim.deploy.supernode [flower-supernode options]`: Flower's SuperNode, polling faster.

    python -m sim.deploy.supernode --insecure --superlink 127.0.0.1:9092 --node-config "partition-id=0 ..."

Flower's own `flower-supernode` (the same options, the same code), with these changes
(shims of `sim/federation/flower_internals.py`):

- shim 9: with no message to pull it asks its SuperLink again after `SUPERNODE_POLL_S`
  (0.2 s) instead of 3 s, and looks for a ClientApp's reply as often instead of every
  0.5 s, so a deployed round no longer waits up to 3 s for its last SuperNode; the price
  is small requests to the SuperLink while idle (ten nodes: fifty a second). Given its own
  doorbell in `SIM_SUPERNODE_DOORBELL` (`sim/deploy/doorbell.py`), it waits there instead,
  at most `NODE_IDLE_POLL_S` (1 s), and the deployment's ServerApp rings it;
- shim 12: a message's objects not yet on the SuperLink are asked for again within 0.2 s
  instead of after 1, 2, 4... s;
- shim 13: given its SuperExec's doorbell in `SIM_SUPEREXEC_DOORBELL`, it rings it each
  time it has a message's task, so that SuperExec need not poll it often.

`sim.deploy` starts its SuperNodes this way, with both doorbells, unless told `--nodes flower`.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys

import sim  # noqa: F401  (offline environment first)
from sim.deploy.doorbell import DOORBELL_ENV, NODE_DOORBELL_ENV, NODE_IDLE_POLL_S, Doorbell, ring
from sim.federation.flower_internals import (ring_when_messages_arrive, shorten_object_pull_backoff,
                                             shorten_supernode_polls)


def main() -> int:
    """Run `flower-supernode` with the given arguments, its polls and pull retries shortened."""
    idle_wait = None
    if os.environ.get(NODE_DOORBELL_ENV):  # rung by the ServerApp once it has pushed messages
        bell = Doorbell(os.environ[NODE_DOORBELL_ENV])
        idle_wait = functools.partial(bell.wait, NODE_IDLE_POLL_S)
        atexit.register(lambda: print(f"[sim.deploy.supernode] doorbell: woken {bell.rings} times by the ServerApp, "
                                      f"{bell.timeouts} polls of {NODE_IDLE_POLL_S} s without", file=sys.stderr))
    shorten_supernode_polls(idle_wait=idle_wait)
    shorten_object_pull_backoff()
    if os.environ.get(DOORBELL_ENV):
        ring_when_messages_arrive(functools.partial(ring, os.environ[DOORBELL_ENV]))
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    return flower_supernode() or 0


if __name__ == "__main__":
    sys.exit(main())
