"""The shims over Flower's, Ray's and flwr-datasets' internals (`sim/federation/flower_internals.py`).

Each pinned internal must still be the code its shim was written against; the message
pickup shim is driven through Flower's real LinkState, InMemoryGrid and simulation-engine
threads (no Ray) with the fallback cadences set to a minute, so only its arrival signals
can deliver in time.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from queue import Empty, Queue
from uuid import uuid4

import numpy as np
import pytest
from sim.federation import flower_internals as fi
from sim.partition.schemes import partition_labels


def check_pins_afresh(monkeypatch, flower_as_pinned: bool) -> None:
    """No pin check cached; with `flower_as_pinned` False, another Flower seems installed (shims must stand back)."""
    monkeypatch.setattr(fi, "_checked", {})
    if not flower_as_pinned:
        monkeypatch.setattr(fi, "installed_version", lambda package: "0.0.0")


@pytest.fixture
def fresh_shims(monkeypatch):
    """No shim installed and no pin check cached, before and after the test."""
    fi.restore_message_pickup_floor()
    monkeypatch.setattr(fi, "_checked", {})
    yield
    fi.restore_message_pickup_floor()


@pytest.mark.parametrize("package", sorted(fi.PINNED_VERSIONS))
def test_installed_version_is_the_pinned_one(package):
    assert fi.installed_version(package) == fi.PINNED_VERSIONS[package], (
        f"{package} changed: read the new source of every internal in sim/federation/flower_internals.py, "
        "adapt the shims and update PINNED_VERSIONS / PINNED_SOURCES"
    )


@pytest.mark.parametrize("name", sorted(fi.PINNED_SOURCES))
def test_pinned_internal_is_unchanged(name):
    assert fi.source_hash(fi.original(name)) == fi.PINNED_SOURCES[name], (
        f"{name} is not the code its shim was written against: read it, adapt the shim, update the pin"
    )


@pytest.mark.parametrize("package", sorted(fi.PINNED_FILES))
def test_pinned_files_are_unchanged(package):
    assert fi.changed_files(package) == [], (
        f"{package}: these files are not the code shim 10 was written against: read them, adapt it, update PINNED_FILES"
    )


def test_remove_is_idempotent_and_restore_puts_flowers_functions_back(fresh_shims):
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    before = (vce_api.add_messages_to_queue, InMemoryGrid.send_and_receive, InMemoryLinkState.store_message_ins)
    assert fi.remove_message_pickup_floor() and fi.remove_message_pickup_floor()
    assert fi.pickup_floor_removed()
    assert vce_api.add_messages_to_queue is fi.add_messages_to_queue
    assert InMemoryGrid.send_and_receive is fi.send_and_receive
    assert InMemoryLinkState.store_message_ins.__wrapped__ is before[2]  # wrapped once, not twice
    # run_api starts the pickup thread from the module global, so the replacement is what runs
    assert "add_messages_to_queue" in vce_api.run_api.__code__.co_names
    fi.restore_message_pickup_floor()
    after = (vce_api.add_messages_to_queue, InMemoryGrid.send_and_receive, InMemoryLinkState.store_message_ins)
    assert after == before and not fi.pickup_floor_removed()


@pytest.mark.parametrize("mismatch", ["version", "source"])
def test_other_flower_is_left_alone_with_one_warning(fresh_shims, monkeypatch, caplog, mismatch):
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    name = "flwr.superlink.grid.inmemory_grid:InMemoryGrid.send_and_receive"
    if mismatch == "version":
        monkeypatch.setitem(fi.PINNED_VERSIONS, "flwr", "1.41.0")
    else:
        monkeypatch.setitem(fi.PINNED_SOURCES, name, "0" * 64)
    with caplog.at_level(logging.WARNING, logger="sim.federation.flower_internals"):
        assert fi.remove_message_pickup_floor() is False
        assert fi.remove_message_pickup_floor() is False
    assert vce_api.add_messages_to_queue is original
    (record,) = caplog.records
    expected = "flwr 1.42.0 is installed, the shim was written for 1.41.0" if mismatch == "version" else name
    assert expected in record.getMessage()


def _simulation_engine_without_ray(num_nodes: int, monkeypatch):
    """Flower's in-memory LinkState with a run and `num_nodes` nodes, and a grid on it
    (set up as `flwr.simulation.run_simulation` does)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    run = Run.create_empty(run_id=7)
    run.primary_task_id, run.federation_id = 11, NOOP_FEDERATION_ID
    for key, value in (("_task_id", 1), ("_run_id", run.run_id), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, key, value)
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run.run_id)
    nodes = _register_nodes(num_nodes, factory)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return state, nodes, grid


