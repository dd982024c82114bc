"""Every private Flower, Ray-backend and flwr-datasets internal the harness touches.

Everything else in `sim` uses the libraries' public APIs; what cannot, goes through this
module, so a library upgrade is checked and adapted in one file. Each internal is pinned:
`PINNED_SOURCES` holds the SHA-256 of the source of every function we replace, wrap or
read, as installed when the shim was written (flwr 1.42.0, flwr-datasets 0.6.1, ray 2.55.1), and
`tests/unit/test_flower_internals.py` fails as soon as one of them changes.

The shims:

1. **Message pickup without a floor** (`remove_message_pickup_floor`). Flower's simulation
   engine moves a message from the LinkState to the Ray workers in
   `vce_api.add_messages_to_queue`, a thread that polls every node and then sleeps
   `f_stop.wait(0.1)`; the ServerApp's `InMemoryGrid.send_and_receive` polls for replies
   and sleeps `pull_interval` (0.1 s by default). Each round of a run therefore waits up
   to 0.1 s before its messages reach the workers, and again before their replies reach
   the strategy. The shim makes both event-driven: `InMemoryLinkState.store_message_ins`
   and `store_message_res` are wrapped to signal an arrival counter kept per LinkState,
   and the two loops wait on that counter (falling back to their old cadence,
   `IDLE_RECHECK_S` and `pull_interval`, only when nothing arrives: to notice `f_stop`,
   expired messages and timeouts exactly as before). What is delivered, to whom, and in
   which order the strategy aggregates it is unchanged; only the waiting goes.
   Safe to call in any process, any number of times: the `python -m sim` driver calls it
   before `run_simulation`; an app module run by `flwr run` (the `flwr-simulation`
   process runs the same engine) calls it at import, which Flower does in `start_vce`
   (loading the ClientApp) before `run_api` starts the pickup thread.
2. **Actor-pool size** (`actor_pool_size`): Flower's own per-node arithmetic
   (`ray_actor.pool_size_from_resources`), so the harness sizes its packs for exactly
   the pool Flower builds.
3. **Reply poll interval** (`set_reply_poll_interval`): `InMemoryGrid.pull_interval`, the
   grid's fallback cadence while it waits for replies.
4. **Partition map** (`partitioner_index_map`): flwr-datasets partitioners keep their
   whole `partition_id -> indices` map in `_partition_id_to_indices`; reading it at once
   is much faster than `load_partition` per client.
5. **Ray's CPU count** (`ray_cpu_count`): the CPUs `ray.init(num_cpus=None)` registers
   (Ray's own count, cgroup limits included), so validation refuses a `client_cpus` no
   private Ray could host before Ray starts.
6. **Reply polling on a SuperLink** (`shorten_superlink_reply_poll`). A deployment's
   ServerApp talks to its SuperLink through `HttpGrid`, whose `send_and_receive` pulls
   replies and then sleeps 3 s until all are in: every round of a deployment ended on a
   3-second tick. The shim pauses `SUPERLINK_PULL_INTERVAL_S` (0.1 s) instead, growing by
   half after each pull that found nothing up to `SUPERLINK_PULL_MAX_INTERVAL_S` (0.5 s),
   and back to 0.1 s after one that found replies: each pull is a request the SuperLink
   answers, and a 26 s round polled every 0.1 s made 260 of them. What is pushed and
   pulled is unchanged. Called by the deployment's ServerApp (`sim/deploy/app.py`).
7. **Ray without pyarrow** (`skip_ray_arrow_serializers`). Every Ray process imports
   pyarrow, when it is installed (flwr-datasets needs it), only to register Ray Data's
   serializers for Arrow objects: about 40 MB per process (driver and each worker), for
   objects the harness never sends through Ray. The shim registers nothing instead;
   an Arrow object sent through Ray is then pickled like any other. The driver calls it
   before `ray.init`, and each worker of a run through `ray_worker_setup`, Ray's
   `worker_process_setup_hook` (`sim/federation/ray_runtime.py`), before its first task.
8. **Warm ClientApp processes on a SuperNode** (`run_superexec_with_executor`). A
   SuperNode's SuperExec (`run_superexec`) starts every ClientApp task through the executor
   `get_executor` returns: Flower's `SubprocessExecutor` runs `flwr-clientapp` afresh each
   time (3.5 s of imports per message here). The shim runs Flower's own `run_superexec`
   with that module global returning the executor given (`sim/deploy/warm_exec.py`: tasks
   forked from a process that imported the app's libraries once, each calling
   `run_clientapp` as `flwr-clientapp` does). Task polling, tokens and the Runtime API
   are Flower's. `run_clientapp` unzips the run's FAB and checks its hashes for every task
   before it sees the app installed; in the template `install_fabs_once` makes it return
   the installed folder at once (what Flower returns after the unzip). When the installed
   Flower differs from the pins, both run as Flower has them (one warning): slower, the
   same results.
9. **A SuperNode's polls** (`shorten_supernode_polls`). `flower-supernode`'s loop
   (`start_client_internal`) asks its SuperLink for a message and, with none there, sleeps
   3 s; waiting for a ClientApp's reply (`_push_messages`) it sleeps 0.5 s between looks.
   A deployed round so waited up to 3 s for the last SuperNode to notice its message. The
   shim gives that module a `time` whose `sleep` lasts at most `SUPERNODE_POLL_S`
   (everything else is the `time` module); what is pulled and pushed is unchanged. Used by
   `python -m sim.deploy.supernode`, the SuperNode `sim.deploy` starts. Given a doorbell
   (`sim/deploy/doorbell.py`), the idle sleep waits on it instead: the deployment's
   ServerApp rings every SuperNode once it has pushed messages.
10. **A Ray worker's Flower import** (`defer_simulation_package`). A worker of a run
   unpickles Flower's `ClientAppActor`, importing `flwr.simulation.ray_transport.ray_actor`;
   Python first runs the package's `flwr/simulation/__init__.py`, which imports Flower's
   whole simulation engine (the SuperLink's LinkState, SQLAlchemy, the CLI): about 1 s
   of CPU in every worker, for code no worker runs. The actor module itself needs only
   `flwr.app`, `flwr.clientapp` and `flwr.supercore`. The shim, run by each worker's setup
   hook (`ray_worker_setup`), registers `flwr.simulation` as its package without running
   that `__init__`; the first look-up of a name the package defines runs it then (PEP 562
   `__getattr__`), so code that does use `flwr.simulation` still gets all of it. Pinned by
   the SHA-256 of the two files the worker imports instead (`PINNED_FILES`).
11. **A sweep's Ray workers kept between its jobs** (`keep_actors_between_runs`). At the
   end of every run Flower's `RayBackend.terminate` ends each actor of its pool and calls
   `ray.shutdown()`, so each job of a sweep started Ray again (a private Ray: its daemons)
   and new actors, each a worker process importing torch and Flower (about 3 s of CPU
   apiece here). While the switch is on (the jobs of a `python -m sim -m` sweep,
   `sim/federation/ray_runtime.py`), `terminate` keeps the pool's idle actors for the next
   run instead and leaves Ray up; the next pool (`BasicActorPool.add_actors_to_pool`)
   takes kept actors of equal `client_resources` before creating new ones, and ends any
   others first so their resources are free. An actor runs whatever ClientApp each task
   brings (`ClientAppActor.run`); what a worker caches per process is keyed by the run's
   settings and data (`sim.federation.client_app.prepare`, `DataHandle.get`), so a kept
   actor gives a job the same results as a new one (tested). A busy actor (a straggler
   past `round_timeout`) is killed, which frees its resources as Flower's `ray.shutdown`
   would. `release_kept_actors` ends the kept ones.
12. **Object pulls retried within 0.2 s** (`shorten_object_pull_backoff`). A message's
   arrays travel as separate objects, pulled by `inflatable_utils.pull_objects`; an object
   not there yet is asked for again after 1 s, then 2, 4, 8 and 10 s. In a deployment that
   wait is met on every message: a SuperNode stores a message and then pulls its objects
   from the SuperLink, while its SuperExec already starts the ClientApp task, whose first
   pull of those objects from the SuperNode finds them missing (measured: tasks of a
   4-SuperNode run waited 1.0-3.6 s of their 2.3-5.7 s there). The shim sets the two
   functions' defaults to a first wait of 0.02 s doubling to at most 0.2 s; the try count
   goes and `max_time` (Flower's 2 hours) bounds the wait alone (Flower's 500 tries of its
   backoff last about 80 minutes). What is pulled is unchanged. Called in a deployment's
   ServerApp, SuperNodes (`sim.deploy.supernode`) and ClientApp tasks (`sim.deploy.warm_template`).
13. **A SuperExec woken by its SuperNode** (`ring_when_messages_arrive`,
   `wait_between_task_polls`). A SuperExec asks its SuperNode for a task every
   `FLWR_SUPEREXEC_TASK_POLL_INTERVAL` (`run_superexec` sleeps that long between polls),
   so a short interval costs both processes CPU all the time (ten SuperNodes at 0.2 s: fifty
   HTTP requests a second), and a long one delays every message. In the SuperNode the shim
   calls a `ring` once `_pull_and_store_message` has created a message's task (just before
   it pulls the message's objects, through its module's `pull_objects`); in the SuperExec
   it gives `run_superexec`'s module a `time` whose `sleep` is a given `wait`, which
   returns at the ring (`sim/deploy/doorbell.py`: a Unix datagram socket per pair).
   The SuperExec polls as soon as there is a task, and only rarely otherwise; what it
   acquires and launches is unchanged. Used by `sim.deploy.supernode` and `sim.deploy.warm_exec`
   when `sim.deploy` gives them a doorbell.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
import threading
import time
import weakref
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

PINNED_VERSIONS = {"flwr": "1.42.0", "flwr-datasets": "0.6.1", "ray": "2.55.1"}

# "module:qualname" -> SHA-256 of `inspect.getsource` of the installed original. Refresh
# only after reading the new source and adapting the shim that depends on it.
PINNED_SOURCES = {
    # shim 1: replaced outright (our version keeps its loop body and drops the 0.1 s sleep)
    "flwr.server.superlink.fleet.vce.vce_api:add_messages_to_queue":
        "953f4bd41a931a7779a4a670ab17b633f6e20b08a0128535328674466419777a",
    # shim 1: starts the pickup thread with `target=add_messages_to_queue`, a global
    # looked up when it runs, which is what lets a module attribute replace it
    "flwr.server.superlink.fleet.vce.vce_api:run_api":
        "f85c0cd6e902752f455c00ab9c7212c1cd94a8c681fa9bf294ba967463390898",
    # shim 1: loads the ClientApp (importing a `flwr run` app module) before run_api
    "flwr.server.superlink.fleet.vce.vce_api:start_vce":
        "2d5e267f893950a709c52adf9d6a90c81a7750d889b4eb99318dfffeea957f16",
    # shim 1: wrapped to signal arrivals (their return value says whether a message was stored)
    "flwr.server.superlink.linkstate.in_memory_linkstate:InMemoryLinkState.store_message_ins":
        "a2b78afac51dc4a23d236ccf8d02958c8d0532aac179cd9ad9b1a0d939eecbea",
    "flwr.server.superlink.linkstate.in_memory_linkstate:InMemoryLinkState.store_message_res":
        "52a4f7ccc70e890843671cc17e603239f50b88de2a0c5d30810a19021c9d594d",
    # shim 1: replaced outright (same pushes and pulls; waits on replies instead of sleeping)
    "flwr.superlink.grid.inmemory_grid:InMemoryGrid.send_and_receive":
        "0229edfa5741b92857a8f53744a145900bd8726e339627d46c69418d45429a0a",
    # shim 3: the attribute the loop above sleeps on, set in __init__
    "flwr.superlink.grid.inmemory_grid:InMemoryGrid.__init__":
        "028fa3ed6b4181bb6685e4d7f940fcfcc218b9eaeed379d6b4cceb7b300bb410",
    # shim 2: called as is
    "flwr.simulation.ray_transport.ray_actor:pool_size_from_resources":
        "dec698571d396dc89c376d2d7e921ddb4de247f23b8cb2945881ff60403b3aa5",
    # shim 6: replaced outright (same pushes and pulls; a short pause instead of 3 s)
    "flwr.superlink.grid.http_grid:HttpGrid.send_and_receive":
        "699c9f048f3cff746bf5f743771c17dcbb60cd45b6b778adb5600ffc81ee37b2",
    # shim 7: replaced in each Ray process by a function that registers nothing
    "ray._private.arrow_serialization:_register_custom_datasets_serializers":
        "f0ac1a8a50fec438ada9b4a00307778f45421b6eda7b34cd62f86015fdb17cd7",
    # shim 8: run as is, with the module global `get_executor` it calls replaced while it runs
    "flwr.supercore.superexec.run_superexec:run_superexec":
        "91e7a33c5b898f33249c29d2058c57637ca7668a14c27296d2506dc98ac84f9b",
    # shim 8: what a launch does (the interface our executor keeps; other task types still go here)
    "flwr.supercore.superexec.executor.subprocess_executor:SubprocessExecutor.launch":
        "83abf3dbe02281fdf384ef650928e34eccc073dadcf690d34e9cb0eaab46b56c",
    # shim 8: called as `flwr-clientapp` calls it, in a forked process
    "flwr.supernode.runtime.run_clientapp:run_clientapp":
        "6ce09559f3a2f5dcafb7d08f4b443585d76b9b53b9cb29ba1ec06a6982163443",
    "flwr.supernode.cli.flwr_clientapp:flwr_clientapp":
        "9e02b412fb895b05a772a3b7d27af623d88819c21159264da48a9dd8117c1da0",
    # shim 8: `run_clientapp` calls it (a module global) for every task; it unzips and re-hashes the FAB
    # before `validate_and_install` notices the app folder `get_project_dir` names is there already
    "flwr.cli.install:install_from_fab":
        "481bd04cde5823220658a8a3e84e827a5ef38254223972e4e14c4cb3968e917e",
    "flwr.cli.install:validate_and_install":
        "628b69fb852ae8584e978595f2e8451175a3e60acbad678df3f8e08fe27f13c6",
    "flwr.common.config:get_project_dir":
        "155c70517e73e59826aed10b3e3a0ba06e02feb3573fee44d23a32798edb632c",
    # shim 9: their module's `time` is replaced; they sleep 3 s with nothing to pull, 0.5 s waiting on a reply
    "flwr.supernode.start_client_internal:start_client_internal":
        "9e89a6eb68fbec6821e817cd2c09f7894fc7b0f5725c2365b19a7122307f11f3",
    "flwr.supernode.start_client_internal:_push_messages":
        "00bb86faffdec114db87e7f716af2acd901d12284e44f51f5c2a84704db05f64",
    # shim 12: their keyword defaults are changed (the backoff between tries for an object not there yet)
    "flwr.supercore.inflatable.inflatable_utils:pull_objects":
        "31bb2de46b450e6acfadb7a8bb15e3f2074bb112199826a40a5eaa648bad5b2b",
    "flwr.supercore.inflatable.inflatable_utils:pull_and_inflate_object_from_tree":
        "139811483a15e4a6c1f8523614c12f28dd3049194e5713816be0931387adb1cf",
    # shim 12: they pull with those defaults (a ClientApp task, a SuperNode, a deployment's ServerApp)
    "flwr.supernode.runtime.run_clientapp:pull_task_input":
        "5607a23e1673ee876930c1b35685b8dfdfd8b3776a436560b0467042e15fc695",
    "flwr.supernode.start_client_internal:_pull_and_store_message":
        "eaf5d0e36dc34e4cf46a490511d077ac55cc8edbbcdbe938c1f6dbcb758628be",
    "flwr.superlink.grid.http_grid:HttpGrid.pull_messages":
        "67a5266a5a2ed51557437a15ef4c8844f46576bc5bb6b0753d2a2f6230a3aa83",
    # shim 11: replaced while the switch is on (keeps idle actors and Ray; kills busy ones)
    "flwr.server.superlink.fleet.vce.backend.raybackend:RayBackend.terminate":
        "572052de11fe046c057296609a80a242237f476ca547d6bd10fcb186e5c221c4",
    # shim 11: wrapped to take kept actors first; `pool` is its list of idle actors
    "flwr.simulation.ray_transport.ray_actor:BasicActorPool.add_actors_to_pool":
        "fc10dcb21e9a72b7392a2a6298b0202b3307d71f4c8e652630901c07111b9463",
    # shim 11: read for what a pool holds (`pool`: idle actors, `_future_to_actor`: busy ones)
    "flwr.simulation.ray_transport.ray_actor:BasicActorPool.__init__":
        "b9c2ef0d7bfedaeb42788fe17a71efc11a46c0fb369f030d34d99b5bb4a1acef",
    # shim 5: called as is (Ray 2.55.1)
    "ray._private.utils:get_num_cpus":
        "34f4314e5d0e95f1409710c42e302b2d1014ed519f75df2138ad904460385dad",
    # shim 4: fill `_partition_id_to_indices` and read it as positions into `.dataset`
    "flwr_datasets.partitioner.dirichlet_partitioner:DirichletPartitioner._determine_partition_id_to_indices_if_needed":
        "ed2eef9036f744fc118aa9762c6fb581e5617eb4a8f93089aaf19e38c7d5116b",
    "flwr_datasets.partitioner.dirichlet_partitioner:DirichletPartitioner.load_partition":
        "22b4717c44cb432c7c1456b544f779e95f8bc3a8bb4aa48d80be0482879ffb89",
    "flwr_datasets.partitioner.shard_partitioner:ShardPartitioner._determine_partition_id_to_indices_if_needed":
        "041bc68c7e1264b4171b4d67f8a567317838f51a8c07eca3244a7892240983e5",
    "flwr_datasets.partitioner.shard_partitioner:ShardPartitioner.load_partition":
        "f443c51a5095a6d7dcdffb7087039736c0e62d850d7e7e9ca19798af3b8bc639",
    "flwr_datasets.partitioner.pathological_partitioner:PathologicalPartitioner._determine_partition_id_to_indices_if_needed":
        "bae9cacf08b693482d144a18262fcf3c02ea06c9e0db4d0b2376b25b9feedf1d",
    "flwr_datasets.partitioner.pathological_partitioner:PathologicalPartitioner.load_partition":
        "34645de3427ce551b1a948af7e223f98ee5bfbd0ebd5b88c3c73aceb40593da9",
}

# shim 10: files (under the package's folder) a Ray worker imports without `flwr/simulation/__init__.py`;
# SHA-256 of their text. Each must import nothing from `flwr.simulation` outside `ray_transport`.
PINNED_FILES = {
    "flwr.simulation": {
        "ray_transport/__init__.py": "a2077ed0032fd94fb0059d6bdec1d668320e22b56aafcf178ba0bca380ef8b2d",
        "ray_transport/ray_actor.py": "174132017563559c9113602a9933ea54d7622a84d19d9fc2d5cadea1eb599561",
    },
}

IDLE_RECHECK_S = 0.1  # with nothing arriving, the pickup loop still rechecks (f_stop, expiry) this often

_lock = threading.Lock()
_originals: dict[str, Any] = {}  # shim 1: "module:qualname" -> what it replaced, while installed
_kept_originals: dict[str, Any] = {}  # shims 6 and 7 (installed for the process's life): the same
_checked: dict[str, bool] = {}  # shim -> whether the installed library matched its pins


# --- pins -------------------------------------------------------------------------------


def installed_version(package: str) -> str | None:
    """The installed version of `package`, or None when it is not installed."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def original(name: str) -> Any:
    """The library's own object `module:qualname` (the original even while a shim replaces it)."""
    if name in _originals:
        return _originals[name]
    if name in _kept_originals:
        return _kept_originals[name]
    module, qualname = name.split(":")
    obj: Any = import_module(module)
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part) if inspect.isclass(obj) else getattr(obj, part)
    return obj


