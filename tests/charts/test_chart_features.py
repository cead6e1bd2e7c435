"""Chart unit tests: the rendered resources per feature (traefik-chart style, one group per feature)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from chart_harness import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    Render,
    containers,
    env_of,
    full_name,
    pod_template,
    render,
    render_notes,
    workloads,
)

SERVICES = {"projector": 50051, "sampler": 50052, "offline-distiller": 50053, "online-codistiller": 50054,
            "drift-detector": 50055}
TRAINERS = ("offline-distiller", "online-codistiller")
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL", re.IGNORECASE)


def _pod(r: Render, kind: str, name: str) -> dict:
    return pod_template(r.get(kind, name))


def _container(r: Render, kind: str, name: str) -> dict:
    return _pod(r, kind, name)["containers"][0]


def _gpus(pod: dict) -> int:
    return sum(int((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers(pod))


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(resource: dict) -> dict:
    if resource["kind"] == "InferenceService":
        return resource["spec"]["predictor"]["labels"]
    return resource["spec"]["template"]["metadata"]["labels"]


# ---- services ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_is_a_deployment_and_a_service(default_render: Render, name: str) -> None:
    port = SERVICES[name]
    deployment = default_render.get("Deployment", full_name(name))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"crossadapt/{name}:{APP_VERSION}"
    assert container["command"] == ["crossadapt"] and container["args"] == ["serve", name]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": port, "metrics": 9464}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}, probe  # the standard gRPC health service
    env = env_of(container)
    assert env["CROSSADAPT_GRPC_HOST"]["value"] == "0.0.0.0"
    assert env["CROSSADAPT_GRPC_PORT"]["value"] == str(port)
    assert env["CROSSADAPT_METRICS_HOST"]["value"] == "0.0.0.0"
    assert env["CROSSADAPT_METRICS_PORT"]["value"] == "9464"

    service = default_render.get("Service", full_name(name))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": port, "metrics": 9464}
    assert _matches(service["spec"]["selector"], _pod_labels(deployment))


def test_platform_settings_reach_every_crossadapt_container(default_render: Render) -> None:
    expected = {
        "CROSSADAPT_BROKER_URL": f"redis://:$(REDIS_PASSWORD)@{RELEASE}-redis.{NAMESPACE}.svc:6379/0",
        "CROSSADAPT_RESULT_BACKEND": f"redis://:$(REDIS_PASSWORD)@{RELEASE}-redis.{NAMESPACE}.svc:6379/1",
        "CROSSADAPT_STORE_URL": "s3://crossadapt/store",
        "CROSSADAPT_S3_ENDPOINT": f"{RELEASE}-minio.{NAMESPACE}.svc:9000",
        "CROSSADAPT_LOG_FORMAT": "json",
        "CROSSADAPT_HOME": "/tmp/crossadapt",
    }
    names = [*(full_name(s) for s in SERVICES), *(full_name(f"{s}-worker") for s in SERVICES), full_name("predictor")]
    for name in names:
        container = _container(default_render, "Deployment", name)
        env = env_of(container)
        assert {k: env[k].get("value") for k in expected} == expected, name
        # $(REDIS_PASSWORD) expands only if the variable comes earlier in the list.
        order = [e["name"] for e in container["env"]]
        assert order.index("REDIS_PASSWORD") < order.index("CROSSADAPT_BROKER_URL"), name


def test_settings_values_become_settings() -> None:
    r = render(values={"settings": {"logLevel": "DEBUG", "shutdownGraceSeconds": 30, "visibilityTimeoutSeconds": 7200,
                                    "taskMaxDeliveries": 2, "operationTtlSeconds": 86400},
                       "s3.bucket": "models", "s3.prefix": "team-a"})
    env = env_of(_container(r, "Deployment", full_name("sampler")))
    assert env["CROSSADAPT_LOG_LEVEL"]["value"] == "DEBUG"
    assert env["CROSSADAPT_SHUTDOWN_GRACE_S"]["value"] == "30"
    assert env["CROSSADAPT_VISIBILITY_TIMEOUT_S"]["value"] == "7200"
    assert env["CROSSADAPT_TASK_MAX_DELIVERIES"]["value"] == "2"
    assert env["CROSSADAPT_OPERATION_TTL_S"]["value"] == "86400"
    assert env["CROSSADAPT_STORE_URL"]["value"] == "s3://models/team-a"
    assert r.get("Deployment", full_name("sampler"))["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


def test_large_integers_stay_integers(tmp_path: Path) -> None:
    """Helm reads numbers as floats and prints 1e+08 for 100000000; integer settings must not (pydantic
    rejects "1e+08" for an int)."""
    path = tmp_path / "values.yaml"
    path.write_text("settings: {operationTtlSeconds: 100000000, visibilityTimeoutSeconds: 2000000}\n"
                    "predictor: {maxBatchRows: 1000000}\n")
    r = render(extra_files=(path,))
    env = env_of(_container(r, "Deployment", full_name("predictor")))
    assert env["CROSSADAPT_OPERATION_TTL_S"]["value"] == "100000000"
    assert env["CROSSADAPT_VISIBILITY_TIMEOUT_S"]["value"] == "2000000"
    assert env["CROSSADAPT_PREDICTOR_MAX_BATCH_ROWS"]["value"] == "1000000"


def test_a_disabled_service_renders_nothing_of_its_own() -> None:
    r = render(values={"services.drift-detector.enabled": False})
    assert not any("drift-detector" in d["metadata"]["name"] for d in r.documents)


# ---- workers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_one_celery_worker_deployment_per_queue(default_render: Render, name: str) -> None:
    container = _container(default_render, "Deployment", full_name(f"{name}-worker"))
    assert container["image"] == f"crossadapt/{name}:{APP_VERSION}"  # the service's own image
    assert container["command"][:4] == ["crossadapt", "worker", "--queues", name]
    assert container["livenessProbe"]["exec"]["command"] == ["crossadapt", "worker-health"]
    assert "ports" not in container  # a worker serves nothing


def test_cpu_queues_autoscale_and_trainers_do_not(default_render: Render) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in default_render.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {full_name(f"{s}-worker") for s in ("projector", "sampler", "drift-detector")}
    for target, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        # With an HPA the Deployment leaves replicas to it (a helm upgrade must not reset the count).
        assert "replicas" not in default_render.get("Deployment", target)["spec"]
        assert "cpu" in _container(default_render, "Deployment", target)["resources"]["requests"]
    for trainer in TRAINERS:
        assert default_render.get("Deployment", full_name(f"{trainer}-worker"))["spec"]["replicas"] == 1


def test_worker_concurrency_and_disabling() -> None:
    r = render(values={"services.sampler.worker.concurrency": 6, "services.projector.worker.enabled": False})
    assert _container(r, "Deployment", full_name("sampler-worker"))["command"][-2:] == ["--concurrency", "6"]
    assert full_name("projector-worker") not in r.names("Deployment")
    assert full_name("projector") in r.names("Deployment")


# ---- GPU scheduling ---------------------------------------------------------------------------------------


def _gpu_workloads(r: Render) -> dict[str, int]:
    return {w["metadata"]["name"]: _gpus(pod_template(w)) for w in workloads(r) if _gpus(pod_template(w))}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.mark.parametrize("name", ["default", "gpu"])
def test_trainers_and_predictor_run_on_the_gpu_pool(renders: dict[str, Render], name: str) -> None:
    """GPU workloads request GPUs (only GPU nodes can take them) and tolerate the GPU pool's taint;
    with values-gpu.yaml they also select the pool's nodes. Nothing else goes near the GPU pool."""
    r = renders[name]
    on_pool = {full_name("offline-distiller-worker"), full_name("online-codistiller-worker"),
               full_name("predictor") if name == "default" else "crossadapt"}
    assert set(_gpu_workloads(r)) == on_pool
    for workload in workloads(r):
        pod = pod_template(workload)
        on_gpu = workload["metadata"]["name"] in on_pool
        selector = pod.get("nodeSelector") or {}
        assert (GPU_TOLERATION in (pod.get("tolerations") or [])) == on_gpu, workload["metadata"]["name"]
        if name == "gpu":
            assert (selector.get("nvidia.com/gpu.present") == "true") == on_gpu, workload["metadata"]["name"]
        else:
            assert selector == {}, workload["metadata"]["name"]


