"""Starting, attaching to and stopping Ray for one run.

With `resources.address` unset the harness starts a private Ray instance sized by
`resources.ray_cpus` / `ray_gpus`; with an address it attaches to that cluster and
leaves it running afterwards. The dashboard is never started, Ray's usage stats are off
(see `sim/__init__.py`), and worker logs reach the console only when `verbose=true`.
No process of the run imports pyarrow for Ray's Arrow serializers (shim 7 of
`sim/federation/flower_internals.py`, installed in the driver and by each worker's setup hook).
In a sweep, a job that ended well leaves Ray and its idle workers up for the next job with
the same resources (`keep_ray_between_runs`, shim 11).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from sim import OFFLINE_ENVIRONMENT
from sim.config.rules import counted, error

log = logging.getLogger(__name__)
WORKER_SETUP_HOOK = "sim.federation.flower_internals.ray_worker_setup"  # run by every worker of a run


def client_resources(resources) -> dict[str, float]:
    """Flower's `client_resources` from the `resources` config node."""
    return {"num_cpus": float(resources.client_cpus), "num_gpus": float(resources.client_gpus)}


def ray_init_kwargs(resources, verbose: bool) -> dict[str, Any]:
    """Arguments for `ray.init` from the `resources` config node."""
    pythonpath = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    env_vars = {**OFFLINE_ENVIRONMENT, "PYTHONPATH": pythonpath}
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": bool(verbose),
        "runtime_env": {"env_vars": env_vars, "worker_process_setup_hook": WORKER_SETUP_HOOK},
    }
    if resources.address:
        kwargs["address"] = str(resources.address)
        return kwargs
    # "local": always a new instance; None would attach to a cluster that `ray start` (or
    # RAY_ADDRESS) left on this machine, and then refuse num_cpus/num_gpus
    kwargs["address"] = "local"
    if resources.ray_cpus is not None:
        kwargs["num_cpus"] = int(resources.ray_cpus)
    if resources.ray_gpus is not None:
        kwargs["num_gpus"] = int(resources.ray_gpus)
    return kwargs


def concurrency(resources) -> int:
    """Client tasks that run at once: min(cpus / client_cpus, gpus / client_gpus), per node.

    This is Flower's own actor-pool arithmetic, so it is exactly the pool it will build.
    """
    from sim.federation.flower_internals import actor_pool_size

    return actor_pool_size(client_resources(resources))


def check_clients_fit(resources) -> None:
    """Raise ConfigError (one line) when no node of the running Ray can host one client task.

    Flower would otherwise build an empty actor pool and end in a traceback. A private
    instance is checked earlier, by `sim.config.validate`; this catches an attached cluster.
    """
    import ray

    try:
        if concurrency(resources) > 0:
            return
    except ValueError:  # Flower raises "ActorPool is empty" itself
        pass
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive", True) and n.get("Resources")]
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    where = f"the Ray cluster at {resources.address}" if resources.address else "this Ray instance"
    found = f"(its largest node has {counted(cpus, 'CPU')} and {counted(gpus, 'GPU')})"
    if float(resources.client_cpus) > cpus:
        raise error("resources.client_cpus", resources.client_cpus, f"fits on no node of {where} {found}",
                    "no client would fit; lower resources.client_cpus or use a cluster with bigger nodes")
    raise error("resources.client_gpus", resources.client_gpus, f"fits on no node of {where} {found}",
                "no client would fit; use resources.client_gpus=0 or a cluster with GPUs")


_kept: dict[str, Any] = {"between_runs": False, "init": None, "pids": set()}  # see keep_ray_between_runs


def keep_ray_between_runs(keep: bool) -> None:
    """Leave Ray and a run's idle workers up for this process's next run (a sweep's jobs).

    The next `ray_session` with the same Ray settings then neither starts Ray (or attaches)
    again nor new workers (shim 11 of `sim/federation/flower_internals.py`); other settings,
    or a run that failed, stop what was kept first. Ray's own exit handler stops it with
    the process.
    """
    _kept["between_runs"] = keep


def kept_ray_pids() -> set[int]:
    """Pids of the private Ray this process keeps between runs (its daemons: the next run's own)."""
    return set(_kept["pids"]) if _kept["init"] is not None else set()


def _stop_ray() -> None:
    import ray

    from sim.federation.flower_internals import release_kept_actors

    if ray.is_initialized():
        release_kept_actors()
        ray.shutdown()
    _kept.update(init=None, pids=set())


@contextmanager
def ray_session(resources, verbose: bool) -> Iterator[None]:
    """Start (or attach to) Ray for the duration of the block; disconnect after.

    Disconnecting from an existing cluster leaves the cluster itself running. With
    `keep_ray_between_runs(True)` a run that ends well leaves Ray up for the next.
    """
    import psutil
    import ray

    from sim.federation.flower_internals import kept_actor_count, keep_actors_between_runs, skip_ray_arrow_serializers

    settings = (str(resources), verbose)  # the config Ray was started from (its kwargs read sys.path)
    if not (ray.is_initialized() and _kept["init"] == settings):
        _stop_ray()
        skip_ray_arrow_serializers()  # before ray.init builds the driver's serialization context
        kwargs = ray_init_kwargs(resources, verbose)
        log.debug("ray.init(%s)", kwargs)
        before = {child.pid for child in psutil.Process().children()}
        ray.init(**kwargs)
        _kept["pids"] = {child.pid for child in psutil.Process().children()} - before
    else:
        log.info("Ray kept from the previous job, with %d idle worker(s)", kept_actor_count())
    keep = keep_actors_between_runs(_kept["between_runs"])
    try:
        check_clients_fit(resources)
        yield
    except BaseException:
        _stop_ray()
        raise
    if keep:
        _kept["init"] = settings
    else:
        _stop_ray()