def source_hash(obj: Any) -> str:
    """SHA-256 of the source text of a function."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def changed_internals(names: list[str] | None = None) -> list[str]:
    """Of `names` (default: all pinned), those whose installed source differs from the pin."""
    changed = []
    for name in names or list(PINNED_SOURCES):
        try:
            current = source_hash(original(name))
        except (ImportError, AttributeError, OSError, TypeError):
            current = None
        if current != PINNED_SOURCES[name]:
            changed.append(name)
    return changed


def _usable(package: str, names: list[str], what: str, find_changed: Callable[[], list[str]] | None = None) -> bool:
    """True when `package` is at its pinned version and `names` are unchanged (or, given
    `find_changed`, when it finds nothing changed); else warn once."""
    if what in _checked:
        return _checked[what]
    installed, pinned = installed_version(package), PINNED_VERSIONS[package]
    problem = None
    if installed != pinned:
        problem = f"{package} {installed} is installed, the shim was written for {pinned}"
    elif changed := (find_changed or (lambda: changed_internals(names)))():
        problem = f"{package}'s {', '.join(changed)} changed since the shim was written"
    _checked[what] = problem is None
    if problem is None:
        return True
    log.warning("%s: %s; left as the library has it (see sim/federation/flower_internals.py)", what, problem)
    return False


# --- shim 1: message pickup without a floor ----------------------------------------------

_VCE = "flwr.server.superlink.fleet.vce.vce_api"
_LINKSTATE = "flwr.server.superlink.linkstate.in_memory_linkstate:InMemoryLinkState"
_GRID = "flwr.superlink.grid.inmemory_grid:InMemoryGrid"
PICKUP_SHIM = [
    f"{_VCE}:add_messages_to_queue",
    f"{_VCE}:run_api",
    f"{_VCE}:start_vce",
    f"{_LINKSTATE}.store_message_ins",
    f"{_LINKSTATE}.store_message_res",
    f"{_GRID}.send_and_receive",
    f"{_GRID}.__init__",
]


class Arrivals:
    """A counter of messages stored in one LinkState; waiters block until it moves.

    A waiter reads `count` *before* it polls the state, then waits past that value: a
    message stored while it polled moves the counter, so no arrival is ever missed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def notify(self) -> None:
        """One more message stored: wake every waiter."""
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_past(self, seen: int, timeout: float) -> bool:
        """Block until `count != seen` or `timeout` s pass; True when something arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: self.count != seen, timeout=max(0.0, timeout))


_arrivals: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # LinkState -> {"ins"|"res": Arrivals}


def arrivals(state: Any, kind: str) -> Arrivals:
    """The arrival counter of `state` for `kind` ("ins": messages to nodes, "res": replies)."""
    with _lock:
        per_state = _arrivals.get(state)
        if per_state is None:
            per_state = _arrivals[state] = {"ins": Arrivals(), "res": Arrivals()}
        return per_state[kind]


def _signalling(store: Callable, kind: str) -> Callable:
    """`store` (a LinkState method), plus an arrival signal whenever it stored a message."""

    def store_and_signal(self, message):
        message_id = store(self, message)
        if message_id is not None:
            arrivals(self, kind).notify()
        return message_id

    store_and_signal.__doc__ = store.__doc__
    store_and_signal.__wrapped__ = store
    return store_and_signal


def add_messages_to_queue(state, queue, nodes_mapping, f_stop) -> None:
    """Flower's `add_messages_to_queue`, woken by arrivals instead of every 0.1 s.

    Same loop body: each pass takes at most one undelivered message per node. A pass that
    found messages is followed at once by another (a node may hold more); otherwise the
    thread waits for the next stored message, or `IDLE_RECHECK_S` to recheck `f_stop`.
    """
    incoming = arrivals(state, "ins")
    while not f_stop.is_set():
        seen = incoming.count
        found = False
        for node_id in nodes_mapping.keys():
            message_ins_list = state.get_message_ins(node_id=node_id, limit=1)
            for msg in message_ins_list:
                queue.put(msg)
                found = True
        if not found:
            incoming.wait_past(seen, IDLE_RECHECK_S)


def send_and_receive(self, messages, *, timeout: float | None = None):
    """Flower's `InMemoryGrid.send_and_receive`, woken by each stored reply.

    Same pushes and pulls; between pulls it waits for the next reply (at most
    `pull_interval`, and never past `timeout`) instead of sleeping `pull_interval`.
    """
    msg_ids = set(self.push_messages(messages))
    del messages
    replies = arrivals(self.state, "res")
    end_time = time.time() + (timeout if timeout is not None else 0.0)
    ret = []
    while timeout is None or time.time() < end_time:
        seen = replies.count
        res_msgs = self.pull_messages(msg_ids)
        ret.extend(res_msgs)
        msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in res_msgs})
        if len(msg_ids) == 0:
            break
        wait = self.pull_interval if timeout is None else min(self.pull_interval, end_time - time.time())
        replies.wait_past(seen, wait)
    return ret


def _install(name: str, replacement: Any) -> None:
    """Put `replacement` where `name` lives, keeping the original for `restore_message_pickup_floor`."""
    module_name, qualname = name.split(":")
    owner: Any = import_module(module_name)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    _originals[name] = inspect.getattr_static(owner, attr)
    setattr(owner, attr, replacement)


def remove_message_pickup_floor() -> bool:
    """Make Flower's simulation engine deliver messages and replies as soon as they exist.

    Idempotent and thread-safe; call it in any process before a simulation starts. Returns
    True when the shim is in place, False (with one warning) when the installed Flower is
    not the version, or not the code, it was written for; Flower is then left untouched.
    """
    if _originals:
        return True
    if not _usable("flwr", PICKUP_SHIM, "message pickup shim"):
        return False
    with _lock:
        if _originals:
            return True
        store_ins, store_res = original(f"{_LINKSTATE}.store_message_ins"), original(f"{_LINKSTATE}.store_message_res")
        _install(f"{_LINKSTATE}.store_message_ins", _signalling(store_ins, "ins"))
        _install(f"{_LINKSTATE}.store_message_res", _signalling(store_res, "res"))
        _install(f"{_GRID}.send_and_receive", send_and_receive)
        _install(f"{_VCE}:add_messages_to_queue", add_messages_to_queue)
    log.info("Flower's message pickup: event-driven, no 0.1 s floor (sim/federation/flower_internals.py)")
    return True


def restore_message_pickup_floor() -> None:
    """Undo `remove_message_pickup_floor` (for tests and side-by-side measurements)."""
    with _lock:
        for name in list(_originals):
            module_name, qualname = name.split(":")
            owner: Any = import_module(module_name)
            *path, attr = qualname.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, attr, _originals.pop(name))


def pickup_floor_removed() -> bool:
    """Whether `remove_message_pickup_floor` is in effect in this process."""
    return bool(_originals)


# --- shim 2: actor-pool size --------------------------------------------------------------


def actor_pool_size(client_resources: dict[str, float]) -> int:
    """Client tasks Flower's Ray backend runs at once, from Ray's live node list.

    Flower's `pool_size_from_resources`: per node, min(CPUs / num_cpus, GPUs / num_gpus).
    Needs `ray.init` first.
    """
    from flwr.simulation.ray_transport.ray_actor import pool_size_from_resources

    return pool_size_from_resources(client_resources)


def ray_cpu_count() -> float:
    """CPUs a private Ray instance would register here (Ray's own count, cgroup limits included)."""
    try:
        from ray._private.utils import get_num_cpus  # what ray.init(num_cpus=None) uses

        return float(get_num_cpus())
    except (ImportError, AttributeError):  # another Ray version: the plain count
        import os

        return float(os.cpu_count() or 1)


# --- shim 3: reply poll interval ----------------------------------------------------------


def set_reply_poll_interval(grid: Any, seconds: float) -> None:
    """How often the in-memory grid rechecks for replies when none has arrived (Flower: 0.1 s).

    Other grids (a deployment's gRPC grid) have no such attribute and are left alone.
    """
    if hasattr(grid, "pull_interval"):
        grid.pull_interval = seconds


# --- shim 6: reply polling on a SuperLink ---------------------------------------------------

_HTTP_GRID = "flwr.superlink.grid.http_grid:HttpGrid"
SUPERLINK_POLL_SHIM = [f"{_HTTP_GRID}.send_and_receive"]
SUPERLINK_PULL_INTERVAL_S = 0.1  # the first pause, and the pause after a pull that brought replies (Flower: 3 s)
SUPERLINK_PULL_MAX_INTERVAL_S = 0.5  # pauses grow by half after each empty pull, to at most this
SUPERLINK_PULL_GROWTH = 1.5


def http_send_and_receive(self, messages, *, timeout: float | None = None):
    """Flower's `HttpGrid.send_and_receive`, pausing 0.1-0.5 s between pulls, not 3 s.

    The pause starts at `SUPERLINK_PULL_INTERVAL_S`, grows by `SUPERLINK_PULL_GROWTH` after
    each pull that found no reply, up to `SUPERLINK_PULL_MAX_INTERVAL_S`, and starts again
    after one that found some (replies come in bursts, as clients finish together).
    """
    msg_ids = set(self.push_messages(messages))
    del messages
    end_time = time.time() + (timeout if timeout is not None else 0.0)
    ret = []
    interval = SUPERLINK_PULL_INTERVAL_S
    while timeout is None or time.time() < end_time:
        res_msgs = self.pull_messages(msg_ids)
        ret.extend(res_msgs)
        msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in res_msgs})
        if len(msg_ids) == 0:
            break
        if res_msgs:
            interval = SUPERLINK_PULL_INTERVAL_S
        pause = interval if timeout is None else min(interval, end_time - time.time())
        time.sleep(max(0.0, pause))
        interval = min(interval * SUPERLINK_PULL_GROWTH, SUPERLINK_PULL_MAX_INTERVAL_S)
    return ret