def test_cpu_only_values_request_no_gpu_anywhere(renders: dict[str, Render]) -> None:
    r = renders["cpu-only"]
    assert _gpu_workloads(r) == {}
    for workload in workloads(r):
        pod = pod_template(workload)
        assert "nvidia.com/gpu.present" not in (pod.get("nodeSelector") or {}), workload["metadata"]["name"]
        assert not pod.get("tolerations"), workload["metadata"]["name"]


def test_gpu_values_give_the_distiller_two_gpus_and_shared_memory(renders: dict[str, Render]) -> None:
    r = renders["gpu"]
    gpus = _gpu_workloads(r)
    assert gpus[full_name("offline-distiller-worker")] == 2
    assert gpus[full_name("online-codistiller-worker")] == 1
    assert gpus["crossadapt"] == 1  # the KServe InferenceService's predictor
    pod = _pod(r, "Deployment", full_name("offline-distiller-worker"))
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_per_workload_scheduling_merges_with_the_gpu_pool() -> None:
    r = render(values={
        "gpuPool.nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "services.online-codistiller.worker.nodeSelector": {"topology.kubernetes.io/zone": "europe-west4-a"},
        "services.online-codistiller.worker.tolerations": [{"key": "spot", "operator": "Exists"}],
        "services.sampler.worker.nodeSelector": {"pool": "highmem"},
        "gpuPool.resourceName": "amd.com/gpu",
    })
    pod = _pod(r, "Deployment", full_name("online-codistiller-worker"))
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4",
                                   "topology.kubernetes.io/zone": "europe-west4-a"}  # the workload's keys win
    assert [t["key"] for t in pod["tolerations"]] == ["nvidia.com/gpu", "spot"]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == 1
    assert _pod(r, "Deployment", full_name("sampler-worker"))["nodeSelector"] == {"pool": "highmem"}


