"""The Dockerfile, docker-compose stack, Grafana provisioning and Kubernetes manifests, checked offline.

No container engine or cluster is needed: these tests hold the shipped files against each other
and against the package, so that the places that must agree do (the config path the image runs,
the path Compose and Kubernetes mount the config at; the port the image listens on, the port
the probes, the Service and Prometheus use; the packages ``pyproject.toml`` builds, the folders
the Dockerfile copies and ``.dockerignore`` lets through; the uid the image runs as, the uid the
pod security context demands).

YAML is read with PyYAML.  ``kubectl kustomize`` renders the Kubernetes manifests as
``kubectl apply -k`` would, without talking to any cluster (the kubeconfig points at a closed
port on 127.0.0.1); only that rendering test is skipped where ``kubectl`` is missing.  The
Dockerfile, Compose, Prometheus and Grafana checks and the check that every kustomization names
files that exist always run.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
K8S_VARIANTS = [K8S, K8S / "sharding"]


# ---------------------------------------------------------------------- Dockerfile
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"no {instruction} in the {self.name or self.base} stage"
        return found[-1]


def dockerfile_stages() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of the Dockerfile: continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for text in logical:
        instruction, _, rest = text.strip().partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"cannot read FROM {rest!r}"
            stages.append(Stage(m.group(1), m.group(2)))
        elif not stages:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def image_command() -> tuple[list[str], list[str]]:
    runtime = dockerfile_stages()[1][-1]
    return _exec_form(runtime.last("ENTRYPOINT")), _exec_form(runtime.last("CMD"))


def image_config_path() -> str:
    _, cmd = image_command()
    assert "--config" in cmd, f"the default command {cmd} names no config"
    return cmd[cmd.index("--config") + 1]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in dockerfile_stages()[1][-1].all("ENV"):
        for m in re.finditer(r"(\w+)=(\S+)", args):
            env[m.group(1)] = m.group(2)
    return env


def image_user() -> tuple[int, int]:
    user = dockerfile_stages()[1][-1].last("USER")
    m = re.fullmatch(r"(\d+):(\d+)", user)
    assert m, f"USER {user!r}: give a numeric uid:gid, so Kubernetes' runAsNonRoot can verify it"
    return int(m.group(1)), int(m.group(2))


def image_healthcheck() -> list[str]:
    check = dockerfile_stages()[1][-1].last("HEALTHCHECK")
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", check)
    assert m, f"HEALTHCHECK {check!r}: expected an exec-form CMD"
    return _exec_form(m.group(1))


def test_dockerfile_is_two_slim_stages_with_nothing_but_the_virtualenv_in_the_last() -> None:
    args, stages = dockerfile_stages()
    assert len(stages) >= 2
    build, runtime = stages[0], stages[-1]

    def resolve(image: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image)

    # the virtualenv's interpreter symlinks must point at the same Python in both stages
    assert resolve(build.base) == resolve(runtime.base)
    assert "slim" in resolve(runtime.base)
    for copy in runtime.all("COPY"):
        assert re.match(rf"--from={re.escape(build.name or '0')}\s", copy), (
            f"the runtime stage copies {copy!r} from outside the build stage")
    for run in runtime.all("RUN"):
        for tool in ("apt-get install", "apk add", "pip install", "gcc", "build-essential", "make "):
            assert tool not in run, f"the runtime stage runs {tool!r}: {run}"


def test_image_runs_the_service_as_a_non_root_user_with_a_mounted_config() -> None:
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    entrypoint, cmd = image_command()
    assert entrypoint == ["aggbook"]
    assert cmd[0] == "serve"
    assert image_config_path().startswith("/etc/aggbook/")
    env = image_env()
    assert env.get("AGGBOOK_HOST") == "0.0.0.0"
    exposed = dockerfile_stages()[1][-1].last("EXPOSE").split()
    assert exposed == [env["AGGBOOK_PORT"]], "EXPOSE and AGGBOOK_PORT disagree"


def test_healthcheck_calls_healthz() -> None:
    check = image_healthcheck()
    assert check[0] == "python"
    assert "/healthz" in " ".join(check)
    assert "readyz" not in " ".join(check), "a restart does not bring venues back: liveness only"


def _dockerignore_admits(path: str) -> bool:
    """Whether the build context keeps ``path`` (Docker's rules: the last matching pattern wins)."""
    keep = True
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            candidates = [path] + [path.split("/", i)[-1] for i in range(1, path.count("/") + 1)]
            pattern = pattern[3:]
        else:
            candidates = [path]
        for candidate in candidates:
            parts = candidate.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if any(fnmatch.fnmatchcase(prefix, pattern) and prefix.count("/") == pattern.count("/")
                   for prefix in prefixes):
                keep = negate
                break
    return keep


def test_dockerignore_helper() -> None:
    assert _dockerignore_admits("book/l2.py")
    assert not _dockerignore_admits("book/__pycache__/l2.cpython-311.pyc")
    assert not _dockerignore_admits(".git/HEAD")
    assert not _dockerignore_admits(".venv/bin/python")
    assert not _dockerignore_admits("tests/deploy/test_manifests.py")


def test_build_stage_copies_every_package_the_wheel_is_built_from() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"aggbook": "."}, "the repository root is the aggbook package"
    # aggbook itself is the root's __init__.py; aggbook.X is the top-level folder X
    packages = ["__init__.py", *{p.split(".")[1] for p in setuptools["packages"] if "." in p}]
    copied: set[str] = set()
    for copy in dockerfile_stages()[1][0].all("COPY"):
        *sources, _dest = copy.split()
        copied.update(s.strip("/") for s in sources if not s.startswith("--"))
    needed = {"pyproject.toml", project["project"]["readme"], *packages}
    assert needed <= copied, f"the build stage does not copy {sorted(needed - copied)}"
    for source in sorted(copied):
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
        files = [source] if (REPO / source).is_file() else [
            str(p.relative_to(REPO)) for p in (REPO / source).rglob("*.py")][:5]
        for path in files:
            assert _dockerignore_admits(path), f".dockerignore keeps {path} out of the build context"


