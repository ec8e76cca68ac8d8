"""Run a rendered pod spec with podman, as a kubelet would run it, so far as one machine allows.

`podman_args()` turns a Deployment's or Job's single container into `podman run` arguments: the image and
its args, the env (values, the rendered ConfigMaps and Secret, the downward API's pod name and IP), the
securityContext (user, read-only root filesystem, dropped capabilities, no privilege escalation), and an
`emptyDir` as a tmpfs owned by the container's user. The host network stands in for the pod network.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from tests.deploy.chart import by_kind


def pod_spec(manifests: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(manifests, kind)[name]["spec"]["template"]["spec"]
    return spec


def _env(manifests: Sequence[dict[str, Any]], container: dict[str, Any], pod_name: str) -> dict[str, str]:
    configmaps = by_kind(manifests, "ConfigMap")
    secrets = {name: {key: base64.b64decode(value).decode() for key, value in (s.get("data") or {}).items()}
               for name, s in by_kind(manifests, "Secret").items()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]].get("data") or {})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secrets[ref["name"]].get(ref["key"])
            if value is None:
                assert ref.get("optional"), f"required Secret key {ref['key']} is missing: the pod would not start"
                continue
            env[entry["name"]] = value
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[entry["name"]] = {"metadata.name": pod_name, "status.podIP": "127.0.0.1"}[path]
        else:
            raise AssertionError(f"unsupported env source {source}")
    return env


def podman_args(manifests: Sequence[dict[str, Any]], kind: str, name: str, pod_name: str,
                *, args: Sequence[str] | None = None) -> list[str]:
    """`podman run` arguments after `run` for the workload's container; `args` replaces the container's."""
    spec = pod_spec(manifests, kind, name)
    (container,) = spec["containers"]
    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    result = ["--name", pod_name, "--network", "host"]
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    if user is not None:
        result += ["--user", f"{user}:{group if group is not None else user}"]
    if security.get("readOnlyRootFilesystem"):
        result.append("--read-only")
    for capability in security.get("capabilities", {}).get("drop", []):
        result += ["--cap-drop", capability]
    if security.get("allowPrivilegeEscalation") is False:
        result += ["--security-opt", "no-new-privileges"]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        assert "emptyDir" in volumes[mount["name"]], f"only emptyDir volumes can run here: {mount}"
        result += ["--tmpfs", f"{mount['mountPath']}:rw,U"]
    for key, value in _env(manifests, container, pod_name).items():
        result += ["--env", f"{key}={value}"]
    result.append(container["image"])
    result += list(args if args is not None else container.get("args", []))
    return result


def http_port(manifests: Sequence[dict[str, Any]], name: str) -> int:
    (container,) = pod_spec(manifests, "Deployment", name)["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    return int(port)


def probe_path(manifests: Sequence[dict[str, Any]], name: str, probe: str) -> str:
    (container,) = pod_spec(manifests, "Deployment", name)["containers"]
    return str(container[probe]["httpGet"]["path"])