def test_messages_and_replies_move_on_arrival_not_on_a_timer(fresh_shims, monkeypatch):
    """With both fallback cadences at 60 s, two rounds complete only if arrivals wake the loops."""
    from flwr.app import Message, RecordDict
    from flwr.server.superlink.fleet.vce import vce_api

    assert fi.remove_message_pickup_floor()
    monkeypatch.setattr(fi, "IDLE_RECHECK_S", 60.0)
    state, nodes, grid = _simulation_engine_without_ray(3, monkeypatch)
    grid.pull_interval = 60.0
    f_stop = threading.Event()
    ins, res = Queue(), Queue()
    delivered = []

    def echo_clients():  # the backend's part: answer every message with an empty reply
        while not f_stop.is_set():
            try:
                msg = ins.get(timeout=0.05)
            except Empty:
                continue
            delivered.append(msg.metadata.dst_node_id)
            reply = Message(RecordDict(), reply_to=msg)
            reply.metadata.__dict__["_message_id"] = str(uuid4())  # as vce_api.worker does
            res.put(reply)

    threads = [
        threading.Thread(target=vce_api.add_messages_to_queue, args=(state, ins, nodes, f_stop)),
        threading.Thread(target=vce_api.put_message_into_state, args=(state, res, f_stop)),
        threading.Thread(target=echo_clients),
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):  # the second round starts with the pickup thread idle, waiting
            time.sleep(0.1)
            out = [Message(RecordDict(), dst_node_id=node, message_type="train") for node in nodes]
            replies = list(grid.send_and_receive(out, timeout=10))
            assert sorted(m.metadata.src_node_id for m in replies) == sorted(nodes)
            assert not any(m.has_error() for m in replies)
    finally:
        f_stop.set()
        fi.arrivals(state, "ins").notify()  # wake the idle pickup thread to see f_stop
        for thread in threads:
            thread.join(timeout=5)
    assert sorted(delivered) == sorted(list(nodes) * 2)
    assert not any(thread.is_alive() for thread in threads)


def test_send_and_receive_still_times_out(fresh_shims, monkeypatch):
    """A reply that never comes: the shim returns at `timeout`, like Flower's loop."""
    from flwr.app import Message, RecordDict

    assert fi.remove_message_pickup_floor()
    _, nodes, grid = _simulation_engine_without_ray(1, monkeypatch)
    grid.pull_interval = 60.0
    started = time.monotonic()
    replies = grid.send_and_receive([Message(RecordDict(), dst_node_id=next(iter(nodes)), message_type="train")],
                                    timeout=0.3)
    assert list(replies) == [] and time.monotonic() - started < 30


@pytest.mark.filterwarnings("ignore::FutureWarning")  # pyarrow's sort options, via datasets
@pytest.mark.parametrize(
    "scheme, params",
    [
        ("dirichlet", {"alpha": 0.5, "min_partition_size": 2, "self_balancing": False}),
        ("shard", {"shards_per_client": 2, "shard_size": 5}),
        ("pathological", {"classes_per_client": 2, "class_assignment_mode": "first-deterministic"}),
    ],
)
def test_partition_map_gives_what_load_partition_gives(fresh_shims, monkeypatch, scheme, params):
    labels = np.random.default_rng(5).integers(0, 4, size=120)
    used = []
    real = fi.partitioner_index_map
    monkeypatch.setattr("sim.partition.schemes.partitioner_index_map", lambda *a: used.append(real(*a)) or used[-1])
    fast = partition_labels(labels, scheme, 6, seed=2, **params)
    monkeypatch.setitem(fi.PINNED_VERSIONS, "flwr-datasets", "0.0.0")
    monkeypatch.setattr(fi, "_checked", {})
    slow = partition_labels(labels, scheme, 6, seed=2, **params)  # public load_partition, per client
    assert isinstance(used[0], dict) and used[1] is None
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