# ---------------------------------------------------------------------- kustomizations (no kubectl)
def _yaml_list(text: str, key: str) -> list[str]:
    """The scalar items of a block list under ``key:`` (just enough for kustomization.yaml)."""
    items: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(rf"^(\s*)(?:-\s+)?{re.escape(key)}:\s*$", line)
        if not m:
            continue
        indent = len(m.group(1))
        for following in lines[i + 1:]:
            if not following.strip() or following.lstrip().startswith("#"):
                continue
            item = re.match(r"^(\s*)-\s+(\S+)\s*$", following)
            if item is None or len(item.group(1)) < indent:
                break
            items.append(item.group(2).strip("\"'"))
    return items


@pytest.mark.parametrize("kustomization", sorted(K8S.rglob("kustomization.yaml")),
                         ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_references_exist(kustomization: Path) -> None:
    text = kustomization.read_text()
    referenced = _yaml_list(text, "resources") + _yaml_list(text, "files")
    assert referenced, f"{kustomization} references nothing"
    for ref in referenced:
        target = kustomization.parent / ref.split("=")[-1]
        assert target.exists(), f"{kustomization} references {ref}, which does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), f"{target} has no kustomization.yaml"


# ---------------------------------------------------------------------- YAML, and kustomize through kubectl
@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not found: rendering the kustomizations needs it")
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    # kustomize never contacts a cluster; should anything try, it finds a closed loopback port
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: none\n"
        "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: none, context: {cluster: none}}]\n")
    return [path, f"--kubeconfig={kubeconfig}"]