def shorten_superlink_reply_poll() -> bool:
    """Make a deployment's ServerApp see replies within `SUPERLINK_PULL_INTERVAL_S`, not on a 3 s tick.

    Idempotent; returns False (with one warning) and leaves Flower as it is when the
    installed Flower is not the version, or not the code, the shim was written for.
    """
    if SUPERLINK_POLL_SHIM[0] in _kept_originals:
        return True
    if not _usable("flwr", SUPERLINK_POLL_SHIM, "SuperLink reply-poll shim"):
        return False
    with _lock:
        if SUPERLINK_POLL_SHIM[0] not in _kept_originals:
            module_name, qualname = _HTTP_GRID.split(":")
            grid_class = getattr(import_module(module_name), qualname)
            _kept_originals[SUPERLINK_POLL_SHIM[0]] = inspect.getattr_static(grid_class, "send_and_receive")
            grid_class.send_and_receive = http_send_and_receive
    log.info("SuperLink replies pulled every %.1f-%.1f s, not every 3 s (sim/federation/flower_internals.py)",
             SUPERLINK_PULL_INTERVAL_S, SUPERLINK_PULL_MAX_INTERVAL_S)
    return True


# --- shim 8: warm ClientApp processes on a SuperNode ---------------------------------------

_SUPEREXEC = "flwr.supercore.superexec.run_superexec"
WARM_EXEC_SHIM = [
    f"{_SUPEREXEC}:run_superexec",
    "flwr.supercore.superexec.executor.subprocess_executor:SubprocessExecutor.launch",
    "flwr.supernode.runtime.run_clientapp:run_clientapp",
    "flwr.supernode.cli.flwr_clientapp:flwr_clientapp",
    "flwr.cli.install:install_from_fab",
    "flwr.cli.install:validate_and_install",
    "flwr.common.config:get_project_dir",
]
_RUN_CLIENTAPP = "flwr.supernode.runtime.run_clientapp"