# ---- credentials only from Secrets -------------------------------------------------------------------------


def _all_env(r: Render) -> list[tuple[str, dict]]:
    return [(w["metadata"]["name"], e) for w in workloads(r) for c in containers(pod_template(w))
            for e in c.get("env", [])]


@pytest.mark.parametrize("name", ["default", "gpu", "cpu-only", "external-s3"])
def test_no_credential_is_a_literal(renders: dict[str, Render], name: str) -> None:
    r = renders[name]
    for where, entry in _all_env(r):
        if CREDENTIAL_NAME.search(entry["name"]) or entry["name"] in ("MINIO_ROOT_USER", "REDISCLI_AUTH"):
            assert "value" not in entry, f"{where}: {entry['name']} is a literal"
            assert "secretKeyRef" in entry["valueFrom"], f"{where}: {entry['name']} is not from a Secret"
    # No generated secret value appears anywhere outside its Secret.
    secrets = [base64.b64decode(v).decode() for s in r.of_kind("Secret") for v in s.get("data", {}).values()]
    elsewhere = yaml.safe_dump([d for d in r.documents if d["kind"] != "Secret"])
    assert secrets == [] or all(secret not in elsewhere for secret in secrets)


def test_s3_and_redis_credentials_come_from_their_secrets(renders: dict[str, Render]) -> None:
    default = env_of(_container(renders["default"], "Deployment", full_name("sampler-worker")))
    assert default["CROSSADAPT_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": full_name("minio"),
                                                                               "key": "root-user"}
    assert default["CROSSADAPT_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": full_name("minio"),
                                                                               "key": "root-password"}
    assert default["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": full_name("redis"),
                                                                     "key": "redis-password"}
    assert renders["default"].names("Secret") == {full_name("minio"), full_name("redis")}

    external = renders["external-s3"]
    env = env_of(_container(external, "Deployment", full_name("sampler-worker")))
    assert env["CROSSADAPT_S3_ENDPOINT"]["value"] == "s3.eu-west-1.amazonaws.com:443"
    assert env["CROSSADAPT_S3_SECURE"]["value"] == "true"
    assert env["CROSSADAPT_S3_REGION"]["value"] == "eu-west-1"
    assert env["CROSSADAPT_STORE_URL"]["value"] == "s3://acme-crossadapt/platform"
    assert env["CROSSADAPT_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "crossadapt-s3", "key": "access-key"}
    assert env["CROSSADAPT_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "crossadapt-s3", "key": "secret-key"}
    # The chart creates no S3 secret and no MinIO when the store is external.
    assert external.names("Secret") == {full_name("redis")}
    assert not any("minio" in d["metadata"]["name"] for d in external.documents)


def test_external_redis_with_tls_and_an_existing_password_secret() -> None:
    r = render(values={"redis.enabled": False, "externalRedis": {
        "host": "redis.acme.internal", "port": 6380, "tls": True, "brokerDb": 2, "resultDb": 3,
        "existingSecret": "acme-redis", "passwordKey": "pw"}})
    env = env_of(_container(r, "Deployment", full_name("projector")))
    assert env["CROSSADAPT_BROKER_URL"]["value"] == \
        "rediss://:$(REDIS_PASSWORD)@redis.acme.internal:6380/2?ssl_cert_reqs=required"
    assert env["CROSSADAPT_RESULT_BACKEND"]["value"] == \
        "rediss://:$(REDIS_PASSWORD)@redis.acme.internal:6380/3?ssl_cert_reqs=required"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "acme-redis", "key": "pw"}
    assert not any("redis" in d["metadata"]["name"] for d in r.documents if d["kind"] != "NetworkPolicy")


def test_external_redis_without_password_has_no_password_variable() -> None:
    r = render(values={"redis.enabled": False, "externalRedis.host": "redis"})
    env = env_of(_container(r, "Deployment", full_name("projector")))
    assert env["CROSSADAPT_BROKER_URL"]["value"] == "redis://redis:6379/0"
    assert "REDIS_PASSWORD" not in env


def test_existing_secrets_for_the_in_chart_stores_replace_the_generated_ones() -> None:
    r = render(values={"redis.auth.existingSecret": "my-redis", "minio.auth.existingSecret": "my-minio"})
    assert r.names("Secret") == set()
    redis = env_of(_container(r, "Deployment", full_name("redis")))
    assert redis["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "my-redis"
    minio = env_of(_container(r, "Deployment", full_name("minio")))
    assert minio["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "my-minio"
    worker = env_of(_container(r, "Deployment", full_name("sampler-worker")))
    assert worker["CROSSADAPT_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "my-minio"


def test_the_operator_gets_no_store_or_broker_credentials(default_render: Render) -> None:
    env = env_of(_container(default_render, "Deployment", full_name("operator")))
    assert not any(CREDENTIAL_NAME.search(name) or "BROKER" in name for name in env)


# ---- NetworkPolicies --------------------------------------------------------------------------------------


def _policies(r: Render) -> list[dict]:
    return r.of_kind("NetworkPolicy")


def _ingress_ports(policy: dict) -> dict[int, list]:
    """port -> the `from` peers allowed to reach it (None: anyone)."""
    out: dict[int, list] = {}
    for rule in policy["spec"].get("ingress", []):
        for port in rule.get("ports", []):
            out[port["port"]] = rule.get("from")
    return out


RELEASE_PEER = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "crossadapt",
                                                "app.kubernetes.io/instance": RELEASE}}}


def test_every_pod_is_under_the_default_deny(default_render: Render) -> None:
    deny = default_render.get("NetworkPolicy", full_name("default-deny"))
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    for workload in workloads(default_render):
        assert _matches(deny["spec"]["podSelector"]["matchLabels"], _pod_labels(workload)), workload["metadata"]["name"]


def test_each_listening_component_opens_only_its_ports(default_render: Render) -> None:
    policies = {p["metadata"]["name"]: p for p in _policies(default_render)}
    for name, port in SERVICES.items():
        ports = _ingress_ports(policies[full_name(name)])
        assert ports == {port: [RELEASE_PEER], 9464: None}, name
    assert _ingress_ports(policies[full_name("redis")]) == {6379: [RELEASE_PEER]}
    assert _ingress_ports(policies[full_name("minio")]) == {9000: [RELEASE_PEER]}
    predictor = _ingress_ports(policies[full_name("predictor")])
    assert predictor == {8080: None, 8081: None, 50056: [RELEASE_PEER], 9464: None}
    # Workers and the operator listen to nobody: only the default deny selects them.
    selected = [p for p in _policies(default_render) if p["metadata"]["name"] != full_name("default-deny")]
    for workload in ("operator", *(f"{s}-worker" for s in SERVICES)):
        labels = _pod_labels(default_render.get("Deployment", full_name(workload)))
        assert not any(_matches(p["spec"]["podSelector"]["matchLabels"], labels) for p in selected), workload


def test_policy_peers_come_from_values() -> None:
    prometheus = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    clients = [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}]
    r = render(values={"networkPolicy.metricsFrom": prometheus, "networkPolicy.apiClientsFrom": clients,
                       "predictor.networkPolicy.inferenceFrom": clients})
    sampler = _ingress_ports(r.get("NetworkPolicy", full_name("sampler")))
    assert sampler == {50052: [RELEASE_PEER, *clients], 9464: prometheus}
    predictor = _ingress_ports(r.get("NetworkPolicy", full_name("predictor")))
    assert predictor[8080] == clients and predictor[50056] == [RELEASE_PEER]