def test_superlink_replies_are_pulled_within_half_a_second_not_every_three(monkeypatch):
    # Flower's HttpGrid sleeps 3 s between pulls: every round of a deployment ended on a 3 s tick
    from flwr.superlink.grid.http_grid import HttpGrid

    assert fi.shorten_superlink_reply_poll()
    assert HttpGrid.send_and_receive is fi.http_send_and_receive
    pauses = []
    monkeypatch.setattr(fi.time, "sleep", pauses.append)

    class Reply:
        def __init__(self, to):
            self.metadata = type("Metadata", (), {"reply_to_message_id": to})()

    class Grid:  # the two calls send_and_receive makes of an HttpGrid
        pulls = 0

        def push_messages(self, messages):
            return ["a", "b", "c"]

        def pull_messages(self, ids):  # "a" at the 7th pull, "b" at the 8th, "c" at the 11th
            self.pulls += 1
            return [Reply({7: "a", 8: "b", 11: "c"}[self.pulls])] if self.pulls in (7, 8, 11) else []

    replies = HttpGrid.send_and_receive(Grid(), ["m1", "m2", "m3"])
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b", "c"]
    first, most = fi.SUPERLINK_PULL_INTERVAL_S, fi.SUPERLINK_PULL_MAX_INTERVAL_S
    assert (first, most) == (0.1, 0.5)
    # six empty pulls: 0.1 growing by half to 0.5; a reply each: 0.1 again; two empty ones: growing again
    assert pauses == pytest.approx([0.1, 0.15, 0.225, 0.3375, 0.5, 0.5, 0.1, 0.1, 0.15, 0.225])


# --- shim 7: Ray without pyarrow -----------------------------------------------------------

ARROW_PROBE = """
import sys
import ray.util.serialization_addons
from sim.federation.flower_internals import skip_ray_arrow_serializers

class Context:  # takes every registration a real SerializationContext would
    def __getattr__(self, name):
        return lambda *args, **kwargs: None

if sys.argv[1] == "shim":
    assert skip_ray_arrow_serializers()
ray.util.serialization_addons.apply(Context())  # what each Ray process does for its context
print("pyarrow" in sys.modules)
"""


