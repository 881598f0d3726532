"""The cluster definitions in clusters/: valid for Ray, shaped for KubeRay, big enough for the sweeps.

- Launcher files (aws.yaml, gcp.yaml) go through the steps `ray up` takes before it talks to a
  cloud: `ray.autoscaler._private.util.prepare_config` (merge with the provider's defaults,
  fill per-type min/max workers) and `validate_config` (Ray's ray-schema.json plus its own
  cross-field rules). Nothing here contacts a cloud.
- KubeRay manifests: no pip package ships the RayCluster/RayJob CRD schema, so the structure
  KubeRay's CRD and its validation (ray-operator/controllers/ray/utils/validation.go) require
  is encoded here; and each RayCluster spec is read by Ray's own KubeRay autoscaler
  (`_derive_autoscaling_config_from_ray_cr`, which ends in `validate_config`), the code that
  decides from it what a worker group provides.
- Every sweep file in bench/configs/ and clusters/sweeps/ (read with the real loader,
  `bench.sweep.spec.load_spec`)
  must ask per trial for resources that at least one worker node type of every cluster provides.
"""

from __future__ import annotations

import copy
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHERS = {"aws": CLUSTERS / "aws.yaml", "gcp": CLUSTERS / "gcp.yaml"}
RAYCLUSTER = CLUSTERS / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTERS / "kuberay" / "rayjob.yaml"
# The sweep files the project ships: bench/configs/ and the GPU check in clusters/sweeps/.
SWEEP_FILES = sorted((ROOT / "bench" / "configs").glob("*.yaml")) + sorted((CLUSTERS / "sweeps").glob("*.yaml"))

# The team's tracking server on the head (`bench server`): runs in PostgreSQL (the launchers start
# one on the head; KubeRay names one in a secret, else SQLite on the shared volume), artifacts
# proxied to the shared file system.
MLFLOW_ARGS = {"--backend-store-uri": "postgresql://mlflow@127.0.0.1:5432/mlflow",
               "--artifacts-destination": "/shared/mlartifacts", "--host": "0.0.0.0",
               "--port": "5000", "--workers": "2"}
KUBERAY_BACKEND = "${MLFLOW_BACKEND_STORE_URI:-sqlite:////shared/mlflow.db}"
# KubeRay name limits (ray-operator utils/constant.go): service names must stay <= 63 chars.
MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# What the instance types really have (vCPU, GPU), so a declared `resources` cannot drift from
# the machine: the autoscaler plans with the declaration, Ray schedules on the real node.
INSTANCES = {
    "aws": {"m5.2xlarge": (8, 0), "g5.xlarge": (4, 1), "g5.12xlarge": (48, 4),
            "p4d.24xlarge": (96, 8), "c6i.4xlarge": (16, 0)},
    "gcp": {"n2-standard-8": (8, 0), "g2-standard-8": (8, 1), "n1-standard-8": (8, 0),
            "a2-highgpu-4g": (48, 4), "n2-standard-16": (16, 0)},
}


# ---------------------------------------------------------------------------------------------
# reading the definitions


def launcher_config(path: Path) -> dict[str, Any]:
    """The config as `ray up` holds it before its first cloud call (prepare, then validate)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


def kuberay_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one_doc(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in kuberay_docs(path) if d.get("kind") == kind]
    assert len(docs) == 1, f"{path}: expected one {kind} document, found {len(docs)}"
    return docs[0]


def ray_cluster_specs() -> dict[str, dict[str, Any]]:
    """label -> a RayCluster-shaped CR (the RayJob's rayClusterSpec wrapped as one)."""
    rc = one_doc(RAYCLUSTER, "RayCluster")
    job = one_doc(RAYJOB, "RayJob")
    out = {"kuberay RayCluster": rc}
    if job["spec"].get("rayClusterSpec") is not None:
        out["kuberay RayJob"] = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                 "metadata": {"name": job["metadata"]["name"],
                                              "namespace": job["metadata"].get("namespace", "default")},
                                 "spec": job["spec"]["rayClusterSpec"]}
    return out


