"""The Kubernetes manifests (k8s/): built with the real ``kubectl kustomize``, core objects
validated against the Kubernetes API schemas (kubernetes-validate, strict), the custom
resources and the wiring between objects checked field by field, and the pod's command line
run for real with the manifest's environment.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from conftest import environ_without_settings, require_tool
from deploy import REPO, http_get, image_uid, serving, setting_envs
from postgres import free_port

from dumbkv.config import SETTINGS, Config

K8S = REPO / "k8s"
OVERLAYS = ("sqlite", "postgres")
COMPONENTS = ("resp-loadbalancer", "kube-prometheus-stack", "kube-prometheus")
# The oldest Kubernetes minor still commonly run, and the newest the schemas know.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
CRD_GROUPS = ("monitoring.coreos.com",)
# kubectl apply (client side) keeps the object in an annotation limited to 256 KiB.
LAST_APPLIED_LIMIT = 262144
DEFAULTS = Config()
Obj = dict[str, Any]

_built: dict[str, list[Obj]] = {}


def kustomize(directory: Path) -> list[Obj]:
    """``kubectl kustomize DIR``, parsed."""
    kubectl = require_tool("kubectl", "https://kubernetes.io/docs/tasks/tools/ "
                           "(Debian: apt-get install kubernetes-client)")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def overlay(name: str) -> list[Obj]:
    if name not in _built:
        _built[name] = kustomize(K8S / "overlays" / name)
    return _built[name]


def with_components(tmp_path: Path, base: str, *components: str) -> list[Obj]:
    """An overlay plus components, as a user's own kustomization would combine them."""
    root = tmp_path / "kustomization"
    root.mkdir()
    rel = lambda path: os.path.relpath(path, root)  # noqa: E731 (kustomize wants relative)
    (root / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel(K8S / "overlays" / base)],
        "components": [rel(K8S / "components" / c) for c in components],
    }))
    return kustomize(root)


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(objs: list[Obj]) -> Obj:
    deployment = one(objs, "Deployment", "dumbkv")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["dumbkv"]
    return containers[0]


def env_of(c: Obj) -> dict[str, Obj]:
    names = [e["name"] for e in c.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e["name"]: e for e in c.get("env", [])}


def literal(c: Obj, name: str, default: object) -> str:
    entry = env_of(c).get(name)
    if entry is None:
        return str(default)
    assert "value" in entry, f"{name} is expected as a literal value"
    return str(entry["value"])