@pytest.mark.parametrize(("how", "imported"), [("shim", "False"), ("as-ray-has-it", "True")])
def test_ray_serialization_imports_pyarrow_only_without_the_shim(how, imported):
    done = subprocess.run([sys.executable, "-c", ARROW_PROBE, how], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == imported


def test_every_ray_worker_of_a_run_installs_the_shim():
    from helpers import compose_config
    from sim.federation.ray_runtime import WORKER_SETUP_HOOK, ray_init_kwargs

    for address in (None, "10.0.0.1:6379"):
        resources = compose_config([f"resources.address={address}" if address else "resources.address=null"]).resources
        assert ray_init_kwargs(resources, verbose=False)["runtime_env"]["worker_process_setup_hook"] == WORKER_SETUP_HOOK
    module, function = WORKER_SETUP_HOOK.rsplit(".", 1)
    assert module == fi.__name__ and callable(getattr(fi, function))


# --- shim 10: a Ray worker's Flower import -------------------------------------------------

SIMULATION_PROBE = """
import sys
from sim.federation import flower_internals as fi
if sys.argv[1] == "other-flower":
    fi.installed_version = lambda package: "0.0.0"
fi.ray_worker_setup()  # what Ray runs in each worker of a run before its first task
from flwr.simulation.ray_transport.ray_actor import ClientAppActor  # what unpickling the actor imports
engine = [m for m in ("flwr.simulation.app", "flwr.server.superlink.linkstate", "sqlalchemy") if m in sys.modules]
import flwr.simulation
probes = hasattr(flwr.simulation, "__wrapped__"), "flwr.simulation.app" in sys.modules
from flwr.simulation import run_simulation  # a name of the package: its __init__ runs now
print(engine, probes, callable(run_simulation), flwr.simulation.ray_transport.ray_actor.ClientAppActor is ClientAppActor)
"""


@pytest.mark.parametrize(("how", "printed"), [
    ("shim", "[] (False, False) True True"),
    ("other-flower", "['flwr.simulation.app', 'flwr.server.superlink.linkstate', 'sqlalchemy'] (False, True) True True"),
])
def test_a_ray_worker_imports_flowers_actor_without_the_simulation_engine(how, printed):
    done = subprocess.run([sys.executable, "-c", SIMULATION_PROBE, how], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == printed
    assert ("shim was written for" in done.stderr) == (how == "other-flower")


@pytest.mark.parametrize("flower_as_pinned", [True, False])
def test_a_supernode_polls_every_fifth_of_a_second_not_every_three(monkeypatch, flower_as_pinned):
    """Shim 9: the SuperNode loop's sleeps (3 s idle, 0.5 s for a reply) last at most SUPERNODE_POLL_S."""
    from flwr.supernode import start_client_internal as node

    monkeypatch.setattr(node, "time", node.time)  # put back after the test
    check_pins_afresh(monkeypatch, flower_as_pinned)
    assert fi.shorten_supernode_polls() == flower_as_pinned
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    node.time.sleep(3)  # as start_client_internal does with nothing to pull
    node.time.sleep(0.5)  # as _push_messages does waiting for a reply
    node.time.sleep(0.05)
    if flower_as_pinned:
        assert slept == [fi.SUPERNODE_POLL_S, fi.SUPERNODE_POLL_S, 0.05]
        assert node.time.monotonic is time.monotonic  # everything else is the time module
    else:
        assert slept == [3, 0.5, 0.05] and node.time is time


def test_an_idle_supernode_waits_on_its_doorbell_instead_of_polling(monkeypatch):
    """Shim 9 with a doorbell: the loop's idle sleep (3 s, nothing pulled) is the doorbell's wait; the reply wait is capped."""
    from flwr.supernode import start_client_internal as node

    monkeypatch.setattr(node, "time", node.time)  # put back after the test
    check_pins_afresh(monkeypatch, True)
    waits, slept = [], []
    assert fi.shorten_supernode_polls(idle_wait=lambda: waits.append("bell"))
    monkeypatch.setattr(time, "sleep", slept.append)
    node.time.sleep(fi.FLOWER_IDLE_SLEEP_S)  # as start_client_internal does with nothing to pull
    node.time.sleep(0.5)  # as _push_messages does waiting for a reply
    assert waits == ["bell"] and slept == [fi.SUPERNODE_POLL_S]
    assert "time.sleep(3)" in fi.inspect.getsource(fi.original(f"{fi._NODE}:start_client_internal"))


# --- shim 12: object pulls retried within 0.2 s ---------------------------------------------


@pytest.mark.parametrize("flower_as_pinned", [True, False])
def test_missing_objects_are_asked_for_again_within_a_fifth_of_a_second(monkeypatch, flower_as_pinned):
    """Shim 12: the waits between tries for an object not there yet start at 0.02 s and stop growing at 0.2 s."""
    from types import SimpleNamespace

    from flwr.supercore.inflatable import inflatable_utils as iu

    for function in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):  # put back after the test
        monkeypatch.setattr(function, "__kwdefaults__", dict(function.__kwdefaults__))
    check_pins_afresh(monkeypatch, flower_as_pinned)
    assert fi.shorten_object_pull_backoff() == flower_as_pinned

    waits = []

    class RecordingEvent(threading.Event):
        def wait(self, timeout=None):  # the pause between tries, recorded instead of waited
            waits.append(timeout)
            return False

    monkeypatch.setattr(iu, "threading", SimpleNamespace(Lock=threading.Lock, Event=RecordingEvent))
    monkeypatch.setattr(iu.random, "uniform", lambda low, high: 0.0)  # no jitter
    tries = {"a": 0}

    def pull(object_id: str) -> bytes:
        tries[object_id] += 1
        if tries[object_id] <= 6:
            raise iu.ObjectUnavailableError(object_id)
        return b"content"

    assert iu.pull_objects(["a"], pull) == {"a": b"content"}
    defaults = iu.pull_and_inflate_object_from_tree.__kwdefaults__
    if flower_as_pinned:
        assert waits == [0.02, 0.04, 0.08, 0.16, 0.2, 0.2]
        assert {k: defaults[k] for k in fi.PULL_BACKOFF} == fi.PULL_BACKOFF  # what a ClientApp task pulls with
    else:
        assert waits == [1, 2, 4, 8, 10, 10]
        assert (defaults["initial_backoff"], defaults["backoff_cap"]) == (1, 10)


# --- shim 11: a sweep's Ray workers kept between its jobs ----------------------------------


@pytest.fixture
def keeping(monkeypatch):
    """Shim 11 switched on, with `ray.kill` recording what it ends (no Ray in the fast tier)."""
    import ray
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    killed = []
    monkeypatch.setattr(ray, "kill", lambda actor, no_restart=True: killed.append(actor))
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    assert fi.keep_actors_between_runs(True)
    yield killed, RayBackend, BasicActorPool
    fi._kept_actors.clear()
    fi.keep_actors_between_runs(False)


def _pool(pool_class, resources, created):
    """A BasicActorPool as Flower's __init__ leaves it, whose new actors are named new-1, new-2, ..."""
    pool = object.__new__(pool_class)
    pool.client_resources, pool.pool, pool.num_actors, pool._future_to_actor = resources, [], 0, {}
    pool.create_actor_fn = lambda: created.append(f"new-{len(created) + 1}") or created[-1]
    return pool


def test_a_run_keeps_its_idle_actors_and_the_next_pool_of_equal_resources_takes_them(keeping):
    killed, backend_class, pool_class = keeping
    one_cpu = {"num_cpus": 1.0, "num_gpus": 0.0}
    created = []
    first = _pool(pool_class, one_cpu, created)
    first.add_actors_to_pool(2)
    first._future_to_actor = {"straggler's future": first.pool.pop()}  # still busy at the end
    backend = object.__new__(backend_class)
    backend.pool = first
    backend.terminate()  # no ray.shutdown: Ray stays up
    assert fi.kept_actor_count() == 1 and killed == ["new-2"]  # the busy one is ended
    second = _pool(pool_class, {"num_gpus": 0, "num_cpus": 1}, created)
    second.add_actors_to_pool(2)
    assert second.pool == ["new-1", "new-3"] and second.num_actors == 2  # the kept one, then a new one
    assert fi.kept_actor_count() == 0


def test_kept_actors_of_other_resources_are_ended_before_new_ones_start(keeping):
    killed, backend_class, pool_class = keeping
    created = []
    first = _pool(pool_class, {"num_cpus": 1.0, "num_gpus": 0.0}, created)
    first.add_actors_to_pool(2)
    backend = object.__new__(backend_class)
    backend.pool = first
    backend.terminate()
    second = _pool(pool_class, {"num_cpus": 2.0, "num_gpus": 0.0}, created)
    second.add_actors_to_pool(1)
    assert killed == ["new-1", "new-2"] and second.pool == ["new-3"]
    assert fi.release_kept_actors() == 0


def test_switching_off_gives_flower_its_terminate_back(keeping):
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    fi.keep_actors_between_runs(False)
    assert RayBackend.terminate is fi.original(fi.KEEP_ACTORS_SHIM[0])
    assert fi.keep_actors_between_runs(True) and RayBackend.terminate is fi._terminate_keeping_actors


# --- shim 13: a SuperExec woken by its SuperNode --------------------------------------------


@pytest.fixture
def supernode_module(monkeypatch):
    """Flower's SuperNode loop module, its `pull_objects` and the shim's record of it put back after the test."""
    from flwr.supernode import start_client_internal as node

    monkeypatch.setattr(node, "pull_objects", node.pull_objects)
    monkeypatch.setattr(fi, "_kept_originals", dict(fi._kept_originals))
    return node


def _store_one_message(node, on_pull, states: list):
    """Flower's real `_pull_and_store_message` on an in-memory NodeState (appended to `states` first),
    for one train message with arrays; `on_pull()` is called for each object pulled."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.supercore.constant import TaskType
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supercore.run import Run
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    message = Message(RecordDict({"arrays": ArrayRecord([np.ones(3)]), "config": ConfigRecord({"a": 1})}),
                      dst_node_id=5, message_type="train")
    message.metadata.__dict__["_message_id"] = message.object_id
    objects = {object_id: obj.deflate() for object_id, obj in get_all_nested_objects(message).items()}
    store = InMemoryObjectStore()
    state = InMemoryNodeState(store)
    state.set_node_id(5)
    states.append(state)
    run = Run.create_empty(1)
    run.primary_task_type = TaskType.CLIENT_APP
    state.store_run(run)

    def pull_object(run_id: int, object_id: str) -> bytes:
        on_pull()
        return objects[object_id]

    return node._pull_and_store_message(
        state=state, object_store=store, node_config={}, receive=lambda: (message, get_object_tree(message)),
        get_run=None, get_fab=None, pull_object=pull_object, confirm_message_received=lambda *args: None,
        trusted_entities=None)


@pytest.mark.parametrize("flower_as_pinned", [True, False])
def test_a_supernode_rings_once_a_message_has_its_task_before_pulling_its_objects(supernode_module, monkeypatch,
                                                                                  task_identity, flower_as_pinned):
    """Shim 13, the SuperNode's side: Flower's own loop step rings after creating the task, before the objects."""
    check_pins_afresh(monkeypatch, flower_as_pinned)
    events, states = [], []
    assert fi.ring_when_messages_arrive(lambda: events.append(("ring", len(states[0].get_tasks())))) == \
        flower_as_pinned
    assert fi.ring_when_messages_arrive(lambda: events.append("second ring")) == flower_as_pinned  # the first stays
    assert _store_one_message(supernode_module, lambda: events.append("pull"), states) == 1  # its run id
    if flower_as_pinned:
        assert events[0] == ("ring", 1) and events[1:] == ["pull"] * 6  # one task existed at the ring
        assert fi.original(fi._NODE_PULL_OBJECTS) is fi._kept_originals[fi._NODE_PULL_OBJECTS]
    else:
        assert events == ["pull"] * 6
    assert fi.source_hash(fi.original(f"{fi._NODE}:_pull_and_store_message")) == \
        fi.PINNED_SOURCES[f"{fi._NODE}:_pull_and_store_message"]


@pytest.mark.parametrize("flower_as_pinned", [True, False])
def test_a_superexec_waits_between_task_polls_with_the_given_wait(monkeypatch, flower_as_pinned):
    """Shim 13, the SuperExec's side: `run_superexec`'s sleeps between polls become the doorbell's wait."""
    from flwr.supercore.superexec import run_superexec as superexec

    monkeypatch.setattr(superexec, "time", superexec.time)  # put back after the test
    check_pins_afresh(monkeypatch, flower_as_pinned)
    waited, slept = [], []
    monkeypatch.setattr(time, "sleep", slept.append)
    assert fi.wait_between_task_polls(waited.append) == flower_as_pinned
    superexec.time.sleep(2.0)  # as run_superexec does between two polls
    if flower_as_pinned:
        assert waited == [2.0] and slept == [] and superexec.time.monotonic is time.monotonic
    else:
        assert waited == [] and slept == [2.0] and superexec.time is time
