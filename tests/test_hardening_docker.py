"""Hardening at the Docker boundary and in the executor (issue 10), on real sandboxed engines.

Each test names the item it covers; every one of them failed on the code before the fix:

* 2  errors a row's content causes count against the row, never the node;
* 5  a 404 on start that names something else (a network, a ``container:`` target) is not
     "the container vanished";
* 7  "id already in use" after a dockerd restart is a stale task, like "task … already exists";
* 18 a hung node does not hold the pass, and gets no new rows;
* 6  SIGTERM with actions queued exits 0 within 10 s;
* 11 URLs are checked with the parser that connects;
* 16 TLS failures say what is wrong (TLS wanted, a certificate without its key, an expired one).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from daemons import insert, managed, register, remove_managed, status
from waiting import wait_for

from reconciler import docker_api, domain, errors, planning
from reconciler.docker_api import classify
from reconciler.domain import ContainerSpec, DesiredContainer, DesiredState, Health, NodeName
from reconciler.nodes import node as node_mod
from reconciler.nodes.settings import NodeSettings
from reconciler.runtime import executor
from sandbox.engines import SandboxEngine

IMAGE = "busybox:local"
SLEEP = ("sleep", "3600")
SETTINGS = NodeSettings(
    call_timeout=8.0,
    probe_timeout=1.0,
    backoff_initial=0.2,
    backoff_cap=1.0,
    heartbeat_interval=0.5,
    refresh_interval=30.0,
    stream_idle_timeout=5.0,
)


@contextlib.contextmanager
def running_node(engine: SandboxEngine, name: str = "n1") -> Iterator[node_mod.Node]:
    """A started `Node` for ``engine``, healthy and refreshed; stopped afterwards."""
    row = domain.NodeRow(name=NodeName(name), url=engine.url)
    node = node_mod.Node(row=row, settings=SETTINGS)
    node.start()
    try:
        wait_for(
            lambda: node.snapshot().refreshed and node.health_state.health is Health.HEALTHY,
            timeout=30,
            message=f"{name} healthy",
        )
        yield node
    finally:
        node.stop()


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def _create(name: str, node: NodeName, **spec: object) -> planning.Create:
    body = ContainerSpec(name=name, image=IMAGE, command=SLEEP, **spec)  # type: ignore[arg-type]
    return planning.Create(name, node, body, "h1")


def _execute(
    actions: list[planning.Action], nodes: dict[NodeName, node_mod.Node]
) -> list[executor.Outcome]:
    ex = executor.Executor()
    try:
        return ex.execute(actions, nodes)
    finally:
        ex.close()


# -- item 2: bad rows do not knock out a healthy node --------------------------------------------
def test_rows_refused_for_their_content_leave_the_node_healthy(engines):
    engine = engines[0]
    remove_managed(engine)
    tag = _tag()
    try:
        with running_node(engine) as node:
            bad: list[planning.Action] = [
                _create(f"nouser-{tag}-{i}", node.name, user="nouser") for i in range(6)
            ]
            # 17 MiB of env: dockerd creates it, then containerd refuses the start (500).
            bad.append(_create(f"big-{tag}", node.name, env={"X": "a" * (17 << 20)}))
            outcomes = _execute(bad, {node.name: node})
            assert len(outcomes) == 7 and not any(o.ok for o in outcomes)
            messages = sorted(o.message for o in outcomes)
            assert sum("unable to find user nouser" in m for m in messages) == 6, messages
            assert any("larger than max" in m for m in messages), messages
            # The engine answered every time: the node is as healthy as before, not suspect.
            assert node.health_state.health is Health.HEALTHY
            assert node.health_state.failures == 0 and not node.suspect
            [good] = _execute([_create(f"good-{tag}", node.name)], {node.name: node})
            assert good.ok, good.message
    finally:
        remove_managed(engine)


def test_an_engine_failure_still_counts_against_the_node():
    """The other side of item 2: a 500 that does not depend on the request is the engine's."""
    failure = _api_error(500, "mkdir /var/lib/docker/x: no space left on device")
    error = classify(failure, node="n1", doing="create container web on unix:///x")
    assert type(error) is errors.EngineAPIError and error.engine_fault


# -- item 5: a 404 on start names what is missing ------------------------------------------------
@pytest.mark.parametrize(
    ("network", "missing"),
    [
        pytest.param("nonet-{tag}", "network nonet-{tag} not found", id="missing-network"),
        pytest.param(
            "container:gone-{tag}", "No such container: gone-{tag}", id="container-target"
        ),
    ],
)
def test_404_for_a_missing_network_is_not_a_vanished_container(engines, network, missing):
    engine = engines[0]
    remove_managed(engine)
    tag = _tag()
    name = f"net-{tag}"
    try:
        with running_node(engine) as node:
            [created] = _execute(
                [_create(name, node.name, network=network.format(tag=tag))], {node.name: node}
            )
            assert not created.ok and missing.format(tag=tag) in created.message
            [cid] = [c["Id"] for c in managed(engine) if c["Labels"]["reconciler.name"] == name]
            wait_for(lambda: any(c.id == cid for c in node.snapshot().containers), timeout=10)
            # The next pass's start gets the same 404: the row fails, the container stays known.
            [started] = _execute([planning.Start(name, node.name, cid)], {node.name: node})
            assert not started.ok and started.phase is domain.Phase.FAILED
            assert missing.format(tag=tag) in started.message
            assert any(c.id == cid for c in node.snapshot().containers)
            assert node.health_state.failures == 0
    finally:
        remove_managed(engine)


