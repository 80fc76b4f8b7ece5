"""The Docker boundary against real engines: connect, convert, count calls, classify errors."""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import docker.errors
import pytest
import requests
import urllib3.exceptions
from waiting import wait_for

from reconciler import docker_api, domain, errors
from sandbox.engines import SandboxEngine
from sandbox.tls import TlsFiles

IMAGE = "busybox:local"


def row(url: str, name: str = "n1", **kwargs: object) -> domain.NodeRow:
    return domain.NodeRow(name=domain.NodeName(name), url=url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def client(engines: list[SandboxEngine]) -> Iterator[docker_api.EngineClient]:
    c = docker_api.connect(row(engines[0].url), timeout=10)
    yield c
    c.close()


@pytest.fixture
def name(engines: list[SandboxEngine]) -> Iterator[str]:
    """A unique container name, force-removed from engine n1 afterwards."""
    value = f"rcl-api-{uuid.uuid4().hex[:8]}"
    yield value
    engines[0].docker("rm", "-f", value, check=False)


# -- connecting --------------------------------------------------------------------------------
def test_connect_negotiates_the_engines_api_version_and_reads_its_facts(
    engines: list[SandboxEngine], client: docker_api.EngineClient
) -> None:
    assert client.api_version == "1.41", "dockerd 20.10 speaks 1.41; the SDK default is newer"
    info = client.info()
    raw = engines[0].info()
    assert info.engine_id == raw["ID"]
    assert info.version == raw["ServerVersion"]
    assert info.api_version == "1.41"
    assert info.cpus >= 1 and info.memory_bytes > 0 and info.os
    assert info.labels["node"] == engines[0].name
    assert client.calls == {"GET /version": 1, "GET /info": 1}


def test_unix_socket_urls_work(engines: list[SandboxEngine]) -> None:
    client = docker_api.connect(row(engines[1].unix_url), timeout=5)
    try:
        client.ping()
        assert client.info().labels["node"] == engines[1].name
    finally:
        client.close()


def test_a_url_nothing_listens_on_is_unreachable_with_an_actionable_message() -> None:
    with pytest.raises(errors.EngineUnreachable) as caught:
        docker_api.connect(row("tcp://127.0.0.1:1"), timeout=2)
    assert caught.value.temporary and caught.value.connection_failure
    assert "connect to tcp://127.0.0.1:1: connection refused" in str(caught.value)
    assert "is dockerd running" in str(caught.value)


def test_a_missing_unix_socket_is_unreachable() -> None:
    with pytest.raises(errors.EngineUnreachable, match="socket not found"):
        docker_api.connect(row("unix:///tmp/rcl-no-such-dir/docker.sock"), timeout=2)


def test_an_ssh_host_that_refuses_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(errors.EngineUnreachable, match="connection refused"):
        docker_api.connect(row("ssh://nobody@127.0.0.1:1"), timeout=2)
    assert time.monotonic() - started < 2


def test_plain_tcp_off_loopback_is_refused_unless_the_row_allows_it() -> None:
    with pytest.raises(errors.InsecureTransportRefused) as caught:
        docker_api.connect(row("tcp://192.0.2.10:2375"), timeout=1)
    assert not caught.value.temporary
    assert "allow_insecure_tcp" in str(caught.value) and "TLS" in str(caught.value)
    # Allowed: it really tries (TEST-NET-1 does not answer), and fails on time, not on policy.
    started = time.monotonic()
    with pytest.raises(errors.EngineError) as tried:
        docker_api.connect(row("tcp://192.0.2.10:2375", allow_insecure_tcp=True), timeout=0.5)
    assert not isinstance(tried.value, errors.InsecureTransportRefused)
    assert time.monotonic() - started < 5


def test_an_unknown_scheme_is_a_configuration_error() -> None:
    with pytest.raises(
        errors.NodeConfigurationError, match="must start with unix://, tcp:// or ssh://"
    ):
        docker_api.connect(row("ftp://example.org"), timeout=1)


# -- TLS -----------------------------------------------------------------------------------------
def _tls_row(engine: SandboxEngine, ca: TlsFiles, client: TlsFiles, *, pem: bool) -> domain.NodeRow:
    def value(path: object) -> str:
        return pathlib.Path(str(path)).read_text() if pem else str(path)

    return row(
        engine.url,
        name="tls1",
        tls_ca_cert=value(ca.ca_cert),
        tls_client_cert=value(client.client_cert),
        tls_client_key=value(client.client_key),
    )


@pytest.mark.parametrize("pem", [False, True], ids=["file-paths", "pem-text"])
def test_tls_with_the_right_ca_and_client_certificate_works(
    tls_engine: SandboxEngine, pem: bool
) -> None:
    assert tls_engine.tls is not None
    client = docker_api.connect(
        _tls_row(tls_engine, tls_engine.tls, tls_engine.tls, pem=pem), timeout=5
    )
    try:
        assert client.info().engine_id
        assert client.url.startswith("tcp://")
    finally:
        client.close()


def test_tls_from_a_per_node_folder_in_the_docker_cert_path_layout(
    tls_engine: SandboxEngine, tmp_path: pathlib.Path
) -> None:
    files = tls_engine.tls
    assert files is not None
    for name, path in {
        "ca": files.ca_cert,
        "cert": files.client_cert,
        "key": files.client_key,
    }.items():
        (tmp_path / f"{name}.pem").write_bytes(pathlib.Path(path).read_bytes())
    client = docker_api.connect(row(tls_engine.url, tls_ca_cert=str(tmp_path)), timeout=5)
    try:
        client.ping()
    finally:
        client.close()


def test_tls_with_the_wrong_ca_says_certificate_verification_failed(
    tls_engine: SandboxEngine, other_tls: TlsFiles
) -> None:
    assert tls_engine.tls is not None
    bad = _tls_row(tls_engine, other_tls, tls_engine.tls, pem=False)
    with pytest.raises(errors.TLSVerificationFailed) as caught:
        docker_api.connect(bad, timeout=5)
    assert "certificate verification failed" in str(caught.value)
    assert caught.value.connection_failure and not caught.value.temporary


def test_tls_with_missing_files_is_a_configuration_error(tls_engine: SandboxEngine) -> None:
    bad = row(tls_engine.url, tls_ca_cert="/nonexistent/ca.pem")
    with pytest.raises(errors.NodeConfigurationError, match="unusable TLS settings"):
        docker_api.connect(bad, timeout=5)


# -- containers ----------------------------------------------------------------------------------
def test_create_maps_every_spec_field(
    engines: list[SandboxEngine], client: docker_api.EngineClient, name: str
) -> None:
    ports = (
        domain.PortBinding(container_port=80, host_port=None),
        domain.PortBinding(container_port=53, protocol="udp", host_ip="127.0.0.1", host_port=0),
    )
    spec = domain.ContainerSpec(
        name=name,
        image=IMAGE,
        command=("3600",),
        entrypoint=("sleep",),
        env={"A": "1"},
        labels={"team": "x", "reconciler.managed": "no"},
        ports=ports,
        mounts=(domain.Mount(target="/data", source=f"{name}-vol"),),
        cpus=0.5,
        memory_bytes=64 << 20,
        user="1000:1000",
        workdir="/tmp",
        stop_timeout=3,
    )
    cid = client.create_container(spec, labels={"reconciler.managed": "true"})
    raw = json.loads(engines[0].docker("inspect", cid).stdout)[0]
    config, host = raw["Config"], raw["HostConfig"]
    assert config["Entrypoint"] == ["sleep"] and config["Cmd"] == ["3600"]
    assert "A=1" in config["Env"]
    assert config["Labels"] == {"team": "x", "reconciler.managed": "true"}, "ownership wins"
    assert set(config["ExposedPorts"]) == {"80/tcp", "53/udp"}
    assert host["PortBindings"]["53/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "0"}]
    assert host["Mounts"][0]["Target"] == "/data" and host["Mounts"][0]["Type"] == "volume"
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 << 20
    assert config["User"] == "1000:1000" and config["WorkingDir"] == "/tmp"
    assert config["StopTimeout"] == 3
    assert host["NetworkMode"] == "default", "network None leaves the mode unset"
    engines[0].docker("rm", "-f", "-v", cid)


def test_lifecycle_and_inspect_values(client: docker_api.EngineClient, name: str) -> None:
    spec = domain.ContainerSpec(name=name, image=IMAGE, command=("sleep", "60"), stop_timeout=1)
    cid = client.create_container(
        spec, labels={domain.MANAGED_LABEL: "true", domain.NAME_LABEL: name}
    )
    created = client.inspect_container(cid)
    assert (created.name, created.image, created.state) == (name, IMAGE, "created")
    assert created.managed and created.desired_name == name
    assert created.created is not None and abs(created.created - time.time()) < 60
    client.start(cid)
    running = client.inspect_container(cid)
    assert running.running and running.status and running.status.startswith("running since ")
    client.stop(cid, timeout=1)
    stopped = client.inspect_container(cid)
    assert stopped.state == "exited" and stopped.exit_code == 137
    assert stopped.status and "with code 137" in stopped.status
    client.remove(cid)
    with pytest.raises(errors.NotFound) as caught:
        client.inspect_container(cid)
    assert not caught.value.temporary and not caught.value.connection_failure


def test_create_errors_are_classified(client: docker_api.EngineClient, name: str) -> None:
    spec = domain.ContainerSpec(name=name, image=IMAGE)
    client.create_container(spec, labels={})
    with pytest.raises(errors.NameConflict):
        client.create_container(spec, labels={})
    with pytest.raises(errors.ImageNotFound):
        client.create_container(
            domain.ContainerSpec(name=name + "-x", image="rcl-nope:1"), labels={}
        )
    with pytest.raises(errors.NotFound):
        client.remove("rcl-no-such-container")


def test_list_is_one_request_and_images_are_listed(
    engines: list[SandboxEngine], client: docker_api.EngineClient, name: str
) -> None:
    engines[0].docker("create", "--name", name, IMAGE)
    before = client.calls
    found = {c.name: c for c in client.list_containers()}
    images = client.list_images()
    assert client.calls - before == {docker_api.LIST_CONTAINERS: 1, docker_api.LIST_IMAGES: 1}
    assert found[name].state == "created" and found[name].image == IMAGE
    assert found[name].change_key == ("created", "")
    assert any(IMAGE in i.tags for i in images)


def test_a_hung_engine_times_out_on_time(engines: list[SandboxEngine]) -> None:
    engine = engines[2]
    client = docker_api.connect(row(engine.url, name=engine.name), timeout=1.0)
    engine.pause()
    try:
        started = time.monotonic()
        with pytest.raises(errors.EngineTimeout) as caught:
            client.list_containers()
        assert 0.9 < time.monotonic() - started < 3
        assert caught.value.connection_failure and caught.value.temporary
        started = time.monotonic()
        with pytest.raises(errors.EngineTimeout):
            client.ping(timeout=0.3)
        assert time.monotonic() - started < 1.5
    finally:
        engine.resume()
        client.close()


def test_the_async_heartbeat_is_counted_and_times_out_on_a_hung_engine(
    engines: list[SandboxEngine],
) -> None:
    engine = engines[2]
    client = docker_api.connect(row(engine.url, name=engine.name), timeout=5.0)

    async def pings() -> float:
        for _ in range(3):
            await client.aping(timeout=2)
        engine.pause()
        try:
            started = time.monotonic()
            with pytest.raises(errors.EngineTimeout) as caught:
                await client.aping(timeout=0.3)
            assert caught.value.engine_fault
            return time.monotonic() - started
        finally:
            engine.resume()

    try:
        waited = asyncio.run(pings())
        assert waited < 1.5
        assert client.calls[docker_api.PING] == 4
    finally:
        client.close()


# -- events ------------------------------------------------------------------------------------
def test_events_arrive_and_close_ends_the_stream_at_once(
    engines: list[SandboxEngine], client: docker_api.EngineClient, name: str
) -> None:
    stream = client.events(since=None, idle_timeout=30)
    assert stream.opened_at is not None and abs(stream.opened_at - time.time()) < 60
    seen: list[docker_api.EngineEvent] = []
    ended = threading.Event()

    def read() -> None:
        for event in stream:
            seen.append(event)
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    cid = engines[0].docker("create", "--name", name, IMAGE).stdout.strip()
    wait_for(lambda: any(e.action == "create" and e.id == cid for e in seen), timeout=5)
    event = next(e for e in seen if e.id == cid)
    assert event.type == "container" and event.attributes["name"] == name
    started = time.monotonic()
    stream.close()
    assert ended.wait(2), "close() from another thread ends the iteration"
    assert time.monotonic() - started < 1


def test_a_silent_stream_ends_with_idle_and_since_replays(
    engines: list[SandboxEngine], client: docker_api.EngineClient, name: str
) -> None:
    since = time.time() - 1
    cid = engines[0].docker("create", "--name", name, IMAGE).stdout.strip()
    stream = client.events(since=since, idle_timeout=0.5)
    replayed = []
    with pytest.raises(errors.EventStreamIdle):
        for event in stream:
            replayed.append((event.action, event.id))
    assert ("create", cid) in replayed
    assert client.calls[docker_api.EVENTS] == 1
    stream.close()


# -- classification without an engine -------------------------------------------------------
def _api_error(status: int, message: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"message": message}).encode()
    return docker.errors.APIError("failed", response=response, explanation=message)


@pytest.mark.parametrize(
    ("status", "message", "doing", "kind", "temporary"),
    [
        pytest.param(
            500,
            "failed to create task for container: task abc: already exists",
            "start container abc",
            errors.StaleTask,
            False,
            id="stale-task",
        ),
        pytest.param(503, "busy", "list containers", errors.EngineAPIError, True, id="5xx"),
        pytest.param(
            400, "bad parameter", "create container x", errors.EngineAPIError, False, id="4xx"
        ),
        pytest.param(
            409, "in use", "create container x", errors.NameConflict, False, id="409-create"
        ),
        pytest.param(
            409, "is running", "remove container x", errors.EngineAPIError, False, id="409-other"
        ),
    ],
)
def test_api_errors_by_status(
    status: int, message: str, doing: str, kind: type[errors.EngineError], temporary: bool
) -> None:
    error = docker_api.classify(_api_error(status, message), node="n1", doing=doing)
    assert type(error) is kind
    assert error.temporary is temporary
    assert error.node == "n1" and message in str(error)
    assert not error.connection_failure


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/v1.41/containers/json?all=1", "/containers/json"),
        ("/v1.41/containers/3f2a9c/json", "/containers/{id}/json"),
        ("/v1.45/containers/3f2a9c/start", "/containers/{id}/start"),
        ("/v1.41/containers/3f2a9c?force=True", "/containers/{id}"),
        ("/v1.41/containers/create?name=web", "/containers/create"),
        ("/version", "/version"),
        ("/_ping", "/_ping"),
    ],
)
def test_operation_keys(path: str, key: str) -> None:
    assert docker_api.operation_path(path) == key


