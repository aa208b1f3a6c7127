"""The rendered manifests agree with the code they deploy, read from the code rather than copied:
ports, probe paths and the gRPC health service, LEANSERVE_* settings, CLI options, the Bento
image's user and paths, metric names, the Prometheus job label, the alert rules and dashboards."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.container.generate import BENTO_PATH, BENTO_UID_GID
from k8s_helpers import (
    JOBS,
    K8S,
    REPO,
    SERVING_OVERLAYS,
    Doc,
    defined_metrics,
    metrics_in,
    needs_kubectl,
    of_kind,
    only,
    render,
    system_routes,
)

import optimise.cache
import optimise.cli
from optimise.profiles import get_profile, list_profiles
from service.grpc.server import HEALTH_SERVICES
from service.settings import ServiceSettings

RULES = REPO / "monitoring" / "alerts" / "leanserve.rules.yaml"
DASHBOARDS = REPO / "monitoring" / "dashboards"
PVC_COMPONENT = K8S / "components" / "model-store-pvc" / "deployment-pvc.yaml"
# The service's own defaults (ServiceSettings() would read this process's environment).
GRPC_PORT = ServiceSettings.model_fields["grpc_port"].default
SETTINGS_PREFIX = ServiceSettings.model_config["env_prefix"]
# LEANSERVE_* variables that are not service settings, and the code that reads each.
BUILD_VARIABLES = {"LEANSERVE_CACHE_DIR": inspect.getsource(optimise.cache)}

pytestmark = needs_kubectl


# --- helpers -------------------------------------------------------------------------------------


def deployment(overlay: str) -> Doc:
    return only(render(overlay), "Deployment", "leanserve")


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def container(overlay: str) -> Doc:
    (main,) = pod_spec(deployment(overlay))["containers"]
    return main


def env(c: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def config(overlay: str) -> dict[str, str]:
    data: dict[str, str] = only(render(overlay), "ConfigMap", "leanserve-config-")["data"]
    return data


def rules_job() -> str:
    """The scrape job the alert rules select (`job="..."`): one name throughout."""
    jobs = set(re.findall(r'job="([^"]+)"', RULES.read_text(encoding="utf-8")))
    assert len(jobs) == 1, jobs
    return jobs.pop()


# --- ports, probes, gRPC health ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_container_ports_are_the_services_ports(overlay: str) -> None:
    c = container(overlay)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    grpc_port = GRPC_PORT
    assert ports == {"http": BentoMLContainer.http.port.get(), "grpc": grpc_port}
    assert ports["http"] == 3000
    assert int(env(c)["LEANSERVE_GRPC_PORT"]) == grpc_port
    # The image's entrypoint serves the Bento: no command or args to keep in step.
    assert "command" not in c and "args" not in c


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_probes_use_the_services_health_endpoints(overlay: str) -> None:
    c = container(overlay)
    routes = system_routes()
    port_names = {p["name"] for p in c["ports"]}
    readiness, liveness = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz" and readiness["path"] in routes
    assert liveness["path"] == "/livez" and liveness["path"] in routes
    assert {readiness["port"], liveness["port"]} == {"http"} <= port_names
    startup = c["startupProbe"]["grpc"]
    assert startup["port"] == GRPC_PORT
    assert startup.get("service", "") in HEALTH_SERVICES
    # A failing model makes the pod unready, never restarts it: liveness is not /readyz.
    assert liveness["path"] != readiness["path"]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_service_exposes_both_ports_to_the_serving_pods_only(overlay: str) -> None:
    docs = render(overlay)
    service = only(docs, "Service", "leanserve")
    pod_labels = deployment(overlay)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {n: (p["port"], p["targetPort"]) for n, p in ports.items()} == {
        "http": (3000, "http"),
        "grpc": (GRPC_PORT, "grpc"),
    }
    assert all(p.get("appProtocol") for p in ports.values())
    for job in JOBS:  # the optimisation pods are never behind the Service
        for workload in of_kind(render(job), "Job"):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert not service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_network_policy_admits_the_two_ports_and_the_monitoring_namespace(overlay: str) -> None:
    docs = render(overlay)
    policy = only(docs, "NetworkPolicy", "leanserve")
    c = container(overlay)
    pod_labels = deployment(overlay)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {p["containerPort"] for p in c["ports"]}
    scrape = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(
            peer.get("namespaceSelector", {}).get("matchLabels")
            == {"kubernetes.io/metadata.name": "monitoring"}
            for peer in rule.get("from", [])
        )
    ]
    assert scrape and {p["port"] for p in scrape[0]["ports"]} == {BentoMLContainer.http.port.get()}


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_hpa_and_pdb_target_the_deployment(overlay: str) -> None:
    docs = render(overlay)
    d = deployment(overlay)
    hpa = only(docs, "HorizontalPodAutoscaler", "leanserve")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "leanserve",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2 and "replicas" not in d["spec"]  # the HPA owns the count
    pdb = only(docs, "PodDisruptionBudget", "leanserve")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    )
    assert d["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]


# --- settings ------------------------------------------------------------------------------------


def leanserve_keys(names: object) -> set[str]:
    return {name for name in names if name.startswith(SETTINGS_PREFIX)}  # type: ignore[attr-defined]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_every_leanserve_variable_is_a_service_setting(overlay: str) -> None:
    c = container(overlay)
    keys = leanserve_keys(config(overlay)) | leanserve_keys(env(c))
    assert keys, overlay
    fields = set(ServiceSettings.model_fields)
    unknown = {k for k in keys if k.removeprefix(SETTINGS_PREFIX).lower() not in fields}
    assert not unknown, f"not fields of ServiceSettings: {sorted(unknown)}"
    assert c["envFrom"] == [
        {
            "configMapRef": {
                "name": only(render(overlay), "ConfigMap", "leanserve-config-")["metadata"]["name"]
            }
        }
    ]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_the_settings_parse_and_reoptimisation_is_off(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for field in ServiceSettings.model_fields:  # only what the pod sets
        monkeypatch.delenv(f"{SETTINGS_PREFIX}{field.upper()}", raising=False)
    values = dict(config(overlay))
    values.update({k: v for k, v in env(container(overlay)).items() if isinstance(v, str)})  # env wins
    for name in leanserve_keys(values):
        monkeypatch.setenv(name, values[name])
    settings = ServiceSettings()  # raises on a value the service would refuse
    assert settings.reoptimise_enabled is False  # each replica would build its own candidate
    assert settings.grpc_port == GRPC_PORT


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_admin_token_comes_from_an_optional_secret(overlay: str) -> None:
    token = env(container(overlay))["LEANSERVE_ADMIN_TOKEN"]
    assert token == {"secretKeyRef": {"name": "leanserve-admin", "key": "token", "optional": True}}
    assert "admin_token" in ServiceSettings.model_fields


def test_no_secret_values_are_committed() -> None:
    for directory in SERVING_OVERLAYS + JOBS + ["storage"]:
        assert not of_kind(render(directory), "Secret"), directory


# --- threads and resources per profile -----------------------------------------------------------


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_threads_match_the_resources(overlay: str) -> None:
    c = container(overlay)
    threads = int(env(c)["LEANSERVE_THREADS"])
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    assert limits == requests, "Guaranteed QoS: the measured setting (whole CPUs)"
    if "nvidia.com/gpu" in limits:
        assert threads == get_profile("gpu").intra_op_threads
    else:
        assert threads == int(limits["cpu"])  # one ONNX Runtime thread per CPU of the limit


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes() -> None:
    spec = pod_spec(deployment("overlays/gpu"))
    (c,) = spec["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["image"].endswith("-gpu")
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["nodeSelector"]
    assert "nvidia.com/gpu" not in container("overlays/cpu")["resources"]["limits"]


def test_cpu_overlay_runs_the_bento_image() -> None:
    assert container("overlays/cpu")["image"] == "leanserve:latest"


# --- the Bento image -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_pods_run_as_the_bento_images_user_with_a_writable_home(overlay: str) -> None:
    spec = pod_spec(deployment(overlay))
    (c,) = spec["containers"]
    assert spec["securityContext"]["runAsUser"] == BENTO_UID_GID
    assert spec["securityContext"]["fsGroup"] == BENTO_UID_GID
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty_dirs}
    assert {env(c)["BENTOML_HOME"], "/tmp"} <= writable
    # BENTOML_HOME must not hide the Bento (and its baked-in models) under BENTO_PATH.
    assert not BENTO_PATH.startswith(env(c)["BENTOML_HOME"])


def test_shared_store_component_mounts_the_pvc_over_the_bentos_model_store() -> None:
    pvc = only(render("storage"), "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    patch = yaml.safe_load(PVC_COMPONENT.read_text(encoding="utf-8"))
    spec = patch["spec"]["template"]["spec"]
    (mount,) = spec["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == f"{BENTO_PATH}/models" and mount["readOnly"] is True
    assert mount["subPath"] == "models"  # BentoML's model store is $BENTOML_HOME/models
    (volume,) = spec["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    docs = render("overlays/cpu-shared-store")
    assert any(v["name"] == "model-store" for v in pod_spec(only(docs, "Deployment"))["volumes"])
    assert all(":" in tag for tag in config("overlays/cpu-shared-store")["LEANSERVE_MODELS"].split(","))


# --- the optimisation Jobs -----------------------------------------------------------------------


def optimise_options() -> set[str]:
    command = typer.main.get_command(optimise.cli.app).commands["optimise"]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in [*param.opts, *getattr(param, "secondary_opts", [])]}


@pytest.mark.parametrize("directory", JOBS)
def test_jobs_run_leanserve_optimise_into_the_shared_store(directory: str) -> None:
    pvc = only(render("storage"), "PersistentVolumeClaim")["metadata"]["name"]
    options = optimise_options()
    for job in of_kind(render(directory), "Job"):
        spec = pod_spec(job)
        (c,) = spec["containers"]
        assert c["image"] == "leanserve-builder:latest"
        command = c["command"]
        assert command[:2] == ["leanserve", "optimise"]
        flags = [word for word in command[2:] if word.startswith("--")]
        assert set(flags) <= options, set(flags) - options
        assert command[command.index("--profile") + 1] in {p.name for p in list_profiles()}
        assert command[command.index("--model") + 1] == "minilm"
        variables = env(c)
        for name in leanserve_keys(variables):
            if name in BUILD_VARIABLES:
                assert name in BUILD_VARIABLES[name]
            else:
                assert name.removeprefix(SETTINGS_PREFIX).lower() in ServiceSettings.model_fields, name
        store = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "store")
        assert variables["BENTOML_HOME"] == store
        (claim,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert claim["persistentVolumeClaim"]["claimName"] == pvc
        assert spec["securityContext"]["runAsUser"] == BENTO_UID_GID  # shares files with the Bento image


def test_scaled_out_search_shares_one_study_in_postgresql() -> None:
    (job,) = of_kind(render("jobs/search"), "Job")
    assert job["spec"]["parallelism"] == 3 and job["spec"]["completions"] == 3
    (c,) = pod_spec(job)["containers"]
    command = c["command"]
    assert command[command.index("--storage") + 1] == "$(OPTUNA_STORAGE)"
    assert command[command.index("--study-name") + 1] == "minilm-cpu"
    assert float(command[command.index("--time-budget") + 1]) > 0
    storage = env(c)["OPTUNA_STORAGE"]
    assert storage["secretKeyRef"]["name"] == "leanserve-optuna" and not storage["secretKeyRef"].get(
        "optional"
    )


# --- monitoring ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_service_monitor_scrapes_metrics_as_the_rules_job(overlay: str) -> None:
    docs = render(overlay)
    monitor = only(docs, "ServiceMonitor", "leanserve")
    service = only(docs, "Service", "leanserve")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    job = rules_job()
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == job
    assert {"action": "replace", "targetLabel": "job", "replacement": job} in endpoint["relabelings"]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_prometheus_rule_is_the_rules_file(overlay: str) -> None:
    rule = only(render(overlay), "PrometheusRule", "leanserve")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def test_prometheus_rule_names_only_defined_metrics() -> None:
    rule = only(render("base"), "PrometheusRule", "leanserve")
    defined = defined_metrics()
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            missing = metrics_in(item["expr"]) - defined
            assert not missing, f"{item.get('alert', item.get('record'))}: {missing}"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian package prometheus)"
)
def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    rule = only(render("base"), "PrometheusRule", "leanserve")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    done = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    assert f"SUCCESS: {count} rules found" in done.stdout


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_dashboard_configmaps_hold_the_dashboards(overlay: str) -> None:
    maps = [
        d
        for d in of_kind(render(overlay), "ConfigMap")
        if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    held = {key: value for m in maps for key, value in m["data"].items()}
    sources = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert sources and held == sources
    assert all(len(m["data"]) == 1 for m in maps)