def run_superexec_with_executor(executor: Any, *, runtime_api_address: str, insecure: bool,
                                root_certificates_path: str | None, parent_pid: int | None) -> None:
    """Flower's SuperExec loop for one SuperNode's Runtime API, launching tasks through `executor`.

    Does not return (Flower's loop ends the process on SIGTERM or when `parent_pid` exits).
    With a Flower other than the pinned one, runs Flower's loop with its own executor.
    """
    module = import_module(_SUPEREXEC)
    if _usable("flwr", WARM_EXEC_SHIM, "warm ClientApp executor"):
        module.get_executor = lambda *args, **kwargs: executor
    module.run_superexec(runtime_api_address=runtime_api_address, insecure=insecure,
                         root_certificates_path=root_certificates_path, parent_pid=parent_pid,
                         runtime_dependency_install=False)


def install_fab_once(fab_file: Any, install_dir: Any = None, skip_prompt: bool = False) -> Any:
    """Flower's `install_from_fab`, returning at once when this FAB (bytes) is installed already.

    The app folder is the one Flower's `validate_and_install` would make and then find
    (`get_project_dir` of the FAB's publisher/name, version and SHA-256), read from the
    FAB's `pyproject.toml` without unzipping the rest; anything else goes to Flower's.
    """
    from flwr.common.config import get_metadata_from_config, get_project_dir

    if isinstance(fab_file, bytes) and install_dir is None:
        import hashlib
        import io
        import tomllib
        import zipfile

        try:
            with zipfile.ZipFile(io.BytesIO(fab_file)) as archive:
                config = tomllib.loads(archive.read("pyproject.toml").decode())
            fab_id, version = get_metadata_from_config(config)
            path = get_project_dir(fab_id, version, hashlib.sha256(fab_file).hexdigest())
        except (KeyError, ValueError, zipfile.BadZipFile, tomllib.TOMLDecodeError):
            path = None  # Flower's own install says what is wrong with it
        if path is not None and path.is_dir():
            return path
    return original("flwr.cli.install:install_from_fab")(fab_file, install_dir, skip_prompt)


