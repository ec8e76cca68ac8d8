"""The Helm chart renders, with the default and the production example values, into manifests that pass the
Kubernetes API schemas offline and yamllint; broken values or templates fail (contract §1, §7)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.deploy.chart import (
    CHART,
    ROOT,
    RenderError,
    by_kind,
    container_env,
    install_helm,
    render,
    render_text,
    validate,
)

pytestmark = pytest.mark.chart

PRODUCTION = CHART / "values-production.yaml"
EVERY_SETTING = Path(__file__).parent / "data" / "values-every-setting.yaml"
YAMLLINT_CONFIG = ROOT / "deploy" / ".yamllint"

# Contract §2, by the service that reads each variable (OTEL_* stands for the standard OTel variables).
VOICE_SETTINGS = {
    "OPENAI_API_KEY", "SWITCHBOARD_ENGINE_URL", "OPENAI_REALTIME_URL", "OPENAI_REALTIME_MODEL",
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL", "TWILIO_VALIDATE_SIGNATURES",
    "TWILIO_WEBHOOK_SHARED_KEYS",
    "PUBLIC_BASE_URL", "ELEVENLABS_API_KEY", "ELEVENLABS_BASE_URL", "CARTESIA_API_KEY", "CARTESIA_BASE_URL",
    "AI_SERVER_URL", "APP_SERVER_URL", "SWITCHBOARD_SERVICE_TOKEN", "SWITCHBOARD_INACTIVITY_PROMPT_S",
    "SWITCHBOARD_INACTIVITY_HANGUP_S", "SWITCHBOARD_MAX_CALL_S", "SWITCHBOARD_WRAP_UP_S",
    "SWITCHBOARD_THINKING_DELAY_MS", "SWITCHBOARD_THINKING_INTERVAL_S", "SWITCHBOARD_TOOL_TIMEOUT_S",
    "SWITCHBOARD_DRAIN_TIMEOUT_S", "SWITCHBOARD_LOG_FORMAT", "SWITCHBOARD_STATE_URL", "SWITCHBOARD_INSTANCE_ID",
    "SWITCHBOARD_STREAM_URL_TTL_S", "SWITCHBOARD_DTMF_PAUSE_MS", "OPIK_URL_OVERRIDE", "OPIK_API_KEY",
    "OPIK_WORKSPACE", "OPIK_PROJECT_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT",
}
AI_SETTINGS = {"SWITCHBOARD_SERVICE_TOKEN", "AI_DATABASE_URL", "SWITCHBOARD_LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT"}
# The App server also prices calls by the voice servers' model and links its dashboard to Opik traces.
APP_SETTINGS = {"SWITCHBOARD_SERVICE_TOKEN", "APP_DATABASE_URL", "SWITCHBOARD_SESSION_SECRET",
                "SWITCHBOARD_LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OPENAI_REALTIME_MODEL",
                "OPIK_URL_OVERRIDE", "OPIK_API_KEY", "OPIK_WORKSPACE", "OPIK_PROJECT_NAME",
                "SWITCHBOARD_APP_PUBLIC_URL", "SWITCHBOARD_TRUSTED_PROXIES", "SWITCHBOARD_DELIVERY_RETENTION_DAYS"}
SECRET_SETTINGS = {"OPENAI_API_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WEBHOOK_SHARED_KEYS",
                   "ELEVENLABS_API_KEY", "CARTESIA_API_KEY", "SWITCHBOARD_SERVICE_TOKEN", "AI_DATABASE_URL",
                   "APP_DATABASE_URL", "SWITCHBOARD_STATE_URL", "SWITCHBOARD_SESSION_SECRET", "OPIK_API_KEY"}


@pytest.fixture(scope="module")
def helm() -> Path:
    return install_helm()


def _voice(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(manifests, "Deployment")["sb-switchboard-voice"]


def _lint(text: str) -> list[str]:
    config = YamlLintConfig(file=str(YAMLLINT_CONFIG))
    return [f"{p.line}:{p.column} {p.desc} ({p.rule})" for p in linter.run(text, config)]


@pytest.mark.parametrize("values", [(), (PRODUCTION,), (EVERY_SETTING,)], ids=["default", "production", "every-setting"])
def test_chart_renders_manifests_that_pass_the_kubernetes_schemas_and_yamllint(helm: Path, values: tuple[Path, ...]) -> None:
    manifests = render(helm, *values)
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Job"} <= kinds
    validate(manifests)
    assert _lint(render_text(helm, *values)) == []


def test_values_files_and_edge_examples_pass_yamllint() -> None:
    files = [CHART / "Chart.yaml", CHART / "values.yaml", PRODUCTION, *sorted((ROOT / "deploy" / "edge").glob("*.yaml"))]
    problems = {str(path.relative_to(ROOT)): _lint(path.read_text()) for path in files}
    assert problems == {str(path.relative_to(ROOT)): [] for path in files}


def test_helm_lint_passes_for_both_values_files(helm: Path) -> None:
    for values in ([], ["--values", str(PRODUCTION)]):
        result = subprocess.run([str(helm), "lint", "--strict", str(CHART), *values], capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_contract_setting_reaches_the_service_that_reads_it_and_secrets_stay_in_the_secret(helm: Path) -> None:
    manifests = render(helm, EVERY_SETTING)
    validate(manifests)
    seen = {name: container_env(manifests, f"sb-switchboard-{name}") for name in ("voice", "ai", "app")}
    assert VOICE_SETTINGS - set(seen["voice"]) == set()
    assert AI_SETTINGS - set(seen["ai"]) == set()
    assert APP_SETTINGS - set(seen["app"]) == set()
    # No service gets another's database or secrets.
    assert "APP_DATABASE_URL" not in seen["voice"] and "AI_DATABASE_URL" not in seen["voice"]
    assert "SWITCHBOARD_SESSION_SECRET" not in seen["ai"] and "OPENAI_API_KEY" not in seen["app"]
    assert "TWILIO_WEBHOOK_SHARED_KEYS" not in seen["ai"] and "TWILIO_WEBHOOK_SHARED_KEYS" not in seen["app"]
    for service, env in seen.items():
        for name in SECRET_SETTINGS & set(env):
            assert env[name] == {"secretKeyRef": {"name": "sb-switchboard", "key": name, "optional": env[name]
                                                  ["secretKeyRef"]["optional"]}}, (service, name)
    # Cluster wiring the chart derives.
    voice = seen["voice"]
    assert voice["SWITCHBOARD_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert voice["AI_SERVER_URL"] == "http://sb-switchboard-ai:8081"
    assert voice["APP_SERVER_URL"] == "http://sb-switchboard-app:8082"
    assert voice["SWITCHBOARD_ENGINE_URL"] == "ws://sb-switchboard-engine:8083/v1/realtime"
    assert voice["PUBLIC_BASE_URL"] == "https://voice.example.test"
    assert seen["app"]["OPIK_WORKSPACE"] == voice["OPIK_WORKSPACE"] == "support"
    # Three voice servers: the shared state URL must be there, or the pod does not start.
    assert voice["SWITCHBOARD_STATE_URL"]["secretKeyRef"]["optional"] is False
    assert "sb-switchboard-engine" in by_kind(manifests, "Deployment")
    (secret,) = by_kind(manifests, "Secret").values()
    assert set(secret["data"]) == SECRET_SETTINGS


def test_voice_pods_drain_before_they_go(helm: Path) -> None:
    manifests = render(helm, PRODUCTION)
    voice = _voice(manifests)
    strategy = voice["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}}
    pod = voice["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    # preStop pause (15) + SWITCHBOARD_DRAIN_TIMEOUT_S (1860, >= the 1800 s longest call) + margin (30).
    assert pod["spec"]["terminationGracePeriodSeconds"] == 15 + 1860 + 30
    assert container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "15"]}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health-check/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health-check/live"
    assert container["readinessProbe"]["periodSeconds"] * container["readinessProbe"]["failureThreshold"] <= 2
    # A restart cuts every call on the pod: liveness gives a busy process a minute.
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60 and liveness["timeoutSeconds"] >= 5
    assert pod["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert container["args"] == ["serve", "voice", "--host", "0.0.0.0", "--port", "8080"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"] == "registry.example.com/switchboard/switchboard:0.1.0"
    # The HPA owns the replica count and scales on live calls per pod.
    assert "replicas" not in voice["spec"]
    (hpa,) = by_kind(manifests, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sb-switchboard-voice"
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "switchboard_live_calls"}, "target": {"type": "AverageValue", "averageValue": "40"}}}]
    pdbs = by_kind(manifests, "PodDisruptionBudget")
    assert pdbs["sb-switchboard-voice"]["spec"]["maxUnavailable"] == 1
    assert pdbs["sb-switchboard-voice"]["spec"]["selector"]["matchLabels"] == \
        voice["spec"]["selector"]["matchLabels"]
    # The per-replica route's target: every ready voice pod (a draining one drops out).
    headless = by_kind(manifests, "Service")["sb-switchboard-voice-pods"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is False
    # Secrets come from the operator's Secret: the chart creates none.
    assert by_kind(manifests, "Secret") == {}


def test_migrations_run_once_per_release_as_a_hook_before_the_rollout(helm: Path) -> None:
    manifests = render(helm)
    (job,) = by_kind(manifests, "Job").values()
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate", "all"]
    assert {e["name"] for e in container["env"]} >= {"AI_DATABASE_URL", "APP_DATABASE_URL", "SWITCHBOARD_STATE_URL"}
    # The chart-made Secret is a hook too, created before the Job that reads it.
    (secret,) = by_kind(manifests, "Secret").values()
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert len(secret["data"]["SWITCHBOARD_SERVICE_TOKEN"]) > 40


@pytest.mark.parametrize(("sets", "message"), [
    (["voice.replicas=two"], "/voice/replicas"),
    (["voicee.replicas=2"], "voicee"),
    (["config.voice.SWITCHBOARD_MAX_CALL_S=lots"], "SWITCHBOARD_MAX_CALL_S"),
    (["config.voice.PUBLIC_BASE_URL=voice.example.com/path"], "PUBLIC_BASE_URL"),
    (["config.voice.SWITCHBOARD_DRAIN_TIMEOUT_S=600"], "must be at least SWITCHBOARD_MAX_CALL_S"),
    (["voice.replicas=2"], "SWITCHBOARD_STATE_URL is required"),
    (["voice.autoscaling.enabled=true"], "SWITCHBOARD_STATE_URL is required"),
    (["podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    # A secret never goes in a ConfigMap.
    (["config.voice.TWILIO_WEBHOOK_SHARED_KEYS=KS1:s3cret"], "TWILIO_WEBHOOK_SHARED_KEYS"),
    (["config.common.TWILIO_WEBHOOK_SHARED_KEYS=KS1:s3cret"], "TWILIO_WEBHOOK_SHARED_KEYS"),
    (["app.publicUrl=support.example.com"], "/app/publicUrl"),
    (["app.trustedProxies={proxy.example.com}"], "/app/trustedProxies/0"),
    (["app.trustedProxies=10.0.0.0/8"], "/app/trustedProxies"),
    (["app.publicUrl=https://a.example.test", "config.voice.SWITCHBOARD_APP_PUBLIC_URL=https://b.example.test"],
     "set app.publicUrl or config.voice.SWITCHBOARD_APP_PUBLIC_URL, not both"),
    (["app.publicUrl=https://a.example.test", "config.app.SWITCHBOARD_APP_PUBLIC_URL=https://b.example.test"],
     "set app.publicUrl or config.app.SWITCHBOARD_APP_PUBLIC_URL, not both"),
    (["app.trustedProxies={10.0.0.0/8}", "config.app.SWITCHBOARD_TRUSTED_PROXIES=*"],
     "set app.trustedProxies or config.app.SWITCHBOARD_TRUSTED_PROXIES, not both"),
    (["app.deliveryRetentionDays=0"], "/app/deliveryRetentionDays"),
    (["app.deliveryRetentionDays=a month"], "/app/deliveryRetentionDays"),
    (["config.app.SWITCHBOARD_DELIVERY_RETENTION_DAYS=7"],
     "set app.deliveryRetentionDays, not config.app.SWITCHBOARD_DELIVERY_RETENTION_DAYS"),
])
def test_bad_values_fail_to_render_with_a_message_naming_them(helm: Path, sets: list[str], message: str) -> None:
    with pytest.raises(RenderError, match=message.replace("/", ".")):
        render(helm, sets=sets)


def test_the_dashboard_url_and_trusted_proxies_reach_only_the_services_that_read_them(helm: Path) -> None:
    manifests = render(helm, sets=["app.publicUrl=https://support.example.test",
                                   "app.trustedProxies={10.0.0.0/8,192.168.1.7,fd00::/8}"])
    validate(manifests)
    voice, ai, app = (container_env(manifests, f"sb-switchboard-{name}") for name in ("voice", "ai", "app"))
    # The App server links helpdesk tickets under its public URL; the voice servers link Opik traces there.
    assert app["SWITCHBOARD_APP_PUBLIC_URL"] == voice["SWITCHBOARD_APP_PUBLIC_URL"] == "https://support.example.test"
    # Only the App server reads SWITCHBOARD_TRUSTED_PROXIES.
    assert app["SWITCHBOARD_TRUSTED_PROXIES"] == "10.0.0.0/8,192.168.1.7,fd00::/8"
    assert "SWITCHBOARD_TRUSTED_PROXIES" not in voice
    assert {"SWITCHBOARD_APP_PUBLIC_URL", "SWITCHBOARD_TRUSTED_PROXIES"} & set(ai) == set()
    # Unset: the services' own defaults apply, so the chart sets neither.
    defaults = render(helm)
    for name in ("voice", "ai", "app"):
        env = container_env(defaults, f"sb-switchboard-{name}")
        assert {"SWITCHBOARD_APP_PUBLIC_URL", "SWITCHBOARD_TRUSTED_PROXIES"} & set(env) == set(), name
    # The production example sets both.
    production = container_env(render(helm, PRODUCTION), "sb-switchboard-app")
    assert production["SWITCHBOARD_APP_PUBLIC_URL"] == "https://support.example.com"
    assert production["SWITCHBOARD_TRUSTED_PROXIES"] == "10.0.0.0/8"


def test_the_delivery_retention_reaches_only_the_app_server(helm: Path) -> None:
    for sets, days in (([], "30"), (["app.deliveryRetentionDays=400"], "400")):
        manifests = render(helm, sets=sets)
        validate(manifests)
        voice, ai, app = (container_env(manifests, f"sb-switchboard-{name}") for name in ("voice", "ai", "app"))
        assert app["SWITCHBOARD_DELIVERY_RETENTION_DAYS"] == days
        assert "SWITCHBOARD_DELIVERY_RETENTION_DAYS" not in voice and "SWITCHBOARD_DELIVERY_RETENTION_DAYS" not in ai


def test_a_broken_template_fails_validation(helm: Path, tmp_path: Path) -> None:
    chart = tmp_path / "switchboard"
    shutil.copytree(CHART, chart)
    template = chart / "templates" / "voice.yaml"
    template.write_text(template.read_text().replace("containerPort:", "containerport:"))
    manifests = render(helm, chart=chart)
    with pytest.raises(jsonschema.ValidationError, match="containerport"):
        validate(manifests)
    template.write_text(template.read_text().replace("  strategy:", "strategy:"))
    with pytest.raises((RenderError, yaml.YAMLError)):
        render(helm, chart=chart)


@pytest.mark.parametrize(("drain", "grace"), [("1860.5", 10 + 1861 + 30), ("3600", 10 + 3600 + 30)])
def test_the_grace_period_follows_the_drain_timeout(helm: Path, drain: str, grace: int) -> None:
    manifests = render(helm, sets=[f"config.voice.SWITCHBOARD_DRAIN_TIMEOUT_S={drain}"])
    assert _voice(manifests)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    assert by_kind(manifests, "ConfigMap")["sb-switchboard-voice"]["data"]["SWITCHBOARD_DRAIN_TIMEOUT_S"] == drain


def test_the_instance_id_can_come_from_the_pod_ip(helm: Path) -> None:
    manifests = render(helm, sets=["voice.instanceIdFrom=podIP"])
    assert container_env(manifests, "sb-switchboard-voice")["SWITCHBOARD_INSTANCE_ID"] == \
        {"fieldRef": {"fieldPath": "status.podIP"}}
    with pytest.raises(RenderError, match="instanceIdFrom"):
        render(helm, sets=["voice.instanceIdFrom=podUID"])


def test_the_edge_examples_name_services_the_chart_makes(helm: Path) -> None:
    """Release "switchboard" in namespace "switchboard", as the examples and deploy/README.md assume."""
    manifests = render(helm, PRODUCTION, release="switchboard", namespace="switchboard")
    services = {name: {p["port"] for p in s["spec"]["ports"]} for name, s in by_kind(manifests, "Service").items()}
    edge = ROOT / "deploy" / "edge"
    routes = [doc for doc in yaml.safe_load_all((edge / "gateway-api.yaml").read_text()) if doc["kind"] == "HTTPRoute"]
    backends = [ref for route in routes for rule in route["spec"]["rules"] for ref in rule["backendRefs"]]
    assert backends and all(ref["port"] in services.get(ref["name"], set()) for ref in backends), backends
    haproxy = (edge / "haproxy-kubernetes.cfg").read_text()
    assert "_http._tcp.switchboard-voice-pods.switchboard.svc.cluster.local" in haproxy
    assert "switchboard-voice-pods" in services and by_kind(manifests, "Service")["switchboard-voice-pods"][
        "spec"]["ports"][0]["name"] == "http"
    assert "server replica 0.0.0.0:8080" in haproxy and 8080 in services["switchboard-voice-pods"]