def test_404_for_the_container_itself_means_it_is_gone(engines):
    engine = engines[0]
    remove_managed(engine)
    name = f"gone-{_tag()}"
    try:
        with running_node(engine) as node:
            with docker.APIClient(base_url=engine.unix_url, version="auto") as api:
                cid = api.create_container(IMAGE, list(SLEEP), name=name)["Id"]
                wait_for(lambda: any(c.id == cid for c in node.snapshot().containers), timeout=10)
                api.remove_container(cid, force=True)  # behind the executor's back
            [outcome] = _execute([planning.Start(name, node.name, cid)], {node.name: node})
            assert outcome.ok and "disappeared" in outcome.message
            assert not any(c.id == cid for c in node.snapshot().containers)
    finally:
        remove_managed(engine)


# -- item 7: "id already in use" is a stale task -------------------------------------------------
def _api_error(status_code: int, message: str) -> docker.errors.APIError:
    """The SDK's exception for an engine answer, built as the SDK builds it."""
    response = requests.Response()
    response.status_code = status_code
    response._content = f'{{"message": "{message}"}}'.encode()
    try:
        response.raise_for_status()
    except requests.HTTPError as e:
        try:
            docker.errors.create_api_error_from_http_exception(e)
        except docker.errors.APIError as api_error:
            return api_error
    raise AssertionError("not an error status")


@pytest.mark.parametrize(
    ("status_code", "message"),
    [
        pytest.param(409, "id already in use", id="id-in-use"),
        pytest.param(500, "task 3f2a: already exists", id="task-exists"),
    ],
)
def test_stale_task_answers_mean_recreate_and_never_count_against_the_node(status_code, message):
    error = classify(
        _api_error(status_code, message), node="n1", doing="start container 3f2a on unix:///x"
    )
    assert isinstance(error, errors.StaleTask)
    assert not error.engine_fault and not error.temporary


# -- item 18: one hung node does not stall the others ----------------------------------------------
def test_a_hung_node_does_not_hold_the_pass_nor_get_new_rows(engines):
    frozen, healthy = engines[0], engines[1]
    for e in (frozen, healthy):
        remove_managed(e)
    tag = _tag()
    ex = executor.Executor()
    try:
        with running_node(frozen, "n1") as n1, running_node(healthy, "n2") as n2:
            nodes = {n1.name: n1, n2.name: n2}
            frozen.pause()
            actions: list[planning.Action] = [_create(f"hung-{tag}", n1.name)]
            actions += [_create(f"fast-{tag}-{i}", n2.name) for i in range(5)]
            started = time.monotonic()
            outcomes = ex.execute(actions, nodes)
            took = time.monotonic() - started
            # The create on n1 waits for its 8 s call timeout in the background; the pass
            # returns once n1 is suspect (its call unanswered for the 1 s probe timeout).
            assert took < 4.0, f"the pass waited {took:.1f}s for the hung node"
            assert sorted(o.name or "" for o in outcomes if o.ok) == sorted(
                f"fast-{tag}-{i}" for i in range(5)
            )
            snapshot = n1.snapshot()
            assert snapshot.suspect and snapshot.health is Health.HEALTHY
            # A new unpinned row goes to n2 although n1 runs fewer containers.
            row = DesiredContainer(
                f"new-{tag}", DesiredState.RUNNING, None, ContainerSpec(f"new-{tag}", IMAGE), "h"
            )
            the_plan = planning.plan([row], {n1.name: snapshot, n2.name: n2.snapshot()}, now=0)
            creates = [a for a in the_plan.actions if isinstance(a, planning.Create)]
            assert [(a.name, a.node) for a in creates] == [(f"new-{tag}", n2.name)]
            frozen.resume()
            late = wait_for(lambda: ex.execute([], nodes), timeout=20, message="late outcome")
            assert [o.name for o in late] == [f"hung-{tag}"]
    finally:
        frozen.resume()
        ex.close()
        for e in (frozen, healthy):
            remove_managed(e)


