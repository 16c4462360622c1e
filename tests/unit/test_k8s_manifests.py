"""The Kubernetes manifests under deploy/k8s agree with the code they run.

Every YAML file parses and the kustomization lists every manifest; each hubspoke container
runs a command the image's entrypoint knows (`hubspoke.container.DISPATCH`,
`hub.cli.main.parser()`);
each `--config FILE` is a key of a mounted ConfigMap, and that file, with `${NAME}` filled from
the environment the manifests give the container, passes the real validators
(`hub.config.parse_hub_config`, `spoke.config.parse_config`). Probes, container ports, Services,
selectors, disruption budgets, etcd's flags (auto-compaction and an explicit quota included) and
the references to ConfigMaps and Secrets are checked against the configuration and against each
other. A renamed key, port, label or object fails here with the name of what no longer matches.

The kustomize features modelled are those the layout uses (resources, namespace, ConfigMap and
Secret generators, images); anything else in kustomization.yaml fails the test rather than
being ignored.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub import config as hubconfig
from hub.cli import main as cli
from hubspoke import container as entrypoint
from hubspoke import procconfig
from hubspoke.config import ConfigError, Section
from spoke import config as spokeconfig
from tests.lab.etcdspace import check_space_flags, quantity_bytes

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
ETCD_DOCKERFILE = ROOT / "deploy" / "etcd.Dockerfile"

Obj = dict[str, Any]

HUBSPOKE_IMAGE = "hubspoke/hubspoke"
ETCD_IMAGE = "hubspoke/etcd"
IMAGE_USER = 10001  # deploy/Dockerfile: USER 10001:10001
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
API_VERSIONS = {
    "Namespace": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
}
KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "images",
}
GENERATOR_KEYS = {"name", "files", "envs", "literals"}

# The configuration each process command validates, as its `--config` file.
VALIDATORS: dict[str, Callable[[object], object]] = {
    "hub": hubconfig.parse_hub_config,
    "spoke": spokeconfig.parse_config,
}

# What the downward API gives a pod, invented but shaped like the real thing. A Deployment's
# pods are named <deployment>-<pod-template-hash, up to 10>-<5>: the longest form is used, so a
# name that makes an invalid hubspoke node name fails here.
NODE_NAME = "worker-1"
NODE_IP = "192.0.2.21"
POD_IP = "198.51.100.7"
WILDCARDS = ("0.0.0.0", "::")

# Where the README tells operators to put etcd's TLS files (Secret hubspoke-etcd-tls).
ETCD_TLS = {
    "ca_file": "/etc/hubspoke/tls/ca.crt",
    "cert_file": "/etc/hubspoke/tls/tls.crt",
    "key_file": "/etc/hubspoke/tls/tls.key",
}

# The hub process serves /metrics on `metrics.listen` (hub/main.py), so its Deployment declares
# the metrics port like the spoke's DaemonSet does.
HUB_SERVES_METRICS = True


# -- loading -------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path) -> list[object]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def rel(path: Path) -> str:
    return path.relative_to(K8S).as_posix()


@cache
def kustomization() -> Obj:
    docs = load_docs(K8S / "kustomization.yaml")
    assert len(docs) == 1 and isinstance(docs[0], dict)
    return docs[0]


def env_file(path: Path) -> dict[str, str]:
    """A kustomize `envs` file: KEY=VALUE lines, `#` comments and blank lines skipped."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key, f"{rel(path)}:{n}: not KEY=VALUE"
        out[key] = value
    return out


def generator_source(item: str) -> tuple[str, Path]:
    """`key=path` or `path` (the key is then the file's name)."""
    key, sep, path = item.partition("=")
    p = K8S / (path if sep else key)
    return (key if sep else p.name), p


def env_source(item: str) -> Path:
    """Where the keys of an `envs` file are read: its committed example (the file itself holds a
    secret, is git-ignored and exists only where an operator made it)."""
    return K8S / f"{item}.example"


def generated(gen: Obj, kind: str) -> Obj:
    unknown = set(gen) - GENERATOR_KEYS
    assert not unknown, f"{kind} generator {gen.get('name')}: unmodelled keys {unknown}"
    data: dict[str, str] = {}
    for item in gen.get("files", []):
        key, path = generator_source(item)
        assert path.is_file(), f"{kind} generator {gen['name']}: {item}: no such file"
        data[key] = path.read_text(encoding="utf-8")
    for item in gen.get("envs", []):
        example = env_source(item)
        assert example.is_file(), f"{kind} generator {gen['name']}: {example.name} is missing"
        data.update(env_file(example))
    for item in gen.get("literals", []):
        key, _, value = item.partition("=")
        data[key] = value
    assert data, f"{kind} generator {gen['name']} generates no key"
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}, "data": data}