def test_network_policies_can_be_turned_off() -> None:
    assert render(values={"networkPolicy.enabled": False}).of_kind("NetworkPolicy") == []


# ---- RBAC -------------------------------------------------------------------------------------------------


def _rules(role: dict) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def _operator_rbac_file() -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "operators" / "rbac.yaml").read_text()) if d]


def test_operator_rules_mirror_operators_rbac_yaml(default_render: Render) -> None:
    """The operator engineer's least-privilege rules (checked against the operator's real requests)."""
    base, peering = _operator_rbac_file()
    role = default_render.get("Role", full_name("operator"))
    assert _rules(role) == _rules(base)
    assert role["metadata"]["namespace"] == NAMESPACE

    peered = render(values={"operator.peering.enabled": True, "operator.replicas": 2})
    extra = _rules(peered.get("Role", full_name("operator"))) - _rules(base)
    assert extra and extra <= _rules(peering)


def test_rbac_is_least_privilege(renders: dict[str, Render]) -> None:
    for r in renders.values():
        roles = r.of_kind("Role") + r.of_kind("ClusterRole")
        assert [x["metadata"]["name"] for x in roles] == [full_name("operator")]  # nothing else gets API access
        for group, resource, verb in _rules(roles[0]):
            assert "*" not in (group, resource, verb)
            assert verb not in ("delete", "deletecollection", "escalate", "bind", "impersonate")
            assert resource not in ("secrets", "pods", "pods/exec", "configmaps")
        binding = r.get("RoleBinding", full_name("operator"))
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": full_name("operator")}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": full_name("operator"),
                                        "namespace": NAMESPACE}]