def kuberay_autoscaling_config(cr: dict[str, Any]) -> dict[str, Any]:
    """What Ray's KubeRay autoscaler makes of the CR (it ends in `validate_config`)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    cr = copy.deepcopy(cr)
    cr["metadata"].setdefault("namespace", "default")
    return _derive_autoscaling_config_from_ray_cr(cr)


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_workers: int

    def __str__(self) -> str:
        res = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.resources.items()) if k != "memory")
        return f"{self.name} {{{res}}} x{self.max_workers}"


def worker_node_types(cfg: dict[str, Any]) -> list[NodeType]:
    head = cfg["head_node_type"]
    return [NodeType(name, {k: float(v) for k, v in nt["resources"].items()}, int(nt["max_workers"]))
            for name, nt in cfg["available_node_types"].items() if name != head]


def all_clusters() -> dict[str, list[NodeType]]:
    out = {f"clusters/{p.name}": worker_node_types(launcher_config(p)) for p in LAUNCHERS.values()}
    for label, cr in ray_cluster_specs().items():
        out[label] = worker_node_types(kuberay_autoscaling_config(cr))
    return out


# ---------------------------------------------------------------------------------------------
# does a sweep fit a cluster


def trial_bundles(spec: Any) -> tuple[dict[str, float], dict[str, float] | None, int]:
    """(what the trial reserves, what each DDP worker reserves or None, number of workers).

    The trial's own request is the sweep driver's (`bench.sweep.run.trial_resources`); a
    trial with workers > 1 drives a Ray Train worker group of `workers` x {cpu, gpu, custom}
    (`bench.train.trainable.worker_resources`)."""
    from bench.sweep.run import trial_resources

    key = {"cpu": "CPU", "gpu": "GPU"}
    trial = {key.get(k, k): float(v) for k, v in trial_resources(spec).items() if v}
    r = spec.resources
    if r.workers == 1:
        return trial, None, 1
    worker = {"CPU": float(r.cpu)} | ({"GPU": float(r.gpu)} if r.gpu else {}) | \
        {k: float(v) for k, v in r.custom.items()}
    return trial, worker, r.workers


def _per_node(bundle: dict[str, float], node: NodeType) -> int:
    """How many copies of ``bundle`` one node of this type holds."""
    counts = [math.floor(node.resources.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else node.max_workers


def fitting_types(spec: Any, nodes: list[NodeType]) -> list[str]:
    """Worker node types that can run one trial of ``spec``: the trial's bundle fits one node
    of the type, and (DDP) its `workers` bundles fit within the type's max_workers nodes."""
    trial, worker, n = trial_bundles(spec)
    fits = []
    for node in nodes:
        if node.max_workers < 1 or _per_node(trial, node) < 1:
            continue
        if worker is not None and _per_node(worker, node) * node.max_workers < n:
            continue
        fits.append(node.name)
    return fits


def check_sweep_fits(source: Path | str, spec: Any, clusters: dict[str, list[NodeType]]) -> None:
    """AssertionError naming the sweep file, its request and every cluster's node types when
    some cluster has no worker node type that can run one of its trials."""
    trial, worker, n = trial_bundles(spec)
    want = f"trial {trial}" + (f" + {n} workers x {worker}" if worker else "")
    problems = [f"  {label}: node types {', '.join(map(str, nodes)) or '(none)'}"
                for label, nodes in clusters.items() if not fitting_types(spec, nodes)]
    if problems:
        raise AssertionError(f"{source}: resources ({want}) fit no worker node type of\n"
                             + "\n".join(problems)
                             + "\nlower the sweep's `resources:` or add a node type to the cluster")


@pytest.fixture(scope="module")
def clusters() -> dict[str, list[NodeType]]:
    return all_clusters()