def container_port(c: Obj, port: int | str) -> int:
    """A probe's or Service's port (number or name) as the container port number."""
    by_name = {p["name"]: p["containerPort"] for p in c["ports"]}
    if isinstance(port, str):
        assert port in by_name, f"port name {port!r} is not a container port {sorted(by_name)}"
        return int(by_name[port])
    assert port in by_name.values()
    return port


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (100m, 1, 512Mi, 1Gi) as a number."""
    units = {"": 1.0, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6,
             "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match and match.group(2) in units, f"not a quantity: {text!r}"
    return float(match.group(1)) * units[match.group(2)]


# --------------------------------------------------------------------------- schemas
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", OVERLAYS)
def test_core_objects_validate_against_the_api_schemas(name: str, version: str) -> None:
    validated = set()
    for obj in overlay(name):
        if obj["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue  # custom resources: checked field by field below
        kubernetes_validate.validate(obj, version, strict=True)
        validated.add(obj["kind"])
    expected = {"Deployment", "Service", "PersistentVolumeClaim", "Ingress", "ConfigMap"}
    if name == "postgres":
        expected |= {"StatefulSet", "Secret"}
    assert expected <= validated


def test_a_misspelt_field_fails_validation() -> None:
    deployment = json.loads(json.dumps(one(overlay("sqlite"), "Deployment", "dumbkv")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_components_build_and_validate(tmp_path: Path) -> None:
    objs = with_components(tmp_path, "sqlite", *COMPONENTS)
    for obj in objs:
        if obj["apiVersion"].split("/")[0] not in CRD_GROUPS:
            kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
    # resp-loadbalancer: the RESP port alone on a LoadBalancer, reaching the DumbKV pod.
    lb = one(objs, "Service", "dumbkv-resp")
    assert lb["spec"]["type"] == "LoadBalancer"
    assert [p["name"] for p in lb["spec"]["ports"]] == ["resp"]
    pod_labels = one(objs, "Deployment", "dumbkv")["spec"]["template"]["metadata"]["labels"]
    assert selects(lb["spec"]["selector"], pod_labels)
    assert container_port(container(objs), lb["spec"]["ports"][0]["targetPort"]) == 7379
    # kube-prometheus-stack: its Prometheus selects monitors and rules by `release`.
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(objs, kind, "dumbkv")["metadata"]["labels"]["release"] == \
            "kube-prometheus-stack"
    # kube-prometheus: its Prometheus (ServiceAccount monitoring/prometheus-k8s) may discover
    # the Service's endpoints and pods in DumbKV's namespace.
    role = one(objs, "Role", "dumbkv-prometheus-k8s")
    granted = {(group, resource) for rule in role["rules"]
               if {"get", "list", "watch"} <= set(rule["verbs"])
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert {("", "services"), ("", "endpoints"), ("", "pods"),
            ("discovery.k8s.io", "endpointslices")} <= granted
    binding = one(objs, "RoleBinding", "dumbkv-prometheus-k8s")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "dumbkv-prometheus-k8s"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s",
                                    "namespace": "monitoring"}]


def test_kube_prometheus_rbac_survives_a_namespace(tmp_path: Path) -> None:
    """A user's ``namespace:`` moves the Role and RoleBinding, not Prometheus's account."""
    root = tmp_path / "ns"
    root.mkdir()
    rel = lambda path: os.path.relpath(path, root)  # noqa: E731 (kustomize wants relative)
    (root / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "kv", "resources": [rel(K8S / "overlays" / "sqlite")],
        "components": [rel(K8S / "components" / "kube-prometheus")],
    }))
    objs = kustomize(root)
    binding = one(objs, "RoleBinding", "dumbkv-prometheus-k8s")
    assert binding["metadata"]["namespace"] == "kv"
    assert one(objs, "Role", "dumbkv-prometheus-k8s")["metadata"]["namespace"] == "kv"
    assert binding["subjects"][0]["namespace"] == "monitoring"


# --------------------------------------------------------------------------- the pod
@pytest.mark.parametrize("name", OVERLAYS)
def test_deployment_runs_one_pod_at_a_time(name: str) -> None:
    deployment = one(overlay(name), "Deployment", "dumbkv")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    spec = deployment["spec"]
    assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "dumbkv"


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_hit_the_admin_port_paths(name: str) -> None:
    c = container(overlay(name))
    admin = int(literal(c, "DUMBKV_ADMIN_PORT", DEFAULTS.admin_port))
    assert container_port(c, "admin") == admin
    assert container_port(c, "resp") == int(literal(c, "DUMBKV_PORT", DEFAULTS.port))
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"),
                        ("readinessProbe", "/ready")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] == "admin", probe
        assert container_port(c, get["port"]) == admin
    startup = c["startupProbe"]
    exclusion = float(literal(c, "DUMBKV_STARTUP_EXCLUSION", DEFAULTS.startup_exclusion))
    assert startup["failureThreshold"] * startup["periodSeconds"] >= max(30.0, exclusion)


@pytest.mark.parametrize("name", OVERLAYS)
def test_resources_and_security(name: str) -> None:
    objs = overlay(name)
    c = container(objs)
    for resource in ("cpu", "memory"):
        request = quantity(c["resources"]["requests"][resource])
        limit = quantity(c["resources"]["limits"][resource])
        assert 0 < request <= limit, resource
    pod = one(objs, "Deployment", "dumbkv")["spec"]["template"]["spec"]
    uid = image_uid()
    assert uid != 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["fsGroup"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("runAsUser", uid) == uid


@pytest.mark.parametrize("name", OVERLAYS)
def test_grace_period_outlasts_the_shutdown_timeout(name: str) -> None:
    """The slowest clean stop: the delay, the drain, then the batches in flight (one store
    timeout), then closing the store (two more on PostgreSQL: a graceful close, then
    terminate)."""
    objs = overlay(name)
    c = container(objs)
    delay = float(literal(c, "DUMBKV_SHUTDOWN_DELAY", DEFAULTS.shutdown_delay))
    timeout = float(literal(c, "DUMBKV_SHUTDOWN_TIMEOUT", DEFAULTS.shutdown_timeout))
    store_timeout = float(literal(c, "DUMBKV_STORE_TIMEOUT", DEFAULTS.store_timeout))
    grace = one(objs, "Deployment", "dumbkv")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    assert delay > 0  # the Service drops the endpoint while the pod still serves
    assert grace > delay + timeout + 3 * store_timeout


@pytest.mark.parametrize("name", OVERLAYS)
def test_data_on_the_pvc_and_tmp_on_an_empty_dir(name: str) -> None:
    objs = overlay(name)
    c = container(objs)
    pod = one(objs, "Deployment", "dumbkv")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "dumbkv-data"
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert one(objs, "PersistentVolumeClaim", "dumbkv-data")["spec"]["accessModes"] == \
        ["ReadWriteOnce"]
    assert literal(c, "DUMBKV_DATA_DIR", DEFAULTS.data_dir) == "/data"


def test_sqlite_file_lives_on_the_volume() -> None:
    c = container(overlay("sqlite"))
    store = literal(c, "DUMBKV_STORE", DEFAULTS.store)
    assert store.startswith("sqlite:////")  # an absolute path
    path = urlsplit(store).path[1:]
    assert Path(path).parent == Path("/data")


def test_postgres_store_comes_from_the_secret() -> None:
    objs = overlay("postgres")
    c = container(objs)
    ref = env_of(c)["DUMBKV_STORE"]
    assert "value" not in ref
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "dumbkv-store", "key": "url"}
    assert "sqlite" not in json.dumps(one(objs, "Deployment", "dumbkv"))
    secret = one(objs, "Secret", "dumbkv-store")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    url = urlsplit(data["url"])
    assert url.scheme in ("postgresql", "postgres")
    # The URL reaches the StatefulSet's server with the user, password and database it creates.
    service = one(objs, "Service", "dumbkv-postgres")
    statefulset = one(objs, "StatefulSet", "dumbkv-postgres")
    assert statefulset["spec"]["serviceName"] == "dumbkv-postgres"
    assert url.hostname == "dumbkv-postgres"
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    pod = statefulset["spec"]["template"]
    assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    pg_env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert url.username == pg_env["POSTGRES_USER"]["value"]
    assert url.path == "/" + pg_env["POSTGRES_DB"]["value"]
    key = pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert key["name"] == "dumbkv-store"
    assert url.password == data[key["key"]]


def _wait_for_postgres(objs: list[Obj]) -> Obj:
    pod = one(objs, "Deployment", "dumbkv")["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in pod.get("initContainers", [])}
    assert list(inits) == ["wait-for-postgres"], list(inits)
    return inits["wait-for-postgres"]


def test_postgres_overlay_waits_for_the_database_before_starting() -> None:
    objs = overlay("postgres")
    init = _wait_for_postgres(objs)
    main = container(objs)
    assert init["image"] == main["image"]  # the image's own Python, nothing extra to pull
    # The same URL as the server: waits for the host and port DumbKV will connect to.
    assert env_of(init)["DUMBKV_STORE"] == env_of(main)["DUMBKV_STORE"]
    sc = init["securityContext"]
    assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"],
            sc["capabilities"]["drop"]) == (True, True, False, ["ALL"])
    assert "limits" in init["resources"] and "requests" in init["resources"]
    assert "initContainers" not in json.dumps(overlay("sqlite"))  # nothing to wait for


def test_the_wait_for_postgres_command_runs(tmp_path: Path) -> None:
    """The init container's command line, run for real: done at once when the port accepts
    connections, a clear failure after WAIT_SECONDS when it does not."""
    command = _wait_for_postgres(overlay("postgres"))["command"]
    assert command[:2] == ["python", "-c"]
    env = {"PATH": os.environ.get("PATH", ""), "WAIT_SECONDS": "0"}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env["DUMBKV_STORE"] = f"postgresql://dumbkv:pw@127.0.0.1:{port}/dumbkv"
        done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                              text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{port} accepts connections" in done.stdout
    # The listener is closed: nothing accepts on that port any more.
    done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1
    assert f"PostgreSQL at 127.0.0.1:{port} not reachable" in done.stderr
    assert "pw" not in done.stdout + done.stderr


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_env_var_is_a_real_setting(name: str) -> None:
    types = {s.env: s for s in SETTINGS}
    for var, entry in env_of(container(overlay(name))).items():
        assert var in setting_envs(), f"{var} is not a DumbKV setting"
        if "value" in entry:
            setting = types[var]
            value = setting.type(entry["value"])  # raises for a value DumbKV refuses
            assert setting.choices is None or value in setting.choices


@pytest.mark.parametrize("name", OVERLAYS)
def test_service_links_cannot_shadow_a_setting(name: str) -> None:
    """The kubelet gives a pod ``<SERVICE>_PORT=tcp://...`` and friends for every Service
    (Docker-link variables) unless enableServiceLinks is false; Service ``dumbkv`` would set
    DUMBKV_PORT, which DumbKV reads as its port and refuses."""
    objs = overlay(name)
    pod = one(objs, "Deployment", "dumbkv")["spec"]["template"]["spec"]
    if pod.get("enableServiceLinks", True) is False:
        return
    injected = set()
    for service in (o for o in objs if o["kind"] == "Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        injected |= {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
        for port in service["spec"]["ports"]:
            proto = port.get("protocol", "TCP")
            injected.add(f"{prefix}_PORT_{port['port']}_{proto}")
    assert not injected & setting_envs()


def test_a_service_link_variable_stops_the_server(tmp_path: Path) -> None:
    """Why the check above matters: the kubelet's DUMBKV_PORT for Service dumbkv."""
    env = environ_without_settings()
    env["DUMBKV_PORT"] = "tcp://10.96.0.10:7379"
    result = subprocess.run([sys.executable, "-m", "dumbkv", "serve", "--data-dir",
                             str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "DUMBKV_PORT" in result.stderr


# --------------------------------------------------------------------------- Service, Ingress
@pytest.mark.parametrize("name", OVERLAYS)
def test_service_reaches_only_the_dumbkv_pod(name: str) -> None:
    objs = overlay(name)
    service = one(objs, "Service", "dumbkv")
    c = container(objs)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"resp", "admin"}
    assert ports["resp"]["port"] == 7379 and ports["admin"]["port"] == 7380
    for port in ports.values():
        assert container_port(c, port["targetPort"]) == port["port"]
    selector = service["spec"]["selector"]
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selects(selector, labels) == (obj["metadata"]["name"] == "dumbkv")


def test_ingress_routes_the_read_only_admin_paths() -> None:
    objs = overlay("sqlite")
    ingress = one(objs, "Ingress", "dumbkv-admin")
    service = one(objs, "Service", "dumbkv")
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert set(hosts) <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
    paths = ingress_paths(ingress)
    assert {"/health", "/ready", "/metrics"} <= set(paths)
    for path in ingress["spec"]["rules"][0]["http"]["paths"]:
        backend = path["backend"]["service"]
        assert backend["name"] == "dumbkv"
        assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
        assert backend["port"]["name"] == "admin"
        assert path["pathType"] == "Exact"  # nothing else is reachable from outside
    assert not {"/maintenance/start", "/maintenance/stop", "/crosscheck"} & set(paths)


def ingress_paths(ingress: Obj) -> list[str]:
    return [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]


# --------------------------------------------------------------------------- monitoring
@pytest.mark.parametrize("name", OVERLAYS)
def test_service_monitor_scrapes_the_admin_port(name: str) -> None:
    objs = overlay(name)
    monitor = one(objs, "ServiceMonitor", "dumbkv")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in (o for o in objs if o["kind"] == "Service"):
        assert selects(selector, service["metadata"]["labels"]) == \
            (service["metadata"]["name"] == "dumbkv")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "admin"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert "jobLabel" not in monitor["spec"]  # job="dumbkv", the Service's name


@pytest.mark.parametrize("name", OVERLAYS)
def test_storage_alert_watches_every_data_volume(name: str) -> None:
    """Each claim an overlay makes (the PVC, a StatefulSet's claim <template>-<set>-<ordinal>)
    is selected by DumbKVStorageNearFull's persistentvolumeclaim matcher."""
    objs = overlay(name)
    claims = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for sts in (o for o in objs if o["kind"] == "StatefulSet"):
        for ordinal in range(sts["spec"]["replicas"]):
            claims |= {f"{t['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"
                       for t in sts["spec"].get("volumeClaimTemplates", [])}
    assert "dumbkv-data" in claims and (name == "sqlite" or len(claims) == 2), claims
    rule = one(objs, "PrometheusRule", "dumbkv")
    [expr] = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]
              if r.get("alert") == "DumbKVStorageNearFull"]
    matchers = set(re.findall(r'persistentvolumeclaim=~"([^"]+)"', expr))
    assert len(matchers) == 1 and 'persistentvolumeclaim="' not in expr, expr
    [pattern] = matchers
    for claim in claims:
        assert re.fullmatch(pattern, claim), (claim, pattern)