def test_only_the_operator_pod_holds_an_api_token(renders: dict[str, Render]) -> None:
    for r in renders.values():
        for account in r.of_kind("ServiceAccount"):
            assert account["automountServiceAccountToken"] is False
        for workload in workloads(r):
            pod = pod_template(workload)
            operator = workload["metadata"]["name"] == full_name("operator")
            assert pod["automountServiceAccountToken"] is operator, workload["metadata"]["name"]
            # Every other pod shares the release's token-less ServiceAccount (named like the release).
            assert pod["serviceAccountName"] == (full_name("operator") if operator else RELEASE)


def test_operator_namespaces_and_cluster_scope() -> None:
    r = render(values={"operator.watchNamespaces": ["ml", "ads"]})
    assert {(x["metadata"]["namespace"]) for x in r.of_kind("Role")} == {"ml", "ads"}
    assert {(x["metadata"]["namespace"]) for x in r.of_kind("RoleBinding")} == {"ml", "ads"}
    args = _container(r, "Deployment", full_name("operator"))["args"]
    assert "--namespace=ml" in args and "--namespace=ads" in args

    cluster = render(values={"operator.clusterWide": True})
    assert cluster.of_kind("Role") == [] and cluster.of_kind("RoleBinding") == []
    role = cluster.get("ClusterRole", full_name("operator"))
    assert _rules(role) == _rules(_operator_rbac_file()[0])
    binding = cluster.get("ClusterRoleBinding", full_name("operator"))
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert "--all-namespaces" in _container(cluster, "Deployment", full_name("operator"))["args"]