def _run(cmd: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def read_yaml(path: Path) -> Any:
    """One YAML document (no tabs: several tools reading these files reject them)."""
    text = path.read_text()
    assert "\n---" not in text and "\t" not in text, f"{path}: one document, no tabs"
    return yaml.safe_load(text)


def render(kubectl: list[str], variant: Path) -> list[dict]:
    """The manifests ``kubectl apply -k`` would send, as objects."""
    return [doc for doc in yaml.safe_load_all(_run([*kubectl, "kustomize", str(variant)])) if doc]


# ---------------------------------------------------------------------- compose and Grafana
def test_compose_stack_is_wired_together() -> None:
    compose = read_yaml(COMPOSE)
    services = compose["services"]
    assert {"aggbook", "prometheus", "grafana"} <= services.keys()

    def mounts(service: str) -> dict[str, Path]:
        out = {}
        for volume in services[service].get("volumes", []):
            volume = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume)  # the default of ${VAR:-default}
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{service} mounts {source}, which does not exist"
                out[target] = (DEPLOY / source).resolve()
        return out

    aggbook = services["aggbook"]
    assert (DEPLOY / aggbook["build"]["context"] / aggbook["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert mounts("aggbook")[image_config_path()] == (DEPLOY / "config.example.toml").resolve()
    default_command = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", aggbook["command"])
    assert default_command.split() == image_command()[1], "compose's default command is not the image's"
    port = image_env()["AGGBOOK_PORT"]
    assert f"{port}:{port}" in aggbook["ports"]
    assert aggbook.get("read_only") is True, "as in Kubernetes: the service needs no writable filesystem"

    # Prometheus: the shipped config, scraping the aggbook service on its port
    prom_mounts = mounts("prometheus")
    config_flag = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    config_path = Path(config_flag.split("=", 1)[1])
    assert prom_mounts[str(config_path.parent)] == (DEPLOY / "prometheus").resolve()
    prometheus = read_yaml(DEPLOY / "prometheus" / config_path.name)
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "aggbook"]
    assert job["static_configs"][0]["targets"] == [f"aggbook:{port}"]
    for rule_file in prometheus["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).exists()

    # Grafana: data source at the prometheus service, dashboards folder where the provider looks
    grafana_mounts = mounts("grafana")
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    (datasource,) = read_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    prom_port = services["prometheus"]["ports"][0].split(":")[-1]
    assert datasource["url"] == f"http://prometheus:{prom_port}"
    assert datasource["jsonData"]["timeInterval"] == job["scrape_interval"], (
        "Grafana's $__rate_interval is sized from timeInterval: keep it at the scrape interval")
    (provider,) = read_yaml(provisioning / "dashboards" / "aggbook.yml")["providers"]
    dashboards = grafana_mounts[provider["options"]["path"]]
    assert (dashboards / "aggbook.json").exists()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_dir, home_file = home.rsplit("/", 1)
    assert (grafana_mounts[home_dir] / home_file).exists()


# ---------------------------------------------------------------------- Kubernetes
def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("variant", K8S_VARIANTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kubernetes_manifests_render_and_agree_with_the_image(kubectl: list[str], variant: Path) -> None:
    docs = render(kubectl, variant)
    deployments = _by_kind(docs, "Deployment")
    services = _by_kind(docs, "Service")
    budgets = _by_kind(docs, "PodDisruptionBudget")
    configmaps = {c["metadata"]["name"]: c for c in _by_kind(docs, "ConfigMap")}
    assert deployments and len(services) == len(deployments) == len(budgets) == len(configmaps)
    uid, gid = image_user()
    config_dir, config_file = image_config_path().rsplit("/", 1)
    port = int(image_env()["AGGBOOK_PORT"])
    shipped_configs = {p.read_text() for p in variant.rglob("config.toml")} or {
        (K8S / "base" / "config.toml").read_text()}

    mounted = set()
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        assert _selects(spec["selector"]["matchLabels"], pod_labels), f"{name}: selector misses its pods"
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
        (container,) = pod["containers"]
        assert container.get("args", image_command()[1]) == image_command()[1]
        assert container.get("command") is None, "keep the image's entrypoint"
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert int(env.get("AGGBOOK_PORT", port)) == port
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": port}
        probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
        assert probes["livenessProbe"]["path"] == "/healthz"
        assert probes["readinessProbe"]["path"] == "/readyz"
        if "startupProbe" in container:
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        for probe in probes.values():
            assert probe["port"] in ("http", port)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True

        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        configmap = configmaps.get(volume["configMap"]["name"])
        assert configmap is not None, f"{name} mounts ConfigMap {volume['configMap']['name']}, not rendered"
        assert configmap["data"][config_file] in shipped_configs
        mounted.add(configmap["metadata"]["name"])

        (service,) = [s for s in services if _selects(s["spec"]["selector"], pod_labels)]
        assert [p["targetPort"] for p in service["spec"]["ports"]] in (["http"], [port])
        (budget,) = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], pod_labels)]
        assert budget["metadata"]["name"] == service["metadata"]["name"] == name

    # each Deployment mounts its own config (in the sharded variant: its own shard's symbols)
    assert len(mounted) == len(deployments)