# ---------------------------------------------------------------------------------------------
# launcher files


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_passes_ray_validation(cloud):
    cfg = launcher_config(LAUNCHERS[cloud])
    assert cfg["provider"]["type"] == cloud
    assert cfg["cluster_name"] == "gesturebench"


def test_ray_validation_rejects_what_it_should():
    """The validator used above really checks: a fractional node resource and an unknown node
    type key both fail, as does a head type that is not declared."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(LAUNCHERS["aws"].read_text())
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_1x"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_1x"]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(raw)
    bad["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad))


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_node_types(cloud):
    """A CPU head that takes no trials, GPU worker types that autoscale from 0, and declared
    resources equal to what the machines have."""
    cfg = launcher_config(LAUNCHERS[cloud])
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert head["max_workers"] == 0
    gpu_types = [n for n, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types, f"{cloud}: no GPU worker node type"
    for name, t in types.items():
        if name == cfg["head_node_type"]:
            continue
        assert t["min_workers"] == 0, f"{cloud}/{name}: workers must scale from 0 (idle GPUs cost)"
        assert 1 <= t["max_workers"] <= cfg["max_workers"], f"{cloud}/{name}: max_workers"
    for name, t in types.items():
        nc = t["node_config"]
        machine = nc.get("InstanceType") or nc.get("machineType")
        assert machine in INSTANCES[cloud], f"{cloud}/{name}: unknown machine {machine}; add it to INSTANCES"
        vcpu, gpus = INSTANCES[cloud][machine]
        gpus += sum(a["acceleratorCount"] for a in nc.get("guestAccelerators", []))
        assert t["resources"].get("GPU", 0) == gpus, f"{cloud}/{name}: {machine} has {gpus} GPUs"
        if name != cfg["head_node_type"]:
            assert t["resources"]["CPU"] == vcpu, f"{cloud}/{name}: {machine} has {vcpu} vCPUs"
        if cloud == "gcp" and gpus:
            assert {"onHostMaintenance": "TERMINATE"} in nc.get("scheduling", []), \
                f"gcp/{name}: GPU VMs cannot live-migrate"


def _bench_server_args(command: str) -> list[str]:
    """The words after ``bench server`` in a shell command, up to its redirections."""
    words = shlex.split(command)
    i = next(j for j in range(len(words) - 1) if words[j] == "bench" and words[j + 1] == "server")
    end = next((j for j in range(i + 2, len(words)) if words[j] in (">", "&", "&&", ";", "2>&1")), len(words))
    return words[i + 2:end]


def _check_server_args(args: list[str], backend: str = MLFLOW_ARGS["--backend-store-uri"]) -> list[str]:
    """The head's `bench server` options, parsed by bench's own CLI, and the `mlflow server` argv
    they make, parsed by the installed MLflow's CLI (a wrong flag fails either); returns that argv."""
    from mlflow.cli import server

    from bench.report.ui import team_server_command

    a = _bench_parser().parse_args(["server", *args])
    assert a.backend_store_uri == backend
    assert a.artifacts_destination == MLFLOW_ARGS["--artifacts-destination"]
    cmd = team_server_command(a.backend_store_uri, a.artifacts_destination, host=a.host, port=a.port,
                              workers=a.workers, allowed_hosts=a.allowed_hosts)
    ctx = server.make_context("server", cmd[4:])
    assert ctx.params["backend_store_uri"] == backend
    assert ctx.params["artifacts_destination"] == MLFLOW_ARGS["--artifacts-destination"]
    assert ctx.params["serve_artifacts"] is True and ctx.params["default_artifact_root"] is None
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 5000
    assert str(ctx.params["workers"]) == "2"
    return cmd[4:]


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_head_runs_mlflow_after_ray(cloud):
    """After Ray: PostgreSQL on the head (127.0.0.1, the port the server's URI names), then the
    team's `bench server` over it, in the background; nothing of it on the workers."""
    cfg = launcher_config(LAUNCHERS[cloud])
    cmds = cfg["head_start_ray_commands"]
    ray_i = next(i for i, c in enumerate(cmds) if "ray start --head" in c)
    pg_i = [i for i, c in enumerate(cmds) if "pg_ctl" in c]
    ml_i = [i for i, c in enumerate(cmds) if "bench server" in c]
    assert len(ml_i) == 1 and len(pg_i) == 1 and ray_i < pg_i[0] < ml_i[0]
    assert "--num-cpus=0" in cmds[ray_i]
    assert not any("mlflow server" in c for c in cmds)
    _check_server_args(_bench_server_args(cmds[ml_i[0]]))
    assert '-p 5432 -h 127.0.0.1' in cmds[pg_i[0]] and "createdb -h 127.0.0.1 -U mlflow mlflow" in cmds[pg_i[0]]
    assert "nohup" in cmds[ml_i[0]] and cmds[ml_i[0]].rstrip().count("&") >= 1
    assert not any("bench server" in c or "pg_ctl" in c for c in cfg["worker_start_ray_commands"])
    setup = cfg["head_setup_commands"]
    assert any("install_postgres.sh" in c for c in setup) and any("psycopg" in c for c in setup)


