"""Render the Helm chart with the pinned helm and validate what it renders, offline.

`render()` runs `helm template` (no cluster: `lookup` returns nothing); `validate()` checks every manifest
against the Kubernetes API schemas bundled in kubernetes-validate, strictly (unknown fields fail).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "switchboard"
HELM_TIMEOUT_S = 60
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")


class RenderError(Exception):
    """helm refused to render; the message is helm's stderr."""


def install_helm() -> Path:
    """The pinned helm, installed on first use (deploy/tools/install_helm.py; `make test` does it too)."""
    dest = ROOT / ".venv" / "bin" / "helm"
    subprocess.run([sys.executable, str(ROOT / "deploy" / "tools" / "install_helm.py"), str(dest)],
                   check=True, timeout=360, capture_output=True)
    return dest


def render_text(helm: Path, *values_files: Path, sets: Sequence[str] = (), chart: Path = CHART,
                release: str = "sb", namespace: str = "switchboard") -> str:
    """What `helm template` prints (hooks included), less the blank line helm ends every document with.

    Raises:
        RenderError: helm failed (bad values, a `fail` in a template, broken template syntax).
    """
    command = [str(helm), "template", release, str(chart), "--namespace", namespace]
    for path in values_files:
        command += ["--values", str(path)]
    for item in sets:
        command += ["--set", item]
    result = subprocess.run(command, capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout.rstrip() + "\n"


def render(helm: Path, *values_files: Path, sets: Sequence[str] = (), chart: Path = CHART,
           release: str = "sb", namespace: str = "switchboard") -> list[dict[str, Any]]:
    """Rendered manifests (hooks included) as dicts; raises RenderError as render_text() does."""
    text = render_text(helm, *values_files, sets=sets, chart=chart, release=release, namespace=namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate(manifests: Sequence[dict[str, Any]], versions: Sequence[str] = KUBERNETES_VERSIONS) -> None:
    """Raise kubernetes_validate's error for the first manifest that breaks its API schema."""
    for manifest in manifests:
        for version in versions:
            kubernetes_validate.validate(manifest, version, strict=True)


def by_kind(manifests: Sequence[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def container_env(manifests: Sequence[dict[str, Any]], deployment: str) -> dict[str, Any]:
    """What the container of one Deployment sees: its env entries and its ConfigMaps' keys, by name.

    ConfigMap values come back as strings, env entries as their `value` or `valueFrom`.
    """
    configmaps = by_kind(manifests, "ConfigMap")
    spec = by_kind(manifests, "Deployment")[deployment]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    seen: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        seen.update(configmaps[source["configMapRef"]["name"]].get("data") or {})
    for entry in container.get("env", []):
        seen[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return seen