def install_fabs_once() -> bool:
    """Make this process's (and its forks') `run_clientapp` skip re-installing a FAB it has; False when
    the installed Flower is not the one pinned (left as it is, with one warning)."""
    if not _usable("flwr", WARM_EXEC_SHIM, "warm ClientApp executor"):
        return False
    import_module(_RUN_CLIENTAPP).install_from_fab = install_fab_once
    return True


# --- shim 9: a SuperNode's polls ---------------------------------------------------------

_NODE = "flwr.supernode.start_client_internal"
SUPERNODE_POLL_SHIM = [f"{_NODE}:start_client_internal", f"{_NODE}:_push_messages"]
SUPERNODE_POLL_S = 0.2  # Flower: 3 s with no message to pull, 0.5 s between looks for a reply
FLOWER_IDLE_SLEEP_S = 3  # what `start_client_internal` sleeps when it pulled no message (pinned)


class CappedSleep:
    """The `time` module, but `sleep` lasts at most `cap` seconds; with `idle_wait`, the
    SuperNode loop's idle sleep (`FLOWER_IDLE_SLEEP_S`) is `idle_wait()` instead."""

    def __init__(self, cap: float, idle_wait: Callable[[], Any] | None = None):
        self.cap, self.idle_wait = cap, idle_wait

    def sleep(self, seconds: float) -> None:
        if self.idle_wait is not None and seconds == FLOWER_IDLE_SLEEP_S:
            self.idle_wait()
            return
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def shorten_supernode_polls(seconds: float = SUPERNODE_POLL_S, idle_wait: Callable[[], Any] | None = None) -> bool:
    """Make this process's SuperNode loop poll every `seconds` at most, or, given `idle_wait`, call
    it when there was no message to pull (a doorbell's wait); False (one warning, Flower left as
    it is) when the installed Flower is not the version, or not the code, the shim was written for."""
    if not _usable("flwr", SUPERNODE_POLL_SHIM, "SuperNode poll shim"):
        return False
    import_module(_NODE).time = CappedSleep(seconds, idle_wait)
    return True