def _pyproject_pin(name: str) -> str:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if re.match(rf"^{re.escape(name)}(\[.*\])?==", d))
    return pin.split("==")[1]


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_installs_the_pinned_stack(cloud):
    """torch (pinned as in pyproject) before the project; Ray's images at the pinned Ray and
    the project's Python; the project synced from the repository root."""
    import ray

    cfg = launcher_config(LAUNCHERS[cloud])
    for setup in (cfg["head_setup_commands"], cfg["worker_setup_commands"]):   # merged with setup_commands
        torch_i = next(i for i, c in enumerate(setup) if f"torch=={_pyproject_pin('torch')}" in c)
        proj_i = next(i for i, c in enumerate(setup) if "pip install" in c and "/home/ray/gesturebench" in c)
        assert torch_i < proj_i
    assert cfg["file_mounts"] == {"/home/ray/gesturebench": "."}
    ray_pin = _pyproject_pin("ray")
    assert ray_pin == ray.__version__
    images = [cfg["docker"][k] for k in ("image", "head_image", "worker_image") if k in cfg["docker"]]
    for image in images:
        assert image.startswith(f"rayproject/ray:{ray_pin}-py311"), image
    # rsync patterns without a leading slash match at any depth: none may hit a package folder.
    package_dirs = {p.name for top in ("bench", "pipelines") for p in (ROOT / top).rglob("*") if p.is_dir()}
    for pattern in cfg["rsync_exclude"]:
        if not pattern.startswith("/") and "*" not in pattern:
            assert pattern not in package_dirs, f"{cloud}: rsync_exclude {pattern!r} drops bench/**/{pattern}"


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_shares_storage_at_shared(cloud):
    cfg = launcher_config(LAUNCHERS[cloud])
    init = " ".join(cfg["initialization_commands"])
    assert re.search(r"mount -t nfs4? .* /shared", init), "no shared file system mounted at /shared"
    assert "mountpoint -q /shared" in init            # idempotent on `ray up` re-runs
    assert "-v /shared:/shared" in cfg["docker"]["run_options"]
    setup = " ".join(cfg["setup_commands"])
    assert "/shared/ray_results" in setup and "/shared/mlartifacts" in setup


# ---------------------------------------------------------------------------------------------
# KubeRay manifests


