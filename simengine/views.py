"""Records → dockerd 20.10's JSON answers (shapes copied from a sandbox engine's own answers)."""

from __future__ import annotations

import os
import time
from typing import Any

from simengine.engine import DEFAULT_IMAGE, Container, Engine, Image

STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
ZERO_TIME = "0001-01-01T00:00:00Z"
_VERSION = "20.10.24+dfsg1"


def rfc3339(ns: int) -> str:
    """Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    if not ns:
        return ZERO_TIME
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def human_duration(seconds: float) -> str:
    """go-units ``HumanDuration``, which dockerd's list ``Status`` uses."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(hours / 24 / 365)} years"


def status_text(c: Container, now_ns: int) -> str:
    if c.state == "running":
        return "Up " + human_duration((now_ns - c.started_ns) / 1e9)
    if c.state == "exited":
        ago = human_duration((now_ns - c.finished_ns) / 1e9)
        return f"Exited ({c.exit_code}) {ago} ago"
    if c.state == "created":
        return "Created"
    return c.state.capitalize()


def version() -> dict[str, Any]:
    details = {
        "ApiVersion": "1.41",
        "Arch": "amd64",
        "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
        "Experimental": "false",
        "GitCommit": "5d6db84",
        "GoVersion": "go1.19.8",
        "KernelVersion": os.uname().release,
        "MinAPIVersion": "1.12",
        "Os": "linux",
    }
    return {
        "Platform": {"Name": ""},
        "Components": [{"Name": "Engine", "Version": _VERSION, "Details": details}],
        "Version": _VERSION,
        "ApiVersion": "1.41",
        "MinAPIVersion": "1.12",
        "GitCommit": "5d6db84",
        "GoVersion": "go1.19.8",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": os.uname().release,
        "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
    }


def info(engine: Engine) -> dict[str, Any]:
    states = [c.state for c in engine.containers.values()]
    return {
        "ID": engine.id,
        "Containers": len(states),
        "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"),
        "ContainersStopped": len(states) - states.count("running") - states.count("paused"),
        "Images": len({i.id for i in engine.images.values()}),
        "Driver": "overlay2",
        "SystemTime": rfc3339(time.time_ns()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": "1",
        "NEventsListener": len(engine.subscribers),
        "KernelVersion": os.uname().release,
        "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
        "OSVersion": "12",
        "OSType": "linux",
        "Architecture": "x86_64",
        "NCPU": os.cpu_count() or 1,
        "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "DockerRootDir": f"/var/lib/simengine/{engine.name}",
        "Name": engine.hostname,
        "Labels": [f"node={engine.name}", "simengine=true"],
        "ExperimentalBuild": False,
        "ServerVersion": _VERSION,
        "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive"},
        "LiveRestoreEnabled": False,
        "Warnings": None,
    }


def _command(c: Container) -> str:
    return " ".join(c.argv)


def summary(c: Container, now_ns: int) -> dict[str, Any]:
    """One entry of ``GET /containers/json``."""
    return {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": _command(c),
        "Created": c.created_ns // 1_000_000_000,
        "Ports": [],
        "Labels": c.labels,
        "State": c.state,
        "Status": status_text(c, now_ns),
        "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode") or "default"},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    }


_CONFIG_DEFAULTS: dict[str, Any] = {
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": {},
}
_HOST_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default",
    "PortBindings": None,
    "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "Mounts": None,
    "Memory": 0,
    "NanoCpus": 0,
    "Privileged": False,
    "ShmSize": 67108864,
    "Runtime": "runc",
}


def inspect(c: Container) -> dict[str, Any]:
    """The answer of ``GET /containers/{id}/json``."""
    argv = c.argv
    config = {"Hostname": c.id[:12], **_CONFIG_DEFAULTS, **c.config}
    if c.config.get("Cmd") is None and not c.config.get("Entrypoint"):
        config["Cmd"] = argv  # the image's default command, as dockerd fills it in
    return {
        "Id": c.id,
        "Created": rfc3339(c.created_ns),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": {
            "Status": c.state,
            "Running": c.running,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": c.state == "dead",
            "Pid": c.pid,
            "ExitCode": c.exit_code,
            "Error": "",
            "StartedAt": rfc3339(c.started_ns),
            "FinishedAt": rfc3339(c.finished_ns),
        },
        "Image": c.image_id,
        "Name": "/" + c.name,
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {**_HOST_DEFAULTS, **c.host_config},
        "Mounts": [],
        "Config": config,
        "NetworkSettings": {"Networks": {}, "Ports": {}},
    }


def image(i: Image, engine: Engine) -> dict[str, Any]:
    """One entry of ``GET /images/json``."""
    tags = sorted(k for k, v in engine.images.items() if v is i) or ["<none>:<none>"]
    return {
        "Containers": -1,
        "Created": i.created if tags != [DEFAULT_IMAGE] else 1796321303,
        "Id": i.id,
        "Labels": None,
        "ParentId": "",
        "RepoDigests": None,
        "RepoTags": tags,
        "SharedSize": -1,
        "Size": i.size,
        "VirtualSize": i.size,
    }