# --- shim 12: object pulls retried within 0.2 s ---------------------------------------------

_INFLATABLE = "flwr.supercore.inflatable.inflatable_utils"
OBJECT_PULL_SHIM = [f"{_INFLATABLE}:pull_objects", f"{_INFLATABLE}:pull_and_inflate_object_from_tree",
                    "flwr.supernode.runtime.run_clientapp:pull_task_input",
                    f"{_NODE}:_pull_and_store_message", f"{_HTTP_GRID}.pull_messages"]
PULL_BACKOFF = {"initial_backoff": 0.02, "backoff_cap": 0.2, "max_tries_per_object": None}  # Flower: 1 s, 10 s, 500


def shorten_object_pull_backoff() -> bool:
    """Make this process ask again for a message's missing objects within `PULL_BACKOFF`'s 0.2 s, not 1-10 s.

    Idempotent; returns False (with one warning) and leaves Flower as it is when the
    installed Flower is not the version, or not the code, the shim was written for.
    """
    if not _usable("flwr", OBJECT_PULL_SHIM, "object-pull backoff shim"):
        return False
    module = import_module(_INFLATABLE)
    for function in (module.pull_objects, module.pull_and_inflate_object_from_tree):
        function.__kwdefaults__.update(PULL_BACKOFF)
    return True


