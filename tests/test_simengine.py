"""The simulated engine keeps dockerd's contract: each behaviour runs on both, through reconciler.

Every test in the first part is parametrized over a real sandbox engine (``dockerd``) and a
simulated one (``sim``) and goes through ``reconciler.docker_api``, so a difference between the
simulation and dockerd that reconciler could notice fails here. The second part covers what only
the simulation has (its server process, its controls, many engines in one process).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from waiting import wait_for

from reconciler import docker_api, domain, errors
from simengine import SimFleet

IMAGE = "busybox:local"
SLEEP = ("sleep", "3600")


@pytest.fixture(scope="module")
def sim_fleet() -> Iterator[SimFleet]:
    with SimFleet(3).start() as fleet:
        yield fleet


@pytest.fixture(
    params=[pytest.param("dockerd", marks=pytest.mark.engine), pytest.param("sim")],
)
def url(request: pytest.FixtureRequest) -> str:
    """The URL of engine 1 of the real sandbox fleet, or of the simulated fleet."""
    if request.param == "dockerd":
        return str(request.getfixturevalue("engines")[0].url)
    return request.getfixturevalue("sim_fleet").urls[0]


@pytest.fixture
def client(url: str) -> Iterator[docker_api.EngineClient]:
    c = docker_api.connect(domain.NodeRow(name=domain.NodeName("n1"), url=url), timeout=20)
    yield c
    c.close()


class Made:
    """Unique names for this test; every container created under them is removed afterwards."""

    def __init__(self, url: str) -> None:
        self.api = docker.APIClient(base_url=url, version="auto", timeout=30)
        self.prefix = f"rcl-sim-{uuid.uuid4().hex[:6]}"
        self.count = 0

    def name(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"

    def cleanup(self) -> None:
        for c in self.api.containers(all=True, filters={"name": self.prefix}):
            self.api.remove_container(c["Id"], force=True)
        self.api.close()


@pytest.fixture
def made(url: str) -> Iterator[Made]:
    m = Made(url)
    yield m
    m.cleanup()


def _spec(name: str, **kwargs: Any) -> domain.ContainerSpec:
    return domain.ContainerSpec(name=name, image=IMAGE, command=SLEEP, **kwargs)


def _labels(name: str) -> dict[str, str]:
    return {domain.MANAGED_LABEL: "true", domain.NAME_LABEL: name}


# -- the contract (dockerd and sim) ----------------------------------------------------------
def test_connect_negotiates_1_41_and_reads_the_engines_facts(
    client: docker_api.EngineClient,
) -> None:
    assert client.api_version == "1.41"
    info = client.info()
    assert info.engine_id.count(":") == 11 and info.version.startswith("20.10")
    assert info.cpus >= 1 and info.memory_bytes > 0 and info.os and info.name
    assert "node" in info.labels
    client.ping(timeout=5)
    assert client.calls == {"GET /version": 1, "GET /info": 1, "GET /_ping": 1}


def test_refresh_lists_in_one_call_and_inspect_agrees(
    client: docker_api.EngineClient, made: Made
) -> None:
    idle, busy = made.name(), made.name()
    idle_id = client.create_container(_spec(idle), labels=_labels(idle))
    busy_id = client.create_container(_spec(busy), labels=_labels(busy))
    client.start(busy_id)
    before = client.calls
    listed = {c.name: c for c in client.list_containers()}
    images = client.list_images()
    assert client.calls - before == {docker_api.LIST_CONTAINERS: 1, docker_api.LIST_IMAGES: 1}
    assert listed[idle].id == idle_id and listed[idle].change_key == ("created", "")
    assert listed[busy].state == "running" and listed[busy].status.startswith("Up ")
    assert listed[busy].labels == _labels(busy) and listed[busy].image == IMAGE
    assert listed[busy].created is not None and abs(listed[busy].created - time.time()) < 60
    image_ids = {i.id for i in images if IMAGE in i.tags}
    assert listed[busy].image_id in image_ids
    inspected = client.inspect_container(busy_id)
    assert (inspected.name, inspected.image, inspected.state) == (busy, IMAGE, "running")
    assert inspected.labels == listed[busy].labels and inspected.image_id == listed[busy].image_id
    assert inspected.managed and inspected.desired_name == busy
    assert inspected.status and inspected.status.startswith("running since ")
    assert inspected.created is not None and abs(inspected.created - listed[busy].created) < 1
    assert client.inspect_container(idle_id).status == "created"


def test_create_start_stop_remove_and_inspect_values(
    client: docker_api.EngineClient, made: Made
) -> None:
    name = made.name()
    cid = client.create_container(_spec(name, stop_timeout=1), labels=_labels(name))
    assert len(cid) == 64
    client.start(cid)
    running = client.inspect_container(cid)
    assert running.running and running.exit_code == 0
    client.stop(cid, timeout=1)  # busybox sleep ignores SIGTERM: killed after 1 s
    stopped = client.inspect_container(cid)
    assert stopped.state == "exited" and stopped.exit_code == 137
    assert stopped.status and "with code 137" in stopped.status
    listed = {c.name: c for c in client.list_containers()}[name]
    assert listed.state == "exited" and listed.change_key == ("exited", "(137)")
    client.remove(cid, force=False)
    with pytest.raises(errors.NotFound):
        client.inspect_container(cid)
    assert name not in {c.name for c in client.list_containers()}


def test_start_of_a_running_and_stop_of_a_stopped_container_are_no_ops(
    client: docker_api.EngineClient, made: Made
) -> None:
    name = made.name()
    cid = client.create_container(_spec(name), labels={})
    client.stop(cid, timeout=1)  # never started: dockerd answers 304, the SDK returns
    client.start(cid)
    client.start(cid)  # 304 again
    assert client.inspect_container(cid).running
    raw = made.api.inspect_container(cid)
    assert raw["Name"] == f"/{name}" and raw["State"]["FinishedAt"].startswith("0001-")
    made.api.kill(cid)
    client.stop(cid, timeout=1)
    assert client.inspect_container(cid).exit_code == 137
    with pytest.raises(docker.errors.APIError) as caught:
        made.api.kill(cid)
    assert caught.value.status_code == 409 and "is not running" in str(caught.value.explanation)


def test_name_conflicts_are_409_in_dockerds_words(
    client: docker_api.EngineClient, made: Made
) -> None:
    name = made.name()
    cid = client.create_container(_spec(name), labels={})
    with pytest.raises(errors.NameConflict) as caught:
        client.create_container(_spec(name), labels={})
    assert caught.value.status == 409
    assert (
        f'The container name "/{name}" is already in use by container "{cid}". You have to '
        "remove (or rename) that container to be able to reuse that name." in str(caught.value)
    )
    with pytest.raises(errors.ImageNotFound) as missing:
        client.create_container(
            domain.ContainerSpec(name=made.name(), image="rcl-nope:1"), labels={}
        )
    assert missing.value.status == 404 and "No such image: rcl-nope:1" in str(missing.value)


def test_missing_containers_are_404_and_running_ones_need_force(
    client: docker_api.EngineClient, made: Made
) -> None:
    ghost = f"rcl-ghost-{uuid.uuid4().hex[:8]}"
    for call in (client.inspect_container, client.remove, client.start):
        with pytest.raises(errors.NotFound) as caught:
            call(ghost)
        assert caught.value.status == 404 and f"No such container: {ghost}" in str(caught.value)
    name = made.name()
    cid = client.create_container(_spec(name), labels={})
    client.start(cid)
    with pytest.raises(errors.EngineAPIError) as refused:
        client.remove(cid, force=False)
    assert refused.value.status == 409 and "cannot remove a running container" in str(refused.value)
    client.remove(cid)  # force
    with pytest.raises(errors.NotFound):
        client.inspect_container(cid)


def test_events_since_replay_what_came_before_the_subscription(
    client: docker_api.EngineClient, made: Made
) -> None:
    since = time.time() - 1
    name = made.name()
    cid = client.create_container(_spec(name), labels=_labels(name))
    stream = client.events(since=since, idle_timeout=0.5)
    assert stream.opened_at is not None and abs(stream.opened_at - time.time()) < 60
    replayed = []
    with pytest.raises(errors.EventStreamIdle):
        replayed.extend(stream)
    stream.close()
    create = [e for e in replayed if e.id == cid]
    assert [e.action for e in create] == ["create"]
    assert create[0].type == "container" and abs(create[0].time - time.time()) < 60
    assert create[0].attributes == {**_labels(name), "image": IMAGE, "name": name}
    assert client.calls[docker_api.EVENTS] == 1


def test_live_events_of_a_lifecycle_carry_dockerds_attributes(
    client: docker_api.EngineClient, made: Made
) -> None:
    stream = client.events(since=None, idle_timeout=30)
    seen: list[docker_api.EngineEvent] = []
    ended = threading.Event()

    def read() -> None:
        seen.extend(stream)
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    name = made.name()
    cid = client.create_container(_spec(name), labels=_labels(name))
    client.start(cid)
    client.stop(cid, timeout=0)
    client.remove(cid)
    wait_for(lambda: any(e.id == cid and e.action == "destroy" for e in seen), timeout=20)
    mine = [e for e in seen if e.id == cid]
    actions = [e.action for e in mine]
    assert actions[:2] == ["create", "start"] and actions[-1] == "destroy"
    assert "die" in actions and actions.index("die") < actions.index("stop")
    die = next(e for e in mine if e.action == "die")
    assert die.attributes["exitCode"] == "137" and die.attributes["name"] == name
    assert {e.attributes.get("signal") for e in mine if e.action == "kill"} <= {"15", "9"}
    assert all(e.attributes[domain.MANAGED_LABEL] == "true" for e in mine)
    assert [e.time_nano for e in mine] == sorted(e.time_nano for e in mine)
    stream.close()
    assert ended.wait(5)


def test_list_filters_used_by_the_tests_and_the_sdk(url: str, made: Made) -> None:
    api = made.api
    one, two = made.name(), made.name()
    api.create_container(IMAGE, name=one, labels={"rcl.t": made.prefix})
    two_id = api.create_container(IMAGE, name=two, labels={"rcl.t": "other"})["Id"]
    api.start(two_id)

    def names(**filters: Any) -> set[str]:
        found = api.containers(all=True, filters=filters)
        return {c["Names"][0].lstrip("/") for c in found if c["Names"][0].startswith("/rcl-sim")}

    assert names(label=f"rcl.t={made.prefix}") == {one}
    assert names(label="rcl.t", name=made.prefix) == {one, two}
    assert names(id=two_id[:12]) == {two}
    assert names(status="running", name=made.prefix) == {two}
    running = {c["Id"] for c in api.containers(filters={"name": made.prefix})}
    assert running == {two_id}, "without all=1 only running containers are listed"


# -- the simulation only -----------------------------------------------------------------------
def test_the_server_prints_urls_and_stops_on_sigterm() -> None:
    fleet = SimFleet(5, latency_scale=0).start()
    pid = fleet.pid
    try:
        _check_five_engines(fleet)
    finally:
        fleet.close()
    assert pid is not None
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), "SIGTERM ended the server"


def _check_five_engines(fleet: SimFleet) -> None:
    assert len(set(fleet.urls)) == 5
    assert all(u.startswith("tcp://127.0.0.1:") for u in fleet.urls)
    ids = set()
    for u in fleet.urls:
        with urllib.request.urlopen(f"http://{u[6:]}/v1.41/info", timeout=5) as answer:
            ids.add(json.load(answer)["ID"])
    assert len(ids) == 5, "each engine has its own ID"
    engine = fleet.engines[1]
    client = docker_api.connect(
        domain.NodeRow(name=domain.NodeName("s"), url=engine.url), timeout=5
    )
    cid = client.create_container(_spec("counted"), labels={})
    client.start(cid)
    client.list_containers()
    client.inspect_container(cid)
    client.remove(cid)
    stats = engine.stats()
    urllib_info = {"GET /info": 1}  # the loop above asked each engine once
    assert stats["calls"] == dict(client.calls + collections.Counter(urllib_info)), (
        "the engine counts what reconciler counts"
    )
    assert (stats["containers"], stats["running"], stats["event_streams"]) == (0, 0, 0)
    client.close()


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1].startswith("Z")


def test_unix_sockets_and_simulation_controls(tmp_path: Any) -> None:
    short = f"/tmp/rcl-sim-{uuid.uuid4().hex[:6]}"
    os.makedirs(short)
    try:
        with SimFleet(2, socket_dir=short).start() as fleet:
            assert fleet.urls == [f"unix://{short}/sim1.sock", f"unix://{short}/sim2.sock"]
            row = domain.NodeRow(name=domain.NodeName("s"), url=fleet.urls[1])
            client = docker_api.connect(row, timeout=5)
            assert client.info().labels["node"] == "sim2"
            cid = client.create_container(
                domain.ContainerSpec(name="quick", image=IMAGE, command=("sh", "-c", "exit 3")),
                labels={},
            )
            client.start(cid)
            exited = wait_for(
                lambda: (o := client.inspect_container(cid)).state == "exited" and o, timeout=5
            )
            assert exited.exit_code == 3
            client.close()
    finally:
        for name in os.listdir(short):
            os.unlink(os.path.join(short, name))
        os.rmdir(short)


def test_a_paused_engine_times_out_and_a_process_can_exit_on_its_own(
    sim_fleet: SimFleet,
) -> None:
    engine = sim_fleet.engines[2]
    client = docker_api.connect(
        domain.NodeRow(name=domain.NodeName("s3"), url=engine.url), timeout=1
    )
    cid = client.create_container(_spec(f"rcl-sim-{uuid.uuid4().hex[:6]}"), labels={})
    client.start(cid)
    engine.exit_container(cid, 42)
    assert client.inspect_container(cid).exit_code == 42
    engine.pause()
    try:
        started = time.monotonic()
        with pytest.raises(errors.EngineTimeout):
            client.list_containers()
        assert 0.9 < time.monotonic() - started < 3
    finally:
        engine.resume()
    client.remove(cid)
    client.close()


def test_pull_succeeds_for_known_images_only() -> None:
    with SimFleet(1, latency_scale=0, pullable=["rcl/app:2"]).start() as fleet:
        api = docker.APIClient(base_url=fleet.urls[0], version="auto", timeout=5)
        lines = [json.loads(x) for x in api.pull("rcl/app", tag="2", stream=True)]
        assert lines[-1]["status"] == "Status: Downloaded newer image for rcl/app:2"
        assert any("rcl/app:2" in i["RepoTags"] for i in api.images())
        with pytest.raises(docker.errors.APIError) as caught:
            api.pull("rcl/nope", tag="1")
        assert caught.value.status_code == 404
        api.close()