@cache
def objects() -> tuple[Obj, ...]:
    """Every object `kubectl apply -k deploy/k8s` would create, names before hashing."""
    k = kustomization()
    out: list[Obj] = []
    for resource in k.get("resources", []):
        for doc in load_docs(K8S / resource):
            assert isinstance(doc, dict), f"{resource}: a document is not a mapping"
            out.append(doc)
    out += [generated(g, "ConfigMap") for g in k.get("configMapGenerator", [])]
    out += [generated(g, "Secret") for g in k.get("secretGenerator", [])]
    return tuple(out)


def of_kind(*kinds: str) -> list[Obj]:
    return [o for o in objects() if o["kind"] in kinds]


def named(kind: str, name: str) -> Obj:
    found = [o for o in of_kind(kind) if o["metadata"]["name"] == name]
    assert found, f"no {kind} named {name!r}"
    assert len(found) == 1, f"{len(found)} objects {kind}/{name}"
    return found[0]


def data_of(obj: Obj) -> dict[str, str]:
    """A ConfigMap's or Secret's keys (a Secret's `data` values stay base64: only keys matter)."""
    return {**obj.get("data", {}), **obj.get("stringData", {})}


def label(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# -- pods and containers ----------------------------------------------------------------------


def pod_spec(w: Obj) -> Obj:
    spec: Obj = w["spec"]["template"]["spec"]
    return spec


def template_labels(w: Obj) -> dict[str, str]:
    labels: dict[str, str] = w["spec"]["template"]["metadata"].get("labels", {})
    return labels


def containers(w: Obj, *, init: bool = True) -> list[Obj]:
    spec = pod_spec(w)
    return [*(spec.get("initContainers", []) if init else []), *spec.get("containers", [])]


def all_containers() -> Iterator[tuple[Obj, Obj]]:
    for w in of_kind(*WORKLOADS):
        for c in containers(w):
            yield w, c


def image_name(c: Obj) -> str:
    """The image without its tag or digest."""
    image: str = c["image"].split("@")[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':')[0]}" if head else last.split(":")[0]


def hubspoke_processes() -> list[tuple[Obj, Obj]]:
    """(workload, container) of every hubspoke container run through the image's entrypoint."""
    return [
        (w, c)
        for w, c in all_containers()
        if image_name(c) == HUBSPOKE_IMAGE and "command" not in c
    ]


def process(command: str) -> tuple[Obj, Obj]:
    found = [(w, c) for w, c in hubspoke_processes() if c["args"][0] == command]
    assert len(found) == 1, f"{len(found)} containers run {command!r}, expected one"
    return found[0]


def security(w: Obj, c: Obj) -> Obj:
    """The container's effective security settings (pod level, then container level)."""
    return {**pod_spec(w).get("securityContext", {}), **c.get("securityContext", {})}


def pod_name(w: Obj) -> str:
    name: str = w["metadata"]["name"]
    if w["kind"] == "Deployment":
        return f"{name}-7d4b9c6f5b-x2kqz"
    if w["kind"] == "StatefulSet":
        return f"{name}-{int(w['spec'].get('replicas', 1)) - 1}"
    return f"{name}-x2kqz"


def pod_ip(w: Obj) -> str:
    return NODE_IP if pod_spec(w).get("hostNetwork") else POD_IP


def field_value(w: Obj, field: str) -> str:
    values = {
        "metadata.name": pod_name(w),
        "metadata.namespace": str(kustomization()["namespace"]),
        "spec.nodeName": NODE_NAME,
        "status.podIP": pod_ip(w),
        "status.hostIP": NODE_IP,
    }
    assert field in values, f"{label(w)}: fieldRef {field} is not modelled by this test"
    return values[field]


def secret_value(name: str, key: str) -> str:
    """Stands for a Secret's value: the same key gives the same value, and it passes the token
    rules (8 characters or more, no spaces)."""
    return f"{name}.{key}.value"


_K8S_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_refs(text: str) -> list[str]:
    return [m.group(1) for m in _K8S_REF.finditer(text) if m.group(1)]


def k8s_expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of args and env values (`$$` escapes)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _K8S_REF.sub(sub, text)


