"""The warm-up of `sim.deploy.warm_exec`'s template process, done by importing this module.

The forkserver that every ClientApp (and a SuperLink's ServerApp) task is forked from, a
SuperExec's own or a local deployment's zygote (`sim/deploy/zygote.py`), imports this
module once, before its first fork: it imports the project's ClientApp module (and with it torch, Flower,
Hydra and every library the app uses), then puts back what that import changed in Flower
(the app module removes the simulation engine's pickup floor when imported), so each task
starts from Flower as installed and imports its app from its FAB, as `flwr-clientapp` does.
Two changes are made on purpose: `run_clientapp` returns an installed FAB's folder at once
instead of unzipping and re-hashing the FAB for every task (shim 8 of flower_internals),
and a task asks again for objects its SuperNode is still pulling within 0.2 s (shim 12).
Libraries a task imports only when it runs (httpcore, PIL) are imported here too.
"""

from importlib import import_module

import httpcore  # noqa: F401  (httpx imports it when a task opens its Runtime API client: 0.25 s a task)

from sim.deploy.processes import clientapp_module
from sim.federation.flower_internals import install_fabs_once, restore_message_pickup_floor, shorten_object_pull_backoff

import_module(clientapp_module())
import_module("sim.data.image_folder")  # and with it PIL, which a task's data load imports (0.08 s a task)
restore_message_pickup_floor()
install_fabs_once()  # a task finds its run's FAB installed (by the first task) without unzipping it again
shorten_object_pull_backoff()  # a task asks again within 0.2 s for objects its SuperNode is still pulling