def test_event_lines_are_decoded_across_chunk_boundaries() -> None:
    """One event per chunk is what dockerd sends, but a chunk may hold several or half of one."""
    from reconciler.docker_api.client import _json_lines

    events = [{"Action": "create", "id": "a"}, {"Action": "start", "id": "a"}, {"Action": "die"}]
    text = "".join(json.dumps(e) + "\n" for e in events).encode()
    cut = [text[:5], text[5:40], text[40:41], text[41:], b"not json\n", b"\n"]
    assert list(_json_lines(iter(cut))) == events
    assert list(_json_lines(iter([text]))) == events


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda: int(b"", 16), id="http.client"),
        pytest.param(
            lambda: (_ for _ in ()).throw(urllib3.exceptions.ProtocolError("broken")), id="urllib3"
        ),
    ],
)
def test_a_connection_dropped_mid_stream_says_so(failure: Callable[[], object]) -> None:
    """A dead engine leaves an empty chunk-size line; the error says the stream was closed."""
    from reconciler.docker_api.client import _json_lines

    def dropped() -> Iterator[bytes]:
        yield b'{"Action": "create"}\n'
        failure()

    stream = _json_lines(dropped())
    assert next(stream) == {"Action": "create"}
    with pytest.raises(ConnectionResetError, match="closed the event stream"):
        next(stream)


def test_connections_to_a_unix_socket_are_reused_across_paths(
    engines: list[SandboxEngine],
) -> None:
    """docker-py pools unix-socket connections per request URL; ours share one pool."""
    client = docker_api.connect(
        domain.NodeRow(name=domain.NodeName("n1"), url=engines[0].unix_url), timeout=30
    )
    try:
        for i in range(30):
            with pytest.raises(errors.NotFound):
                client.inspect_container(f"rcl-no-such-container-{i}")
        pools = client._api.adapters["http+docker://"].pools
        assert set(pools.keys()) == {"http+docker://localhost"}  # docker-py alone: one per path
    finally:
        client.close()