def container_env(w: Obj, c: Obj) -> dict[str, str]:
    """The container's environment as the kubelet builds it, values from the manifests."""
    assert "envFrom" not in c, f"{label(w)}/{c['name']}: envFrom is not modelled by this test"
    env: dict[str, str] = {}
    for e in c.get("env", []):
        name = e["name"]
        where = f"{label(w)}/{c['name']} env {name}"
        if "value" in e:
            for ref in k8s_refs(e["value"]):
                assert ref in env, f"{where}: $({ref}) is not defined before it"
            env[name] = k8s_expand(e["value"], env)
            continue
        source = e["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_value(w, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            keys = data_of(named("Secret", ref["name"]))
            assert ref["key"] in keys, f"{where}: Secret {ref['name']} has no key {ref['key']!r}"
            env[name] = secret_value(ref["name"], ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = data_of(named("ConfigMap", ref["name"]))
            assert ref["key"] in data, f"{where}: ConfigMap {ref['name']} has no {ref['key']!r}"
            env[name] = data[ref["key"]]
        else:
            raise AssertionError(f"{where}: {sorted(source)} is not modelled by this test")
    return env


@dataclass(frozen=True, slots=True)
class Mounted:
    """What a path inside a container is: a key of a ConfigMap or Secret, or another volume."""

    kind: str  # "configMap", "secret" or another volume type
    name: str  # the object's name, or the volume's
    key: str | None
    read_only: bool


def volume(w: Obj, name: str) -> Obj:
    vols: dict[str, Obj] = {v["name"]: v for v in pod_spec(w).get("volumes", [])}
    for t in w["spec"].get("volumeClaimTemplates", []):
        vols[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "persistentVolumeClaim": t}
    assert name in vols, f"{label(w)}: no volume {name!r}"
    return vols[name]


def volume_type(v: Obj) -> str:
    (kind,) = (k for k in v if k != "name")
    return kind


def mounted(w: Obj, c: Obj, path: str) -> Mounted | None:
    """The mount that holds `path` in container `c` (the deepest mount point wins)."""
    best: tuple[int, Mounted] | None = None
    for m in c.get("volumeMounts", []):
        point = m["mountPath"].rstrip("/")
        if "subPath" in m:
            if path != point:
                continue
            inside = m["subPath"]
        elif path.startswith(point + "/"):
            inside = path[len(point) + 1 :]
        else:
            continue
        v = volume(w, m["name"])
        kind = volume_type(v)
        key: str | None = None
        if kind in ("configMap", "secret"):
            source = v[kind]
            obj_name = source["name"] if kind == "configMap" else source["secretName"]
            items = source.get("items")
            if items:
                keys = [i["key"] for i in items if i["path"] == inside]
                key = keys[0] if keys else None
            else:
                key = inside
            found = Mounted(kind, obj_name, key, True)
        else:
            found = Mounted(kind, m["name"], None, bool(m.get("readOnly", False)))
        if best is None or len(point) > best[0]:
            best = (len(point), found)
    return None if best is None else best[1]


def mounted_key(w: Obj, c: Obj, path: str) -> tuple[Obj, str]:
    """The ConfigMap or Secret and the key that `path` is, or an AssertionError saying why not."""
    where = f"{label(w)}/{c['name']}: {path}"
    m = mounted(w, c, path)
    assert m is not None, f"{where} is on no volume mount"
    assert m.kind in ("configMap", "secret"), f"{where} is on a {m.kind} volume"
    obj = named("ConfigMap" if m.kind == "configMap" else "Secret", m.name)
    assert m.key is not None and m.key in data_of(obj), f"{where}: {label(obj)} has no such key"
    return obj, m.key


# -- the processes' configuration -----------------------------------------------------------


def config_path(w: Obj, c: Obj) -> str:
    args: list[str] = c["args"]
    for i, a in enumerate(args):
        if a == "--config":
            assert i + 1 < len(args), f"{label(w)}/{c['name']}: --config without a value"
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{label(w)}/{c['name']}: {args[0]} without --config")


def config_data(w: Obj, c: Obj) -> object:
    obj, key = mounted_key(w, c, config_path(w, c))
    return yaml.safe_load(data_of(obj)[key])


_CONFIG_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def config_refs(data: object) -> Iterator[tuple[str, bool]]:
    """(NAME, has a default) of every `${NAME}` in the strings of `data`."""
    if isinstance(data, str):
        for m in _CONFIG_REF.finditer(data.replace("$$", "")):
            yield m.group(1), m.group(2) is not None
    elif isinstance(data, dict):
        for v in data.values():
            yield from config_refs(v)
    elif isinstance(data, list):
        for v in data:
            yield from config_refs(v)


def patch_file_checks(monkeypatch: pytest.MonkeyPatch, w: Obj, c: Obj, *, empty_ok: bool) -> None:
    """Files named by a configuration (TLS) must be keys of a ConfigMap or Secret mounted in the
    container, not files on the machine running the test."""

    def existing_file(s: Section, key: str) -> Path | None:
        name = s.optional_text(key)
        if name is None:
            return None
        obj, k = mounted_key(w, c, name)
        value = data_of(obj)[k]
        if not value and not empty_ok:
            raise ConfigError(s.at(key), f"{name}: key {k!r} of {label(obj)} is empty")
        return Path(name)

    monkeypatch.setattr(procconfig, "existing_file", existing_file)
    monkeypatch.setattr(hubconfig, "existing_file", existing_file)


def parsed(
    w: Obj,
    c: Obj,
    monkeypatch: pytest.MonkeyPatch,
    *,
    edit: Callable[[Obj], None] | None = None,
    empty_ok: bool = False,
) -> Any:
    """The container's configuration through its real validator, environment expanded."""
    command = c["args"][0]
    assert command in VALIDATORS, f"{label(w)}: no validator known for {command!r}"
    data = config_data(w, c)
    if edit is not None:
        assert isinstance(data, dict)
        edit(data)
    patch_file_checks(monkeypatch, w, c, empty_ok=empty_ok)
    expanded = procconfig.expand_env(data, env=container_env(w, c))
    return VALIDATORS[command](expanded)


def listen(text: str, path: str) -> tuple[str, int]:
    return procconfig.host_port(text, path)


# -- the layout -------------------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 6
    for path in files:
        for doc in load_docs(path):
            assert isinstance(doc, dict), f"{rel(path)}: a document is not a mapping"


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    k = kustomization()
    assert k["kind"] == "Kustomization"
    unknown = set(k) - KUSTOMIZATION_KEYS
    assert not unknown, f"kustomization.yaml uses {unknown}, which this test does not model"
    resources = k["resources"]
    assert len(set(resources)) == len(resources), "a resource is listed twice"
    for r in resources:
        assert "://" not in r and not r.startswith(".."), f"{r}: not a file of deploy/k8s"
        assert (K8S / r).is_file(), f"kustomization.yaml lists {r}, which does not exist"
    sources = {
        rel(generator_source(item)[1])
        for g in k.get("configMapGenerator", [])
        for item in g.get("files", [])
    }
    for path in yaml_files():
        name = rel(path)
        if name == "kustomization.yaml" or name in sources:
            continue
        assert name in resources, f"{name} is not listed in kustomization.yaml resources"


def test_objects_are_well_formed_and_unique() -> None:
    seen: set[tuple[str, str]] = set()
    namespace = kustomization()["namespace"]
    for o in objects():
        kind = o.get("kind")
        assert kind in API_VERSIONS, f"{kind}: a kind this test does not check"
        assert o.get("apiVersion") == API_VERSIONS[kind], f"{label(o)}: apiVersion"
        name = o["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name), f"{label(o)}: name"
        assert (kind, name) not in seen, f"{label(o)} is defined twice"
        seen.add((kind, name))
        ns = o["metadata"].get("namespace")
        assert ns in (None, namespace), f"{label(o)}: namespace {ns}, not {namespace}"
    assert ("Namespace", namespace) in seen, f"no Namespace object for {namespace!r}"


def test_the_token_file_stays_out_of_git() -> None:
    ignored = (K8S / ".gitignore").read_text(encoding="utf-8").split()
    for g in kustomization().get("secretGenerator", []):
        for item in g.get("envs", []):
            assert item in ignored, f"{item} (a secret) is not in deploy/k8s/.gitignore"
            assert env_source(item).is_file()


def test_images_name_no_registry_and_are_all_set_in_the_kustomization() -> None:
    entries = {i["name"]: i for i in kustomization()["images"]}
    assert set(entries) == {HUBSPOKE_IMAGE, ETCD_IMAGE}
    assert entries[HUBSPOKE_IMAGE]["newTag"] == "latest"
    assert str(entries[ETCD_IMAGE]["newTag"]) == "3.4"
    used = {image_name(c) for _, c in all_containers()}
    assert used == set(entries), f"containers use {used}, kustomization sets {set(entries)}"
    names = [c["image"] for _, c in all_containers()]
    names += [i.get("newName", "") for i in entries.values()]
    for name in filter(None, names):
        first = name.split("/")[0]
        assert "/" in name and "." not in first and ":" not in first and first != "localhost", (
            f"image {name!r} names a registry host"
        )


# -- commands and configuration -------------------------------------------------------------


def cli_verbs() -> set[str]:
    parser = cli.parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def test_hubspoke_containers_run_a_command_of_the_entrypoint() -> None:
    known = set(entrypoint.DISPATCH) | cli_verbs()
    commands = []
    for w, c in all_containers():
        if image_name(c) != HUBSPOKE_IMAGE:
            continue
        where = f"{label(w)}/{c['name']}"
        if "command" in c:
            # Only the spoke's journal directory init container leaves the entrypoint.
            init = {i["name"] for i in pod_spec(w).get("initContainers", [])}
            assert c["name"] in init, f"{where}: overrides the entrypoint"
            assert c["command"][0] == "chown", f"{where}: {c['command']}"
            continue
        args = c.get("args")
        assert args, f"{where}: no command for hubspoke-container"
        assert args[0] in known, f"{where}: {args[0]!r} is neither {sorted(known)}"
        commands.append(args[0])
    assert sorted(commands) == ["hub", "spoke"]


@pytest.mark.parametrize("command", ["hub", "spoke"])
def test_config_file_is_a_key_of_a_mounted_configmap(command: str) -> None:
    w, c = process(command)
    path = config_path(w, c)
    obj, key = mounted_key(w, c, path)
    assert obj["kind"] == "ConfigMap", f"{path} comes from {label(obj)}"
    assert key == f"{command}.yaml"


@pytest.mark.parametrize("command", ["hub", "spoke"])
def test_config_validates_in_its_container(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    w, c = process(command)
    env = container_env(w, c)
    for name, has_default in config_refs(config_data(w, c)):
        assert has_default or name in env, f"{command}.yaml uses ${{{name}}}; {label(w)} sets none"
    try:
        cfg = parsed(w, c, monkeypatch)
    except ConfigError as e:
        raise AssertionError(f"{command}.yaml in {label(w)}: {e}") from None
    assert cfg.node == {"hub": pod_name(w), "spoke": NODE_NAME}[command]


def test_a_renamed_key_fails_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above runs the real validators: a misspelt key is refused, not ignored."""
    w, c = process("spoke")

    def rename(data: Obj) -> None:
        data["clusters"] = data.pop("cluster")

    with pytest.raises(ConfigError, match="clusters: unknown key"):
        parsed(w, c, monkeypatch, edit=rename)


def test_hub_and_spokes_share_etcd_keys_token_and_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = parsed(*process("hub"), monkeypatch)
    spoke = parsed(*process("spoke"), monkeypatch)
    assert spoke.mode is spokeconfig.Mode.CLUSTER
    assert not spoke.hub.eligible, "the hub Deployment holds the role"
    assert hub.etcd.root == spoke.etcd.root
    assert hub.etcd.client.endpoints == spoke.etcd.client.endpoints
    assert spoke.cluster.token is not None
    assert spoke.cluster.token in hub.role.grpc.tokens, "the hub would refuse the spokes' token"
    # docs/cluster.md: a spoke stops new allocations no later than the hub moves its blocks
    assert spoke.failover.max_interrupted <= hub.role.planner.max_interrupted
    assert hub.role.seed_scopes, "config/hub.yaml seeds no scope"
    for scope in hub.role.seed_scopes:
        for ifname in scope.get("interfaces") or ():
            assert ifname in spoke.dhcp.interfaces, (
                f"scope {scope['name']}: interface {ifname} is not in the spokes' dhcp.interfaces"
            )


@pytest.mark.parametrize("command", ["hub", "spoke"])
def test_etcd_tls_as_documented_resolves_to_the_mounted_secret(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for key, path in ETCD_TLS.items():
        assert f"{key}: {path}" in readme

    def with_tls(data: Obj) -> None:
        data["etcd"] = {**(data.get("etcd") or {}), **ETCD_TLS}

    w, c = process(command)
    cfg = parsed(w, c, monkeypatch, edit=with_tls, empty_ok=True)
    assert str(cfg.etcd.client.ca_file) == ETCD_TLS["ca_file"]
    for path in ETCD_TLS.values():
        obj, _ = mounted_key(w, c, path)
        assert obj["kind"] == "Secret"


# -- references, selectors, Services --------------------------------------------------------


def test_env_references_exist() -> None:
    for w, c in all_containers():
        container_env(w, c)  # asserts every secretKeyRef / configMapKeyRef / $(VAR)


def test_volumes_reference_existing_objects_and_are_all_mounted() -> None:
    for w in of_kind(*WORKLOADS):
        spec = pod_spec(w)
        used = {m["name"] for c in containers(w) for m in c.get("volumeMounts", [])}
        for v in spec.get("volumes", []):
            kind = volume_type(v)
            assert v["name"] in used, f"{label(w)}: volume {v['name']} is mounted nowhere"
            if kind in ("configMap", "secret"):
                source = v[kind]
                obj = named(
                    "ConfigMap" if kind == "configMap" else "Secret",
                    source["name"] if kind == "configMap" else source["secretName"],
                )
                for item in source.get("items", []):
                    assert item["key"] in data_of(obj), f"{label(w)}: {label(obj)} {item['key']}"
            else:
                assert kind in ("emptyDir", "hostPath"), f"{label(w)}: {kind} volume"
        for name in used:
            volume(w, name)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def match_labels(obj: Obj) -> dict[str, str]:
    sel = obj["spec"]["selector"]
    assert set(sel) == {"matchLabels"}, f"{label(obj)}: only matchLabels is modelled"
    labels: dict[str, str] = sel["matchLabels"]
    return labels


def selected_workloads(selector: Mapping[str, str]) -> list[Obj]:
    return [w for w in of_kind(*WORKLOADS) if selects(selector, template_labels(w))]


def test_workload_selectors_match_their_own_pods_only() -> None:
    for w in of_kind(*WORKLOADS):
        sel = match_labels(w)
        assert selects(sel, template_labels(w)), f"{label(w)}: selector misses its template"
        assert selected_workloads(sel) == [w], f"{label(w)}: selector takes other pods"


def container_port(c: Obj, port: int | str, protocol: str = "TCP") -> Obj | None:
    """The container's port `port` (a number or a name) for `protocol`, if declared."""
    ports: list[Obj] = c.get("ports", [])
    for p in ports:
        same = p.get("name") == port or p["containerPort"] == port
        if same and p.get("protocol", "TCP") == protocol:
            return p
    return None


def test_services_select_pods_and_target_their_ports() -> None:
    for svc in of_kind("Service"):
        selector = svc["spec"]["selector"]
        pods = selected_workloads(selector)
        assert pods, f"{label(svc)} selects no pod"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            protocol = port.get("protocol", "TCP")
            for w in pods:
                hits = [c for c in containers(w, init=False) if container_port(c, target, protocol)]
                assert hits, f"{label(svc)} port {port['name']}: {label(w)} has no {target}"


def test_disruption_budgets() -> None:
    budgets = {b["metadata"]["name"]: b for b in of_kind("PodDisruptionBudget")}
    for b in budgets.values():
        (w,) = selected_workloads(match_labels(b))
        replicas = int(w["spec"].get("replicas", 1))
        spec = b["spec"]
        if "minAvailable" in spec:
            assert replicas // 2 + 1 <= spec["minAvailable"] < replicas, f"{label(b)}"
        else:
            assert 1 <= spec["maxUnavailable"] < replicas, f"{label(b)}: {replicas} replicas"
    etcd = named("StatefulSet", "etcd")
    assert budgets["etcd"]["spec"]["minAvailable"] == etcd["spec"]["replicas"] // 2 + 1
    hub, _ = process("hub")
    assert selected_workloads(match_labels(budgets["hubspoke-hub"])) == [hub]


# -- ports and probes -------------------------------------------------------------------------


def probes(c: Obj) -> dict[str, Obj]:
    return {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c}


def probe_port(probe: Obj) -> tuple[str, int | str]:
    """(grpc | httpGet | tcpSocket, port) of a probe; exec probes are not used here."""
    (kind,) = (k for k in ("grpc", "httpGet", "tcpSocket", "exec") if k in probe)
    assert kind != "exec", "an exec probe: not modelled by this test"
    port: int | str = probe[kind]["port"]
    return kind, port


def test_every_probe_targets_a_declared_port() -> None:
    for w, c in all_containers():
        for name, probe in probes(c).items():
            _, port = probe_port(probe)
            assert container_port(c, port), f"{label(w)}/{c['name']} {name}: port {port}"


def served(command: str, cfg: Any) -> dict[tuple[str, int], str]:
    """(protocol, port) -> listen address of what a process serves, from its configuration."""
    if command == "hub":
        out = {("TCP", cfg.role.grpc.port): cfg.role.grpc.listen}
        if HUB_SERVES_METRICS and cfg.metrics is not None:
            out[("TCP", cfg.metrics.port)] = f"{cfg.metrics.host}:{cfg.metrics.port}"
        return out
    out = {
        ("UDP", cfg.dhcp.port): f"0.0.0.0:{cfg.dhcp.port}",  # bound per interface
        ("TCP", listen(cfg.cluster.grpc_listen, "cluster.grpc_listen")[1]): cfg.cluster.grpc_listen,
    }
    if cfg.metrics is not None:
        out[("TCP", cfg.metrics.port)] = f"{cfg.metrics.host}:{cfg.metrics.port}"
    return out


def health_port(command: str, cfg: Any) -> int:
    if command == "hub":
        port: int = cfg.role.grpc.port
        return port
    return listen(cfg.cluster.grpc_listen, "cluster.grpc_listen")[1]


@pytest.mark.parametrize("command", ["hub", "spoke"])
def test_declared_ports_are_what_the_config_listens_on(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, c = process(command)
    cfg = parsed(w, c, monkeypatch)
    endpoints = served(command, cfg)
    declared = {(p.get("protocol", "TCP"), p["containerPort"]) for p in c.get("ports", [])}
    assert declared == set(endpoints), f"{label(w)} declares {declared}, serves {set(endpoints)}"
    for (_, port), address in endpoints.items():
        host, _ = listen(address, "listen")
        assert host in (*WILDCARDS, pod_ip(w)), f"port {port} listens on {host}: unreachable"


def test_spoke_probes_are_grpc_health_on_its_health_listen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, c = process("spoke")
    cfg = parsed(w, c, monkeypatch)
    found = probes(c)
    assert {"livenessProbe", "readinessProbe"} <= set(found)
    for name, probe in found.items():
        assert probe_port(probe) == ("grpc", health_port("spoke", cfg)), name
        assert probe["grpc"].get("service", "") == "", f"{name}: the health service is ''"
    # The hub's crash probe dials the advertised health address: the node's, not the DHCP
    # interface's, so that hub pods reach it.
    _, advertised = spokeconfig.health_listen(cfg, ipaddress.IPv4Address("203.0.113.9"))
    assert advertised == f"{pod_ip(w)}:{health_port('spoke', cfg)}"


def test_hub_probes_are_grpc_health_on_its_api_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hub process answers gRPC health on the API port: the elected one with the API, a
    standby with the health service alone (hub/health.py, hub/main.py)."""
    w, c = process("hub")
    cfg = parsed(w, c, monkeypatch)
    assert int(w["spec"]["replicas"]) >= 2
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert name in c, f"the hub has no {name}"
        kind, port = probe_port(c[name])
        assert kind == "grpc", name
        assert container_port(c, port) == container_port(c, cfg.role.grpc.port), name
        assert c[name]["grpc"].get("service", "") == "", f"{name}: the health service is ''"
    host, port = listen(cfg.role.grpc.advertise, "grpc.advertise")
    assert (host, port) == (pod_ip(w), cfg.role.grpc.port), "spokes dial the advertised address"


def test_cli_in_the_hub_container_reaches_the_api_service(monkeypatch: pytest.MonkeyPatch) -> None:
    w, c = process("hub")
    cfg = parsed(w, c, monkeypatch)
    env = container_env(w, c)
    assert "HUBSPOKE_TOKEN" in env, "the CLI reads the token from HUBSPOKE_TOKEN"
    assert env["HUBSPOKE_TOKEN"] in cfg.role.grpc.tokens
    for address in env["HUBSPOKE_HUB"].split(","):
        host, port = listen(address, "HUBSPOKE_HUB")
        svc = named("Service", host)
        assert selected_workloads(svc["spec"]["selector"]) == [w]
        (p,) = (p for p in svc["spec"]["ports"] if p["port"] == port)
        target = container_port(c, p["targetPort"])
        assert target is not None and target["containerPort"] == cfg.role.grpc.port
        # No ClusterIP: a connection would land on the standby half of the time; the CLI tries
        # each address of the headless name (hub/cli.resolve_each).
        assert svc["spec"].get("clusterIP") == "None"


# -- privileges ---------------------------------------------------------------------------


def test_spoke_runs_on_the_host_network_with_its_two_capabilities_only() -> None:
    w, c = process("spoke")
    spec = pod_spec(w)
    assert spec.get("hostNetwork") is True, "DHCP needs the L2 segment"
    assert spec.get("dnsPolicy") == "ClusterFirstWithHostNet", "etcd's names need cluster DNS"
    sec = security(w, c)
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == IMAGE_USER
    assert sec["capabilities"]["drop"] == ["ALL"]
    assert set(sec["capabilities"]["add"]) == set(entrypoint.SPOKE_CAPS)
    # file capabilities on the spoke interpreter are granted only without no_new_privs
    assert sec["allowPrivilegeEscalation"] is True
    surge = w["spec"].get("updateStrategy", {}).get("rollingUpdate", {}).get("maxSurge", 0)
    assert surge == 0, "two spokes of one node would share its name and port 67"


def test_hub_and_etcd_have_no_privilege() -> None:
    etcd = named("StatefulSet", "etcd")
    for w, c in [process("hub"), (etcd, containers(etcd)[0])]:
        sec = security(w, c)
        assert sec["runAsNonRoot"] is True and sec.get("runAsUser", 0) != 0, label(w)
        assert sec["allowPrivilegeEscalation"] is False, label(w)
        assert sec["readOnlyRootFilesystem"] is True, label(w)
        assert sec["capabilities"] == {"drop": ["ALL"]}, label(w)
        assert not pod_spec(w).get("hostNetwork"), label(w)
    w, c = process("hub")
    assert security(w, c)["runAsUser"] == IMAGE_USER


def test_spoke_journal_is_on_the_node_and_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    w, c = process("spoke")
    cfg = parsed(w, c, monkeypatch)
    journal = cfg.failover.journal_path(cfg.node)
    m = mounted(w, c, str(journal))
    assert m is not None, f"{journal} is on no volume: lost with the container"
    assert m.kind == "hostPath", f"{journal} is on a {m.kind} volume: lost with the pod"
    assert not m.read_only
    # the hostPath directory is created by root: an init container gives it to the spoke's user
    sec = security(w, c)
    owner = f"{sec['runAsUser']}:{sec['runAsGroup']}"
    mount = next(x for x in c["volumeMounts"] if x["name"] == m.name)
    inits = pod_spec(w).get("initContainers", [])
    chowns = [i for i in inits if i.get("command") == ["chown", owner, mount["mountPath"]]]
    assert len(chowns) == 1, f"no init container chowns {mount['mountPath']} to {owner}"
    (init,) = chowns
    assert any(x["name"] == m.name for x in init["volumeMounts"])
    isec = security(w, init)
    assert isec["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert isec["allowPrivilegeEscalation"] is False


# -- etcd ---------------------------------------------------------------------------------------


def etcd_flags(c: Obj) -> dict[str, str]:
    flags: dict[str, str] = {}
    for a in c["args"]:
        assert a.startswith("--") and "=" in a, f"etcd argument {a!r}: use --flag=value"
        k, v = a[2:].split("=", 1)
        assert k not in flags, f"--{k} given twice"
        flags[k] = v
    return flags


def image_env(dockerfile: Path) -> set[str]:
    """Names set by ENV in a Dockerfile (`ENV A=1 B=2` or `ENV A 1`)."""
    names: set[str] = set()
    if not dockerfile.is_file():
        return names
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "ENV" and len(words) > 1:
            if "=" in words[1]:
                names |= {w.split("=", 1)[0] for w in words[1:] if "=" in w}
            else:
                names.add(words[1])
    return names


def url_port(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"http://([^:/]+):(\d+)", url)
    assert m is not None, f"{url}: expected http://host:port"
    return m.group(1), int(m.group(2))


def test_etcd_statefulset_forms_the_cluster_the_configs_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sts = named("StatefulSet", "etcd")
    name, replicas = sts["metadata"]["name"], int(sts["spec"]["replicas"])
    assert replicas >= 3 and replicas % 2 == 1
    assert sts["spec"]["podManagementPolicy"] == "Parallel", "no member is ready alone"
    svc = named("Service", sts["spec"]["serviceName"])
    assert svc["spec"].get("clusterIP") == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert selected_workloads(svc["spec"]["selector"]) == [sts]
    (c,) = containers(sts)
    assert image_name(c) == ETCD_IMAGE and c["command"] == ["etcd"]
    env = container_env(sts, c)
    flags = etcd_flags(c)
    for a in c["args"]:
        for ref in k8s_refs(a):
            assert ref in env, f"etcd argument {a}: $({ref}) is not in its env"
    assert flags["name"] == "$(POD_NAME)" and env["POD_NAME"] == pod_name(sts)
    dns = svc["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    client, peer = ports["client"], ports["peer"]
    assert url_port(flags["listen-client-urls"]) == ("0.0.0.0", client)
    assert url_port(flags["listen-peer-urls"]) == ("0.0.0.0", peer)
    assert url_port(flags["listen-metrics-urls"]) == ("0.0.0.0", ports["metrics"])
    assert flags["advertise-client-urls"] == f"http://$(POD_NAME).{dns}:{client}"
    assert flags["initial-advertise-peer-urls"] == f"http://$(POD_NAME).{dns}:{peer}"
    members = [f"{name}-{i}" for i in range(replicas)]
    initial = dict(m.split("=", 1) for m in flags["initial-cluster"].split(","))
    assert initial == {m: f"http://{m}.{dns}:{peer}" for m in members}
    # etcd 3.4 exits when a flag and its ETCD_* variable are both set (the image sets some)
    preset = image_env(ETCD_DOCKERFILE) | {"ETCD_DATA_DIR"} | set(env)
    for flag in flags:
        variable = "ETCD_" + flag.upper().replace("-", "_")
        assert variable not in preset, f"--{flag} and ${variable} are both set"
    data_dir = flags.get("data-dir") or env["ETCD_DATA_DIR"]
    m = mounted(sts, c, data_dir)
    assert m is not None and m.kind == "persistentVolumeClaim", f"{data_dir}: not on a volume"
    # the hub and the spokes name every member, on the client port
    expected = tuple(f"{m}.{dns}:{client}" for m in members)
    for command in ("hub", "spoke"):
        cfg = parsed(*process(command), monkeypatch)
        assert cfg.etcd.client.endpoints == expected, command
    spoke, _ = process("spoke")
    assert pod_spec(spoke)["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_etcd_compacts_itself_and_has_an_explicit_quota_within_its_volume() -> None:
    """Auto-compaction on, `--quota-backend-bytes` set, and at most half the member's volume
    (the claim template of the data directory's volume): a defragmentation needs a copy."""
    sts = named("StatefulSet", "etcd")
    (c,) = containers(sts)
    flags = etcd_flags(c)
    env = container_env(sts, c)
    m = mounted(sts, c, flags.get("data-dir") or env["ETCD_DATA_DIR"])
    assert m is not None and m.kind == "persistentVolumeClaim"
    (claim,) = [t for t in sts["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == m.name]
    size = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
    check_space_flags(flags, where=label(sts), volume_bytes=size)
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for step in ("etcdctl compact", "etcdctl defrag", "etcdctl alarm disarm"):
        assert step in readme, f"deploy/k8s/README.md does not say what to do on NOSPACE: {step}"