# ---- the operator -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kserve", [False, True])
def test_operator_addresses_point_at_the_rendered_services(kserve: bool) -> None:
    r = render(values={"predictor.kserve.enabled": kserve})
    container = _container(r, "Deployment", full_name("operator"))
    assert container["command"] == ["crossadapt"] and container["args"][:2] == ["operator", "run"]
    assert container["image"] == f"crossadapt/operator:{APP_VERSION}"
    env = env_of(container)
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in r.of_kind("Service")}
    for name, port in [*SERVICES.items(), ("predictor", 50056)]:
        variable = f"CROSSADAPT_OPERATOR_{name.upper().replace('-', '_')}_ADDRESS"
        host, _, address_port = env[variable]["value"].rpartition(":")
        service, namespace, svc = host.split(".")
        assert (namespace, svc, int(address_port)) == (NAMESPACE, "svc", port), variable
        if name == "predictor" and kserve:
            # KServe (RawDeployment) names the predictor's Service <isvc>-predictor, with every container port.
            isvc = r.of_kind("InferenceService")[0]
            assert service == f"{isvc['metadata']['name']}-predictor"
            ports = [p["containerPort"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]]
            assert port in ports
        else:
            assert port in services[service], variable
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]


def test_operator_env_names_match_its_settings() -> None:
    """Every CROSSADAPT_OPERATOR_* the chart sets is a field of the operator's settings."""
    settings = pytest.importorskip("operators.modelswitch.settings")
    fields = {f"CROSSADAPT_OPERATOR_{name.upper()}" for name in settings.OperatorSettings.model_fields}
    env = env_of(_container(render(), "Deployment", full_name("operator")))
    chart = {name for name in env if name.startswith("CROSSADAPT_OPERATOR_")}
    assert chart <= fields
    assert {f for f in fields if f.endswith("_ADDRESS")} <= chart


def test_standalone_operator_never_runs_twice() -> None:
    r = render()
    assert r.get("Deployment", full_name("operator"))["spec"]["strategy"] == {"type": "Recreate"}
    peered = render(values={"operator.peering.enabled": True, "operator.replicas": 2})
    deployment = peered.get("Deployment", full_name("operator"))
    assert deployment["spec"]["replicas"] == 2
    assert "--peering=crossadapt" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert peered.get("KopfPeering", "crossadapt")["metadata"]["namespace"] == NAMESPACE


# ---- the predictor ----------------------------------------------------------------------------------------


def test_predictor_as_a_deployment_exposes_inference_and_admin(default_render: Render) -> None:
    container = _container(default_render, "Deployment", full_name("predictor"))
    assert container["args"] == ["serve", "predictor"]
    assert container["image"] == f"crossadapt/predictor:{APP_VERSION}"
    env = env_of(container)
    assert env["CROSSADAPT_GRPC_PORT"]["value"] == "50056"
    assert env["CROSSADAPT_PREDICTOR_HOST"]["value"] == "0.0.0.0"
    assert env["CROSSADAPT_PREDICTOR_TEACHER"]["value"] == "ctr/mlp-teacher"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    service = default_render.get("Service", full_name("predictor"))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8080, "grpc": 8081, "admin-grpc": 50056, "metrics": 9464}
    assert default_render.of_kind("InferenceService") == []


def test_predictor_env_names_match_its_settings(default_render: Render) -> None:
    settings = pytest.importorskip("services.predictor.settings")
    fields = {f"CROSSADAPT_PREDICTOR_{name.upper()}" for name in settings.PredictorSettings.model_fields}
    env = env_of(_container(render(values={"predictor.student": "ctr/student"}), "Deployment", full_name("predictor")))
    assert {name for name in env if name.startswith("CROSSADAPT_PREDICTOR_")} <= fields