def test_prometheus_rule_is_included() -> None:
    rule = one(overlay("sqlite"), "PrometheusRule", "dumbkv")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert isinstance(rule["spec"]["groups"], list)
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "dumbkv"


def test_dashboard_config_map() -> None:
    cm = one(overlay("sqlite"), "ConfigMap", "dumbkv-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    [(key, text)] = cm["data"].items()
    assert key == "dumbkv.json"
    dashboard = json.loads(text)
    assert dashboard == json.loads((K8S / "base" / "dashboards" / "dumbkv.json").read_text())
    assert isinstance(dashboard.get("title"), str)
    assert len(json.dumps(cm).encode()) < LAST_APPLIED_LIMIT


# --------------------------------------------------------------------------- for real
def test_the_pods_command_line_serves_its_probe_paths(tmp_path: Path) -> None:
    """``dumbkv serve`` with the Deployment's command and environment (volumes in tmp_path,
    loopback and free ports instead of 0.0.0.0 and the fixed ports): every probe, scrape and
    Ingress path answers, the files land on the volume, SIGTERM ends it in the grace period."""
    objs = overlay("sqlite")
    c = container(objs)
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in c["volumeMounts"]}
    for directory in mounts.values():
        directory.mkdir()

    mount_path = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, mounts)) + r")(?=/|$)")

    def on_volumes(value: str) -> str:
        return mount_path.sub(lambda m: str(mounts[m.group(1)]), value)

    env = environ_without_settings()
    for var, entry in env_of(c).items():
        if "value" in entry:
            env[var] = on_volumes(str(entry["value"]))
        else:
            assert entry["valueFrom"]["secretKeyRef"].get("optional") is True  # no Secret here
    assert env["DUMBKV_HOST"] == env["DUMBKV_ADMIN_HOST"] == "0.0.0.0"
    admin = free_port()
    env.update(DUMBKV_HOST="127.0.0.1", DUMBKV_ADMIN_HOST="127.0.0.1",
               DUMBKV_PORT=str(free_port()), DUMBKV_ADMIN_PORT=str(admin))
    argv = [str(REPO / ".venv" / "bin" / c["command"][0]), *c["command"][1:], *c.get("args", [])]
    if not Path(argv[0]).exists():
        argv[0] = c["command"][0]
    grace = one(objs, "Deployment", "dumbkv")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    url = f"http://127.0.0.1:{admin}"
    with serving(argv, env, mounts["/tmp"], admin, tmp_path / "serve.log") as proc:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert http_get(url + c[probe]["httpGet"]["path"])[0] == 200, probe
        status, body = http_get(url + one(objs, "ServiceMonitor", "dumbkv")["spec"][
            "endpoints"][0]["path"])
        assert status == 200 and b"\ndumbkv_up 1.0" in body
        for path in ingress_paths(one(objs, "Ingress", "dumbkv-admin")):
            assert http_get(url + path)[0] == 200, path
        assert (mounts["/data"] / "dumbkv.db").exists()
        assert (mounts["/data"] / "availability.log").exists()
        proc.terminate()
        assert proc.wait(grace) == 0