# --- shim 13: a SuperExec woken by its SuperNode ------------------------------------------

DOORBELL_SHIM = [f"{_NODE}:start_client_internal", f"{_NODE}:_pull_and_store_message", f"{_SUPEREXEC}:run_superexec"]
_NODE_PULL_OBJECTS = f"{_NODE}:pull_objects"  # what `_pull_and_store_message` calls once the task exists


def ring_when_messages_arrive(ring: Callable[[], None]) -> bool:
    """Make this process's SuperNode loop call `ring()` each time it has a new task for its SuperExec.

    `_pull_and_store_message` creates the task and stores the message, then pulls the
    message's objects (`pull_objects`, a global of its module): the ring comes just before
    that pull, so the SuperExec starts the task while the objects arrive, as it would have
    with a fast poll. Idempotent (the first `ring` stays); returns False (with one warning)
    and leaves Flower as it is when the installed Flower is not the version, or not the
    code, the shim was written for.
    """
    if _NODE_PULL_OBJECTS in _kept_originals:
        return True
    if not _usable("flwr", DOORBELL_SHIM, "SuperExec doorbell shim"):
        return False
    module = import_module(_NODE)
    with _lock:
        if _NODE_PULL_OBJECTS not in _kept_originals:
            pull_objects = _kept_originals[_NODE_PULL_OBJECTS] = module.pull_objects

            def ring_then_pull_objects(*args: Any, **kwargs: Any) -> Any:
                ring()  # the task exists and the message is stored
                return pull_objects(*args, **kwargs)

            module.pull_objects = ring_then_pull_objects
    return True