def _check_group(group: dict[str, Any], where: str) -> None:
    params = group.get("rayStartParams", {})
    assert isinstance(params, dict), f"{where}: rayStartParams must be a mapping"
    for k, v in params.items():
        assert isinstance(v, str), f"{where}: rayStartParams.{k} must be a string (got {v!r})"
    assert "labels" not in params, f"{where}: rayStartParams.labels is rejected by KubeRay"
    has_start_res = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
    assert not (has_start_res and group.get("resources")), \
        f"{where}: resources in both rayStartParams and the group's resources field"
    containers = group["template"]["spec"]["containers"]
    assert containers, f"{where}: template.spec.containers is empty"
    for c in containers:
        assert c.get("name") and c.get("image"), f"{where}: every container needs a name and an image"
        limits = c.get("resources", {}).get("limits", {})
        assert "cpu" in limits and "memory" in limits, f"{where}/{c['name']}: cpu and memory limits"
        gpu = limits.get("nvidia.com/gpu")
        if gpu is not None:
            assert str(gpu).isdigit() and int(gpu) >= 1, f"{where}: nvidia.com/gpu must be a whole number"
            req = c.get("resources", {}).get("requests", {}).get("nvidia.com/gpu")
            assert req is None or str(req) == str(gpu), f"{where}: GPU requests must equal limits"