def test_predictor_on_kserve(renders: dict[str, Render]) -> None:
    r = renders["gpu"]
    assert full_name("predictor") not in r.names("Deployment") and full_name("predictor") not in r.names("Service")
    isvc = r.get("InferenceService", "crossadapt")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 8)
    container = predictor["containers"][0]
    assert container["name"] == "kserve-container"
    assert [p["containerPort"] for p in container["ports"]][:3] == [8080, 8081, 50056]
    # The PodDisruptionBudget and NetworkPolicy select KServe's pods by the labels it passes on.
    pdb = r.get("PodDisruptionBudget", full_name("predictor"))
    assert _matches(pdb["spec"]["selector"]["matchLabels"], predictor["labels"])
    policy = r.get("NetworkPolicy", full_name("predictor"))
    assert _matches(policy["spec"]["podSelector"]["matchLabels"], predictor["labels"])


# ---- availability, metrics, images, notes -----------------------------------------------------------------


def test_every_scaled_workload_has_a_matching_disruption_budget(default_render: Render) -> None:
    budgets = default_render.of_kind("PodDisruptionBudget")
    names = [*SERVICES, *(f"{s}-worker" for s in SERVICES), "predictor"]
    assert {b["metadata"]["name"] for b in budgets} == {full_name(n) for n in names}
    for name in names:
        budget = default_render.get("PodDisruptionBudget", full_name(name))
        assert budget["spec"]["maxUnavailable"] == 1
        labels = _pod_labels(default_render.get("Deployment", full_name(name)))
        matched = [w for w in workloads(default_render) if _matches(budget["spec"]["selector"]["matchLabels"],
                                                                    _pod_labels(w))]
        assert [w["metadata"]["name"] for w in matched] == [full_name(name)], labels


def test_service_monitor_is_optional_and_selects_the_metrics_services(renders: dict[str, Render]) -> None:
    assert renders["default"].of_kind("ServiceMonitor") == []
    r = render(values={"metrics.serviceMonitor.enabled": True,
                       "metrics.serviceMonitor.labels": {"release": "kube-prometheus-stack"}})
    monitor = r.get("ServiceMonitor", "crossadapt")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    scraped = [s for s in r.of_kind("Service") if _matches(monitor["spec"]["selector"]["matchLabels"],
                                                            s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in scraped} == {full_name(n) for n in [*SERVICES, "predictor"]}
    for service in scraped:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_image_registry_and_tags() -> None:
    r = render(values={"image.registry": "ghcr.io/acme/", "image.tag": "1.2.3",
                       "services.sampler.image.tag": "sampler-fix"})
    assert _container(r, "Deployment", full_name("projector"))["image"] == "ghcr.io/acme/crossadapt/projector:1.2.3"
    assert _container(r, "Deployment", full_name("sampler"))["image"] == "ghcr.io/acme/crossadapt/sampler:sampler-fix"
    assert _container(r, "Deployment", full_name("sampler-worker"))["image"] == \
        "ghcr.io/acme/crossadapt/sampler:sampler-fix"
    assert _container(r, "Deployment", full_name("operator"))["image"] == "ghcr.io/acme/crossadapt/operator:1.2.3"
    # Third-party images are never prefixed with our registry.
    assert _container(r, "Deployment", full_name("redis"))["image"].startswith("docker.io/library/redis:")


def test_notes_tell_what_was_installed() -> None:
    notes = render_notes()
    assert "kubectl get msw -n ml" in notes
    assert "offline-distiller: gRPC crossadapt-offline-distiller:50053" in notes
    assert "on the GPU pool (1 nvidia.com/gpu)" in notes
    cpu = render_notes(("values-cpu-only.yaml",))
    assert "GPU pool" not in cpu
    assert "external S3" not in cpu and "in-chart MinIO" in cpu
    external = render_notes(("values-external-s3.yaml",))
    assert "s3.eu-west-1.amazonaws.com:443" in external and "single node" not in external