class ReplacedSleep:
    """The `time` module, but `sleep(seconds)` is `wait(seconds)`."""

    def __init__(self, wait: Callable[[float], Any]):
        self.wait = wait

    def sleep(self, seconds: float) -> None:
        self.wait(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def wait_between_task_polls(wait: Callable[[float], Any]) -> bool:
    """Make this process's SuperExec loop (`run_superexec`) call `wait(seconds)` between its task polls, not `time.sleep`.

    Returns False (with one warning) and leaves Flower as it is when the installed Flower
    is not the version, or not the code, the shim was written for.
    """
    if not _usable("flwr", DOORBELL_SHIM, "SuperExec doorbell shim"):
        return False
    import_module(_SUPEREXEC).time = ReplacedSleep(wait)
    return True


# --- shim 7: Ray without pyarrow ----------------------------------------------------------

_ARROW = "ray._private.arrow_serialization:_register_custom_datasets_serializers"
ARROW_SHIM = [_ARROW]


def _register_no_arrow_serializers(serialization_context: Any) -> None:
    """Registers nothing (and imports nothing): the harness sends no Arrow object through Ray."""


def skip_ray_arrow_serializers() -> bool:
    """Keep this process's Ray from importing pyarrow (about 40 MB) to register Ray Data's serializers.

    Call before the process's first Ray serialization context exists (the driver: before
    `ray.init`). Idempotent; returns False (with one warning) and leaves Ray as it is when
    the installed Ray is not the version, or not the code, the shim was written for.
    """
    if _ARROW in _kept_originals:
        return True
    if not _usable("ray", ARROW_SHIM, "Ray Arrow-serializer shim"):
        return False
    with _lock:
        if _ARROW not in _kept_originals:
            module_name, function = _ARROW.split(":")
            module = import_module(module_name)
            _kept_originals[_ARROW] = getattr(module, function)
            setattr(module, function, _register_no_arrow_serializers)
    return True


def ray_worker_setup() -> None:
    """Ray's `worker_process_setup_hook` for the harness's jobs: runs in each worker before its first task."""
    skip_ray_arrow_serializers()
    defer_simulation_package()


# --- shim 11: a sweep's Ray workers kept between its jobs ----------------------------------

_RAY_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend:RayBackend"
_ACTOR_POOL = "flwr.simulation.ray_transport.ray_actor:BasicActorPool"
KEEP_ACTORS_SHIM = [f"{_RAY_BACKEND}.terminate", f"{_ACTOR_POOL}.add_actors_to_pool", f"{_ACTOR_POOL}.__init__"]
_kept_actors: list[tuple[tuple, Any]] = []  # (client resources, idle actor) left by the last run


def _resources_key(client_resources: dict) -> tuple:
    return tuple(sorted((str(k), float(v)) for k, v in client_resources.items()))


def _kill(actors: list) -> None:
    """End `actors` at once (`ray.kill`: their resources are free when it returns)."""
    import ray

    for actor in actors:
        ray.kill(actor, no_restart=True)


def release_kept_actors() -> int:
    """End every actor kept for a next run; their number."""
    import ray

    with _lock:
        actors = [actor for _, actor in _kept_actors]
        _kept_actors.clear()
    if ray.is_initialized():
        _kill(actors)
    return len(actors)


def kept_actor_count() -> int:
    """How many idle actors wait for the next run."""
    return len(_kept_actors)


def _add_kept_actors_first(self, num_actors: int) -> None:
    """`BasicActorPool.add_actors_to_pool`, taking kept actors of equal resources before creating any."""
    key = _resources_key(self.client_resources)
    with _lock:
        matching = [actor for k, actor in _kept_actors if k == key][:num_actors]
        others = [actor for k, actor in _kept_actors if k != key]
        _kept_actors.clear()
    _kill(others)  # their CPUs and GPUs are needed for this pool's new actors
    self.pool.extend(matching)
    self.num_actors += len(matching)
    if num_actors > len(matching):
        _kept_originals[KEEP_ACTORS_SHIM[1]](self, num_actors - len(matching))


def _terminate_keeping_actors(self) -> None:
    """`RayBackend.terminate` that keeps the pool's idle actors and Ray itself for the next run."""
    pool = self.pool
    if pool is None:
        return
    key = _resources_key(pool.client_resources)
    with _lock:
        _kept_actors.extend((key, actor) for actor in pool.pool)
    _kill(list(pool._future_to_actor.values()))  # still busy (a straggler past round_timeout): freed now,
    pool.pool, pool._future_to_actor = [], {}  # as Flower's ray.shutdown would free them


def keep_actors_between_runs(keep: bool) -> bool:
    """Switch shim 11 on (runs keep their Ray workers and Ray for the next run) or off.

    Returns whether runs now keep them: False after `keep=False`, and (with one warning)
    when the installed Flower is not the version, or not the code, the shim was written
    for. Switching off restores Flower's `terminate`; kept actors stay until
    `release_kept_actors` or `ray.shutdown`.
    """
    if keep and not _usable("flwr", KEEP_ACTORS_SHIM, "actor-keeping shim"):
        return False
    with _lock:
        backend = getattr(import_module(_RAY_BACKEND.split(":")[0]), "RayBackend")
        pool = getattr(import_module(_ACTOR_POOL.split(":")[0]), "BasicActorPool")
        if keep and KEEP_ACTORS_SHIM[0] not in _kept_originals:
            _kept_originals[KEEP_ACTORS_SHIM[0]] = inspect.getattr_static(backend, "terminate")
            _kept_originals[KEEP_ACTORS_SHIM[1]] = inspect.getattr_static(pool, "add_actors_to_pool")
            backend.terminate = _terminate_keeping_actors
            pool.add_actors_to_pool = _add_kept_actors_first
        elif not keep and KEEP_ACTORS_SHIM[0] in _kept_originals:
            backend.terminate = _kept_originals.pop(KEEP_ACTORS_SHIM[0])
            pool.add_actors_to_pool = _kept_originals.pop(KEEP_ACTORS_SHIM[1])
    return keep


# --- shim 10: a Ray worker's Flower import --------------------------------------------------

_SIMULATION = "flwr.simulation"


def changed_files(package: str) -> list[str]:
    """Of `PINNED_FILES[package]`, the files whose installed text differs from the pin (none imported)."""
    spec = importlib.util.find_spec(package)  # imports the parent package, not `package` itself
    folder = (spec.submodule_search_locations or [None])[0] if spec else None
    changed = []
    for relative, pinned in PINNED_FILES[package].items():
        try:
            current = hashlib.sha256(Path(folder, relative).read_bytes()).hexdigest()
        except (OSError, TypeError):
            current = None
        if current != pinned:
            changed.append(relative)
    return changed


def defer_simulation_package() -> bool:
    """Register `flwr.simulation` without running its `__init__` until a name of it is looked up.

    Returns True when the package is deferred (or was already imported); False, with one
    warning, when the installed Flower is not the version or the files the shim was written
    for: the package is then imported as usual when the actor module is.
    """
    if _SIMULATION in sys.modules:
        return True
    if not _usable("flwr", [], "Flower simulation-package shim", find_changed=lambda: changed_files(_SIMULATION)):
        return False
    spec = importlib.util.find_spec(_SIMULATION)
    package = importlib.util.module_from_spec(spec)  # `__path__` set, `__init__` not run

    def run_init_on_first_lookup(name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name != "__all__":
            raise AttributeError(name)  # probes such as `__wrapped__`: the package never has them
        package.__dict__.pop("__getattr__", None)
        spec.loader.exec_module(package)  # the real `__init__`, in the module already registered
        return getattr(package, name)

    package.__getattr__ = run_init_on_first_lookup
    sys.modules[_SIMULATION] = package
    setattr(sys.modules["flwr"], "simulation", package)
    return True


# --- shim 4: partition map ----------------------------------------------------------------


PARTITION_SHIM = [name for name in PINNED_SOURCES if name.startswith("flwr_datasets.")]


def partitioner_index_map(partitioner: Any, num_partitions: int) -> dict[int, Any] | None:
    """A computed flwr-datasets partitioner's `partition_id -> positions` map, or None.

    Positions index `partitioner.dataset`, as in the partitioners' `load_partition`. None
    when the installed flwr-datasets is not the version or code this was written for, or
    keeps no such map: callers then use the public `load_partition`, one client at a time.
    """
    if not _usable("flwr-datasets", PARTITION_SHIM, "partition map shim"):
        return None
    mapping = getattr(partitioner, "_partition_id_to_indices", None)
    if not isinstance(mapping, dict) or len(mapping) != num_partitions:
        return None
    return mapping
