"""The warm-up of `sim.deploy.warm_exec`'s template process, done by importing this module.

The forkserver that every ClientApp task is forked from imports this module once, before
its first fork: it imports the project's ClientApp module (and with it torch, Flower,
Hydra and every library the app uses), then puts back what that import changed in Flower
(the app module removes the simulation engine's pickup floor when imported), so each task
starts from Flower as installed and imports its app from its FAB, as `flwr-clientapp` does.
One change is made on purpose: `run_clientapp` returns an installed FAB's folder at once
instead of unzipping and re-hashing the FAB for every task (shim 8 of flower_internals).
"""

from importlib import import_module

from sim.deploy.processes import clientapp_module
from sim.federation.flower_internals import install_fabs_once, restore_message_pickup_floor

import_module(clientapp_module())
restore_message_pickup_floor()
install_fabs_once()  # a task finds its run's FAB installed (by the first task) without unzipping it again