def _check_raycluster_spec(spec: dict[str, Any], where: str, claim: str) -> None:
    assert spec.get("enableInTreeAutoscaling") is True, f"{where}: autoscaling off"
    assert spec.get("rayVersion") == _pyproject_pin("ray"), f"{where}: rayVersion"
    head = spec["headGroupSpec"]
    _check_group(head, f"{where} head")
    assert head["rayStartParams"].get("num-cpus") == "0", f"{where}: trials must not land on the head"
    groups = spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names), f"{where}: duplicate groupName"
    gpu_groups = 0
    for g in groups:
        w = f"{where} group {g['groupName']}"
        assert DNS1035.match(g["groupName"]), f"{w}: groupName must be a DNS-1035 label"
        _check_group(g, w)
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{w}: min <= replicas <= max"
        assert g["maxReplicas"] >= 1
        if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in g["template"]["spec"]["containers"]):
            gpu_groups += 1
            assert g["minReplicas"] == 0, f"{w}: GPU workers must scale from 0"
    assert gpu_groups, f"{where}: no worker group with nvidia.com/gpu limits"
    # every Ray container mounts the shared claim at /shared
    for g in [head, *groups]:
        pod = g["template"]["spec"]
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        c = pod["containers"][0]
        mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == "/shared"), None)
        assert mount is not None, f"{where}: {c['name']} does not mount /shared"
        assert vols[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim


def test_raycluster_structure():
    docs = kuberay_docs(RAYCLUSTER)
    pvc = one_doc(RAYCLUSTER, "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "GPU pods on many nodes share /shared"
    rc = one_doc(RAYCLUSTER, "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    name = rc["metadata"]["name"]
    assert DNS1035.match(name) and len(name) <= MAX_RAYCLUSTER_NAME
    assert len(docs) == 2
    _check_raycluster_spec(rc["spec"], str(RAYCLUSTER.relative_to(ROOT)), pvc["metadata"]["name"])


def test_raycluster_head_serves_mlflow():
    """The MLflow sidecar runs the team's tracking server; port 5000 is on the Ray container, from which
    KubeRay builds <name>-head-svc; MLflow's own host check admits that service name."""
    from mlflow.server.security_utils import is_allowed_host_header

    rc = one_doc(RAYCLUSTER, "RayCluster")
    pod = rc["spec"]["headGroupSpec"]["template"]["spec"]
    ray_c = pod["containers"][0]
    assert 5000 in [p["containerPort"] for p in ray_c["ports"]]
    for port in (6379, 8265, 10001):      # user ports replace KubeRay's defaults in older operators
        assert port in [p["containerPort"] for p in ray_c["ports"]]
    ml = [c for c in pod["containers"] if "bench server" in " ".join(c.get("command", []) + c.get("args", []))]
    assert len(ml) == 1
    cmd = " ".join(ml[0].get("args", []))
    args = _bench_server_args(cmd)
    _check_server_args(args, backend=KUBERAY_BACKEND)
    env = {e["name"]: e for e in ml[0].get("env", [])}      # the database URI: an optional secret
    ref = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is True and ref["key"] == "uri"
    allowed = [h.strip() for h in args[args.index("--allowed-hosts") + 1].split(",")]
    svc = f"{rc['metadata']['name']}-head-svc"
    for host in (f"{svc}:5000", f"{svc}.default.svc.cluster.local:5000", "localhost:5000", "10.4.2.7:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")


@pytest.mark.parametrize("label", ["kuberay RayCluster", "kuberay RayJob"])
def test_kuberay_groups_through_rays_autoscaler(label):
    """Ray's KubeRay autoscaler reads the CR as we mean it: head with 0 CPUs, GPU groups with
    their nvidia.com/gpu count as Ray GPUs, every worker group scaling from 0."""
    cfg = kuberay_autoscaling_config(ray_cluster_specs()[label])
    types = cfg["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    workers = worker_node_types(cfg)
    assert any(t.resources.get("GPU", 0) >= 1 for t in workers)
    for name, t in types.items():
        assert t["min_workers"] == 0, name


def _bench_parser():
    from bench.cli import build_parser

    return build_parser()


def _dockerfile_project_dir() -> str:
    text = (CLUSTERS / "docker" / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR\s+(\S+)", text, flags=re.M)[-1]
    assert re.search(rf"^RUN ln -s /shared/data {re.escape(workdir)}/data$", text, flags=re.M), \
        "the image must link <project>/data to the shared volume"
    assert re.search(r"pip install[^\n]*torch==" + re.escape(_pyproject_pin("torch")), text)
    assert f"rayproject/ray:{_pyproject_pin('ray')}-py311" in text
    return workdir


def test_rayjob_structure_and_entrypoint():
    rc = one_doc(RAYCLUSTER, "RayCluster")
    pvc = one_doc(RAYCLUSTER, "PersistentVolumeClaim")
    job = one_doc(RAYJOB, "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    name = job["metadata"]["name"]
    assert DNS1035.match(name) and len(name) <= MAX_RAYJOB_NAME
    spec = job["spec"]
    assert spec.get("shutdownAfterJobFinishes") is True
    assert spec.get("ttlSecondsAfterFinished", 0) >= 0
    has_spec, selector = spec.get("rayClusterSpec") is not None, spec.get("clusterSelector")
    assert has_spec != bool(selector), "exactly one of rayClusterSpec / clusterSelector"
    if selector:
        assert selector.get("ray.io/cluster") == rc["metadata"]["name"]
    else:
        _check_raycluster_spec(spec["rayClusterSpec"], f"{RAYJOB.name} rayClusterSpec", pvc["metadata"]["name"])
    env = yaml.safe_load(spec["runtimeEnvYAML"])      # KubeRay rejects a runtimeEnvYAML that is not YAML
    assert isinstance(env, dict)

    # bash -c 'cd <project dir in the image> && exec bench sweep FILE ...'
    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["bash", "-c"] and len(words) == 3
    cd, _, command = words[2].partition("&&")
    assert shlex.split(cd) == ["cd", _dockerfile_project_dir()]
    words = shlex.split(command)
    if words[0] == "exec":
        words = words[1:]
    assert words[:2] == ["bench", "sweep"]
    args = _bench_parser().parse_args(words[1:])          # the real CLI accepts every flag
    assert args.func is not None
    sweep_file = ROOT / words[2]
    assert sweep_file.is_file(), f"the RayJob runs {words[2]}, which the project does not ship"
    from bench.sweep.spec import load_spec

    load_spec(sweep_file, base_dir=ROOT)
    uri = words[words.index("--tracking-uri") + 1]
    assert uri == f"http://{rc['metadata']['name']}-head-svc:5000", "MLflow lives on the RayCluster's head"
    assert env.get("env_vars", {}).get("MLFLOW_TRACKING_URI") == uri
    storage = words[words.index("--storage") + 1] if "--storage" in words else None
    assert storage is not None and storage.startswith("/shared/"), "Tune's results must outlive the job"


def test_readme_bench_commands_parse():
    """Every `bench ...` line in clusters/README.md's shell blocks parses with the real CLI."""
    text = (CLUSTERS / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S)
    lines = []
    for b in blocks:
        joined = re.sub(r"\\\n\s*", " ", b)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            m = re.search(r"(?:^|--\s+|\s)(bench\s+(?:sweep|run|sync|server|report|ui)\b.*)$", line)
            if m:
                lines.append(m.group(1).rstrip("'\""))
    assert lines, "clusters/README.md shows no bench command"
    parser = _bench_parser()
    for line in lines:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"clusters/README.md: `{line}` does not parse with bench's CLI")


# ---------------------------------------------------------------------------------------------
# sweep files vs clusters


def test_project_ships_sweep_files():
    names = {p.name for p in SWEEP_FILES}
    assert "table1.yaml" in names, f"bench/configs/ holds {sorted(names)}; the RayJob runs table1.yaml"


@pytest.mark.parametrize("sweep_file", SWEEP_FILES, ids=[str(p.relative_to(ROOT)) for p in SWEEP_FILES])
def test_sweep_file_fits_every_cluster(sweep_file, clusters):
    from bench.sweep.spec import load_spec

    spec = load_spec(sweep_file, base_dir=ROOT)
    check_sweep_fits(sweep_file.relative_to(ROOT), spec, clusters)


def test_fit_check_names_file_and_node_types(clusters, tmp_path):
    """A sweep asking for more than any node has fails with the file and the node types named;
    fractional GPUs pack two to a GPU; DDP workers may spread over a type's nodes."""
    from bench.sweep.spec import load_spec

    base = ("name: big\ndatasets: {d: {format: isogd, root: data/x}}\nstages: [pretrain]\n"
            "epochs: 1\ngrid: {cells: [a]}\ntrain: {batch_size: 16}\n")   # 16 splits over 1-16 workers
    f = tmp_path / "too-big.yaml"
    # 16 GPUs for one trial: 16 DDP workers of one GPU each (`gpu: 16` alone is refused at load
    # time: a worker trains on one GPU), more than any cluster's GPU node types hold together
    f.write_text(base + "resources: {cpu: 4, gpu: 1, workers: 16}\n")
    with pytest.raises(AssertionError) as e:
        check_sweep_fits(f, load_spec(f, base_dir=tmp_path), clusters)
    msg = str(e.value)
    assert str(f) in msg and "gpu_1x {CPU: 4, GPU: 1} x8" in msg and "gpu_a100" in msg
    assert "kuberay RayJob" in msg and "gpu-1x" in msg

    f.write_text(base + "resources: {cpu: 1, gpu: 1, custom: {tpu_pod: 1}}\n")
    with pytest.raises(AssertionError, match="tpu_pod"):
        check_sweep_fits(f, load_spec(f, base_dir=tmp_path), clusters)

    aws = {"aws": clusters["clusters/aws.yaml"]}
    f.write_text(base + "resources: {cpu: 2, gpu: 0.5}\n")
    spec = load_spec(f, base_dir=tmp_path)
    assert fitting_types(spec, aws["aws"]) == ["gpu_1x", "gpu_4x", "gpu_8x"]
    check_sweep_fits(f, spec, clusters)
    # 16 DDP workers x 1 GPU: only 8 x gpu_1x (8) ... gpu_4x (2 x 4 = 8): none holds 16 on AWS
    f.write_text(base + "resources: {cpu: 4, gpu: 1, workers: 8}\n")
    assert fitting_types(load_spec(f, base_dir=tmp_path), aws["aws"]) == ["gpu_1x", "gpu_4x", "gpu_8x"]
    f.write_text(base + "resources: {cpu: 4, gpu: 1, workers: 16}\n")
    assert fitting_types(load_spec(f, base_dir=tmp_path), aws["aws"]) == []