# ---------------------------------------------------------------------- scale-out over NATS
def _nats_host_port(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"nats://([\w.-]+):(\d+)", url)
    assert m, f"not a nats:// URL: {url}"
    return m.group(1), int(m.group(2))


def _shard_config_nats_url(path: Path) -> str:
    return tomllib.loads(path.read_text())["nats"]["url"]


def test_compose_scale_profile_runs_nats_two_shards_and_a_gateway_all_scraped() -> None:
    services = read_yaml(COMPOSE)["services"]
    scale = {name for name, svc in services.items() if "scale" in svc.get("profiles", [])}
    assert scale == {"aggbook-nats", "aggbook-shard-0", "aggbook-shard-1", "aggbook-gateway"}
    nats_command = services["aggbook-nats"]["command"]
    assert "-js" in nats_command, "the key-value bucket needs JetStream"
    shards = sorted(name for name in scale if name.startswith("aggbook-shard-"))
    for k, name in enumerate(shards):
        command = services[name]["command"].split()
        assert command[:3] == ["serve", "--config", image_config_path()]
        assert command[command.index("--shard") + 1] == f"{k}/{len(shards)}"
        source = services[name]["volumes"][0].split(":")[0]
        host, port = _nats_host_port(_shard_config_nats_url(DEPLOY / source))
        assert host == "aggbook-nats" and port == 4222
    gateway = services["aggbook-gateway"]["command"].split()
    assert gateway[0] == "gateway"
    assert _nats_host_port(gateway[gateway.index("--nats") + 1]) == ("aggbook-nats", 4222)
    prometheus = read_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    (shard_sd,) = jobs["aggbook"]["dns_sd_configs"]
    assert sorted(shard_sd["names"]) == shards
    (gateway_sd,) = jobs["aggbook-gateway"]["dns_sd_configs"]
    assert gateway_sd["names"] == ["aggbook-gateway"]
    assert shard_sd["port"] == gateway_sd["port"] == int(image_env()["AGGBOOK_PORT"])


def test_kubernetes_nats_overlay_shards_as_a_statefulset_and_gateways_behind_the_service(
    kubectl: list[str],
) -> None:
    docs = render(kubectl, K8S / "nats")
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    shards = by_name[("StatefulSet", "aggbook-shard")]
    gateways = by_name[("Deployment", "aggbook-gateway")]
    nats = by_name[("StatefulSet", "aggbook-nats")]
    assert "-js" in nats["spec"]["template"]["spec"]["containers"][0]["args"]
    nats_service = by_name[("Service", "aggbook-nats")]
    nats_port = nats_service["spec"]["ports"][0]["port"]

    (shard,) = shards["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in shard["env"]}
    assert shard["args"][:3] == ["serve", "--config", image_config_path()]
    assert shard["args"][shard["args"].index("--shard") + 1] == "$(SHARD_INDEX)/$(SHARDS)"
    assert int(env["SHARDS"]["value"]) == shards["spec"]["replicas"], "N must be the replica count"
    assert env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']")
    (volume,) = shards["spec"]["template"]["spec"]["volumes"]
    configmap = by_name[("ConfigMap", volume["configMap"]["name"])]
    url = tomllib.loads(configmap["data"][image_config_path().rsplit("/", 1)[1]])["nats"]["url"]
    assert _nats_host_port(url) == ("aggbook-nats", nats_port)

    (gateway,) = gateways["spec"]["template"]["spec"]["containers"]
    assert gateway["args"][0] == "gateway"
    nats_url = gateway["args"][gateway["args"].index("--nats") + 1]
    assert _nats_host_port(nats_url) == ("aggbook-nats", nats_port)
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pod_labels = gateways["spec"]["template"]["metadata"]["labels"]
    service = by_name[("Service", "aggbook")]
    assert _selects(service["spec"]["selector"], pod_labels), "the Service must send clients to gateways"
    assert not _selects(service["spec"]["selector"], shards["spec"]["template"]["metadata"]["labels"])
    for workload in (shards, gateways):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