# -- item 6: SIGTERM with actions queued -----------------------------------------------------------
def test_sigterm_with_60_actions_queued_exits_zero_within_10s(engines, sqlite_url, tmp_path):
    store = register(sqlite_url, engines)
    tag = _tag()
    names = [f"term-{tag}-{i:02d}" for i in range(60)]
    insert(
        store,
        *({"name": n, "image": IMAGE, "command": list(SLEEP), "node": "n1"} for n in names),
    )
    log = tmp_path / "daemon.log"
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "--database-url", sqlite_url, "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            # SIGTERM while the 60 creates are under way: some done, most still queued.
            wait_for(lambda: len(managed(engines[0])) >= 2, timeout=30, message="creates begun")
            assert len(managed(engines[0])) < 60, "too late: nothing was queued any more"
            sent = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        assert code == 0, log.read_text()[-3000:]
        assert took < 10, f"took {took:.1f}s to stop"
        # Whatever was created is recorded: no container the status table does not know.
        recorded = {r["container_id"] for r in status(store).values() if r["container_id"]}
        assert {c["Id"] for c in managed(engines[0])} <= recorded
    finally:
        store.dispose()
        for e in engines:
            remove_managed(e)


# -- item 11: one parser for the URL -------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("tcp://192.0.2.2\\@127.0.0.1:23750", id="backslash-userinfo"),
        pytest.param("tcp://192.0.2.2@127.0.0.1:23750", id="userinfo"),
        pytest.param("tcp://127.0.0.1:23750#@192.0.2.2", id="fragment"),
        pytest.param("tcp://127.0.0.1 :23750", id="space"),
    ],
)
def test_urls_the_connecting_parser_reads_differently_are_refused(url):
    with pytest.raises(errors.BadEngineURL) as caught:
        docker_api.check_url(url, tls=False, allow_insecure=False)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(errors.NodeConfigurationError, match="unusable URL"):
        docker_api.connect(domain.NodeRow(name=NodeName("n1"), url=url), timeout=1)


def test_plain_tcp_is_judged_on_the_host_that_is_connected_to():
    assert docker_api.check_url("tcp://127.0.0.1:2375", tls=False, allow_insecure=False).host == (
        "127.0.0.1"
    )
    with pytest.raises(errors.InsecureEngineURL):
        docker_api.check_url("tcp://192.0.2.2:2375", tls=False, allow_insecure=False)
    ok = docker_api.check_url("tcp://192.0.2.2:2376", tls=True, allow_insecure=False)
    assert ok.host == "192.0.2.2" and ok.port == 2376
    assert docker_api.check_url("ssh://me@host", tls=False, allow_insecure=False).host == "host"


# -- item 16: TLS messages -------------------------------------------------------------------------
def test_plain_tcp_to_a_tls_port_says_the_engine_wants_tls(tls_engine):
    row = domain.NodeRow(name=NodeName("t1"), url=tls_engine.url, allow_insecure_tcp=True)
    with pytest.raises(errors.TLSError) as caught:
        docker_api.connect(row, timeout=5)
    assert "wants TLS" in str(caught.value) and "400 Bad Request" in str(caught.value)


def test_a_client_certificate_without_its_key_is_refused_on_the_node(tls_engine):
    files = tls_engine.tls
    assert files is not None
    row = domain.NodeRow(
        name=NodeName("t1"),
        url=tls_engine.url,
        tls_ca_cert=str(files.ca_cert),
        tls_client_cert=str(files.client_cert),
    )
    node = node_mod.Node(row=row, settings=SETTINGS)
    node.start()
    try:
        wait_for(lambda: node.health_state.last_error, timeout=10, message="last_error")
        error = node.health_state.last_error or ""
        assert "tls_client_cert is set but tls_client_key is not" in error
        assert node.health_state.health is not Health.HEALTHY
    finally:
        node.stop()


def test_an_expired_client_certificate_is_reported_as_expired(tls_engine, tmp_path):
    files = tls_engine.tls
    assert files is not None
    cert, key = _expired_client_cert(files.ca_cert, files.ca_key, tmp_path)
    row = domain.NodeRow(
        name=NodeName("t1"),
        url=tls_engine.url,
        tls_ca_cert=str(files.ca_cert),
        tls_client_cert=str(cert),
        tls_client_key=str(key),
    )
    with pytest.raises(errors.TLSError) as caught:
        docker_api.connect(row, timeout=5)
    assert "client certificate expired on 2020-01-02" in str(caught.value)


def _expired_client_cert(ca_cert: Path, ca_key: Path, folder: Path) -> tuple[Path, Path]:
    """A client certificate signed by the engine's CA that expired on 2020-01-02."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    utc = datetime.UTC
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "expired")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=utc))
        .not_valid_after(datetime.datetime(2020, 1, 2, tzinfo=utc))
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(signer, hashes.SHA256())
    )
    cert_path, key_path = folder / "expired-cert.pem", folder / "expired-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_node_add_refuses_the_bypass_url(sqlite_url):
    from click.testing import CliRunner

    from reconciler import cli

    runner = CliRunner()
    assert runner.invoke(cli.main, ["--database-url", sqlite_url, "db", "upgrade"]).exit_code == 0
    url = "tcp://192.0.2.2\\@127.0.0.1:23750"
    refused = runner.invoke(cli.main, ["--database-url", sqlite_url, "node", "add", "n1", url])
    assert refused.exit_code == 2 and "backslash" in refused.output, refused.output
