"""Checks the Kubernetes deployment in deploy/ offline; run through scripts/check-manifests.

Each kustomization (deploy/k8s/base and every deploy/k8s/overlays/*) is built with a real
kustomize (`kustomize build`, else `kubectl kustomize`; v5 or later) or, where there is none,
with the builtin renderer (scripts/kustomize_subset.py: the part of kustomize that deploy/ uses;
it refuses any other kustomization field), and what it renders is checked:
  - every core kind strictly against the Kubernetes OpenAPI schemas that the package
    kubernetes-validate ships (unknown fields are errors);
  - every ScaledObject against the openAPIV3Schema of KEDA's CRD in
    deploy/schemas/keda.sh_scaledobjects.yaml, with unknown fields made errors wherever the CRD
    does not keep unknown fields, and the CRD's CEL rules (minReplicaCount <= maxReplicaCount);
  - any other kind is refused: nothing here could check it.
The overlays must also keep the project's rules (`project_rules`): one Deployment,
ScaledObject and PodDisruptionBudget per service, each ScaledObject on its service's durable
consumer with string metadata, grace period longer than the drain timeout, probes on /healthz,
secrets from Secrets, and the NATS addresses that deploy/nats/values.yaml gives the servers.
deploy/nats/values.yaml itself is checked against the chart's own values
(deploy/schemas/nats-chart-values.yaml): every key it sets must exist there.

The origins of the two upstream files in deploy/schemas:
  - keda.sh_scaledobjects.yaml: kedacore/keda, config/crd/bases/keda.sh_scaledobjects.yaml at
    commit 64d83610d (2026-08-14); its schema is the one KEDA v2.20.0 to v2.20.2 ship (only the
    controller-gen annotation differs). Apache-2.0.
  - nats-chart-values.yaml: nats-io/k8s, helm/charts/nats/values.yaml at tag nats-2.14.2 (the
    values layout of the 1.x charts). Apache-2.0.

`--self-test` copies deploy/ to a temporary directory, breaks it in one way at a time and
asserts that each break is refused with a message naming the problem. It also builds the
fixtures of scripts/kustomize_subset_fixtures with the builtin renderer, checks that the
renderer refuses what it does not implement, and, where a real kustomize is installed, builds
every kustomization both ways and asserts that the two renderings hold the same objects.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from packaging.version import Version
from referencing import Registry, Resource

import kustomize_subset

ROOT = Path(__file__).resolve().parent.parent

# The Kubernetes version whose schemas the core kinds are checked against.
KUBE_VERSION = "1.32"
# The oldest kustomize that builds these kustomizations (labels.includeTemplates, replacements
# selecting list items by field).
MIN_KUSTOMIZE = Version("5.0.0")

IMAGE = "ghcr.io/ridesaga/ridesaga"
WORKER_COMPONENT = "worker"
# What RIDESAGA_DRAIN_TIMEOUT accepts (schemas/src/duration.rs: a unit is required, but for 0).
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|CREDS|DATABASE_URL")
# API groups whose kinds kubernetes-validate's schemas cover (core is the empty group).
KUBE_API_GROUPS = {
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "certificates.k8s.io",
}


class CheckError(Exception):
    """The check itself could not run (no kustomize, a file missing)."""


# --- the contract: services, consumers, stream -------------------------------------------------


@dataclass(frozen=True)
class Contract:
    services: tuple[str, ...]
    stream: str
    account: str
    provision_identity: str

    def consumer(self, service: str) -> str:
        return f"{service}-worker"


def read_contract(root: Path) -> Contract:
    """The services and the saga stream as schemas/src/streams.rs defines them."""
    path = root / "schemas/src/streams.rs"
    try:
        text = path.read_text()
    except OSError as err:
        raise CheckError(f"reading {path}: {err}") from err
    services = tuple(re.findall(r'Service::\w+\s*=>\s*"([a-z]+)"', text))
    stream = re.search(r'pub const SAGA_STREAM: &str = "([^"]+)"', text)
    consumer = re.search(r'format!\("\{\}-worker", self\.name\(\)\)', text)
    if not services or stream is None or consumer is None:
        raise CheckError(
            f"{path}: cannot find the service names, SAGA_STREAM or the consumer name format"
        )
    auth_path = root / "schemas/src/auth.rs"
    try:
        auth = auth_path.read_text()
    except OSError as err:
        raise CheckError(f"reading {auth_path}: {err}") from err
    account = re.search(r'pub const ACCOUNT: &str = "([^"]+)"', auth)
    provision = re.search(r'Identity::Provision => "([a-z-]+)"', auth)
    if account is None or provision is None:
        raise CheckError(f"{auth_path}: cannot find ACCOUNT or the provisioning identity's name")
    return Contract(services, stream.group(1), account.group(1), provision.group(1))


# --- kustomize -----------------------------------------------------------------------------


def kustomize_version(argv: list[str]) -> Version | None:
    """The kustomize version of `kustomize` or of the one built into `kubectl`."""
    if argv[0].endswith("kubectl"):
        cmd = [argv[0], "version", "--client", "-o", "json"]
    else:
        cmd = [argv[0], "version"]
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if argv[0].endswith("kubectl"):
        try:
            out = json.loads(out).get("kustomizeVersion", "")
        except json.JSONDecodeError:
            return None
    found = re.search(r"v?(\d+\.\d+\.\d+)", out)
    return Version(found.group(1)) if found else None


def find_kustomize() -> tuple[KustomizeRenderer | None, list[str]]:
    """A kustomize to build with, `kustomize build` or `kubectl kustomize` of v5 or later, and
    what was found."""
    seen = []
    for argv in (["kustomize", "build"], ["kubectl", "kustomize"]):
        path = shutil.which(argv[0])
        if path is None:
            continue
        version = kustomize_version([path])
        seen.append(f"{path}: kustomize {version or 'of unknown version'}")
        if version is not None and version >= MIN_KUSTOMIZE:
            description = f"{' '.join(argv)} (kustomize v{version})"
            return KustomizeRenderer([path, argv[1]], description), seen
    return None, seen


class BuildError(Exception):
    """A kustomization could not be built."""


Docs = list[dict[str, Any]]


class Renderer(Protocol):
    """Builds a kustomization into its objects; raises BuildError."""

    @property
    def description(self) -> str: ...

    def render(self, directory: Path) -> Docs: ...


@dataclass
class KustomizeRenderer:
    """Builds with a real kustomize."""

    argv: list[str]
    description: str

    def render(self, directory: Path) -> Docs:
        """The objects that `kustomize build DIRECTORY` renders."""
        result = subprocess.run(
            [*self.argv, str(directory)], check=False, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise BuildError(result.stderr.strip() or f"exit status {result.returncode}")
        try:
            docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
        except yaml.YAMLError as err:
            raise BuildError(f"output is not YAML: {err}") from err
        return docs


@dataclass
class BuiltinRenderer:
    """Builds with scripts/kustomize_subset.py, the subset of kustomize that deploy/ uses."""

    schemas: kustomize_subset.MergeSchemas
    description: str = "the builtin renderer (scripts/kustomize_subset.py)"

    def render(self, directory: Path) -> Docs:
        try:
            return kustomize_subset.render(directory, self.schemas)
        except kustomize_subset.RenderError as err:
            raise BuildError(str(err)) from err


def choose_renderer(mode: str, kube: KubeSchemas) -> tuple[Renderer, KustomizeRenderer | None]:
    """The renderer the check builds with (`mode`: auto, kustomize or builtin), and the real
    kustomize, if any."""
    kustomize, seen = find_kustomize()
    found = f" (found {'; '.join(seen)})" if seen else ""
    if mode == "kustomize" and kustomize is None:
        raise CheckError(
            f"no kustomize v{MIN_KUSTOMIZE} or later{found}: install kubectl or kustomize"
        )
    if mode == "builtin" or kustomize is None:
        builtin = BuiltinRenderer(kustomize_subset.MergeSchemas(kube.definitions))
        if mode == "auto":
            builtin.description += f", as there is no kustomize v{MIN_KUSTOMIZE} or later{found}"
        return builtin, kustomize
    return kustomize, kustomize


def object_key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = doc.get("metadata") or {}
    return (
        str(doc.get("kind", "")),
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        str(doc.get("apiVersion", "")),
    )


def render_difference(ours: Docs, theirs: Docs, our_name: str, their_name: str) -> str:
    """Empty when both renderings hold the same objects (in any order), else a unified diff."""
    ours = sorted(ours, key=object_key)
    theirs = sorted(theirs, key=object_key)
    if ours == theirs:
        return ""
    return "\n".join(
        difflib.unified_diff(
            yaml.safe_dump_all(theirs, sort_keys=True).splitlines(),
            yaml.safe_dump_all(ours, sort_keys=True).splitlines(),
            their_name,
            our_name,
            lineterm="",
        )
    )


@dataclass
class ComparingRenderer:
    """Builds with `primary` and also with `other`, recording where the two disagree."""

    primary: Renderer
    other: Renderer
    builds: int = 0
    disagreements: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return self.primary.description

    def render(self, directory: Path) -> Docs:
        self.builds += 1
        results: list[Docs | BuildError] = []
        for renderer in (self.primary, self.other):
            try:
                results.append(renderer.render(directory))
            except BuildError as err:
                results.append(err)
        ours, theirs = results
        if isinstance(ours, BuildError) or isinstance(theirs, BuildError):
            if not (isinstance(ours, BuildError) and isinstance(theirs, BuildError)):
                self.disagreements.append(
                    f"{directory}: {self.primary.description}: "
                    f"{ours if isinstance(ours, BuildError) else 'builds'}; "
                    f"{self.other.description}: "
                    f"{theirs if isinstance(theirs, BuildError) else 'builds'}"
                )
            if isinstance(ours, BuildError):
                raise ours
            return ours
        diff = render_difference(ours, theirs, self.primary.description, self.other.description)
        if diff:
            self.disagreements.append(f"{directory}: the renderings differ:\n{diff}")
        return ours


# --- schemas -------------------------------------------------------------------------------


def describe(doc: dict[str, Any]) -> str:
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{doc.get('kind', '?')}/{name}"


def json_path(path: Any) -> str:
    return ".".join(str(part) for part in path) or "(root)"


class KubeSchemas:
    """Strict OpenAPI schemas of the core kinds, from kubernetes-validate."""

    def __init__(self, version: str):
        self.version = version
        versions = [v for v in kv_utils.all_versions() if Version(v) <= Version(f"{version}.99")]
        if not versions:
            raise CheckError(f"kubernetes-validate has no schemas for Kubernetes {version}")
        self.schema_dir = f"kubernetes-json-schema/v{versions[-1]}-local-strict"
        contents = kv_utils.schema_contents(f"{self.schema_dir}/_definitions.json", version)
        self._definitions = Resource.from_contents(contents)
        # The definitions by name, for the builtin renderer's strategic merge.
        self.definitions: dict[str, Any] = contents["$defs"]

    def validate(self, doc: dict[str, Any]) -> list[str]:
        try:
            kubernetes_validate.validate(doc, self.version, strict=True)
        except kubernetes_validate.ValidationError as err:
            return [f"{json_path(err.path)}: {err.message}"]
        except kubernetes_validate.SchemaNotFoundError as err:
            return [f"no schema to check it against: {err.message}"]
        return []

    def validate_object_meta(self, meta: Any) -> list[str]:
        schema = kv_utils.schema_contents(
            f"{self.schema_dir}/objectmeta-meta-v1.json", self.version
        )
        registry = self._definitions @ (Resource.from_contents(schema) @ Registry())
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        return [
            f"metadata.{json_path(err.path)}: {err.message}"
            for err in sorted(validator.iter_errors(meta), key=lambda e: list(e.path))
        ]


def strict_schema(node: Any) -> Any:
    """The CRD schema with `additionalProperties: false` wherever it lists properties and
    neither keeps unknown fields nor describes the extra ones."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        out["additionalProperties"] = False
    return out


def cel_rules(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every x-kubernetes-validations rule of a schema, with the path of the object it checks."""
    if not isinstance(node, dict):
        return
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in (node.get("properties") or {}).items():
        yield from cel_rules(child, (*path, name))


def _min_le_max(spec: dict[str, Any]) -> bool:
    if "minReplicaCount" not in spec:
        return True
    return spec["minReplicaCount"] <= spec.get("maxReplicaCount", 100)


# The CEL rules of the CRD, each as Python; a rule not listed here fails the check, so a newer
# CRD's rules cannot pass unchecked.
CEL_RULES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) "
    "? self.maxReplicaCount : 100)": _min_le_max,
}


class KedaSchema:
    def __init__(self, crd_path: Path, kube: KubeSchemas):
        try:
            crd = yaml.safe_load(crd_path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise CheckError(f"reading {crd_path}: {err}") from err
        self.group = crd["spec"]["group"]
        self.kind = crd["spec"]["names"]["kind"]
        self.versions = {}
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = version["schema"]["openAPIV3Schema"]
            rules = list(cel_rules(schema))
            for path, rule in rules:
                if rule["rule"] not in CEL_RULES:
                    raise CheckError(
                        f"{crd_path}: the rule {rule['rule']!r} at {json_path(path)} has no "
                        "counterpart in CEL_RULES"
                    )
            self.versions[f"{self.group}/{version['name']}"] = (
                jsonschema.Draft202012Validator(strict_schema(schema)),
                rules,
            )
        self.kube = kube

    def validate(self, doc: dict[str, Any]) -> list[str]:
        entry = self.versions.get(doc.get("apiVersion", ""))
        if entry is None:
            return [f"apiVersion {doc.get('apiVersion')!r} is not served by the CRD"]
        validator, rules = entry
        problems = [
            f"{json_path(err.path)}: {err.message}"
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        ]
        problems += self.kube.validate_object_meta(doc.get("metadata"))
        if problems:
            return problems
        for path, rule in rules:
            target: Any = doc
            for part in path:
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(target, dict) and not CEL_RULES[rule["rule"]](target):
                problems.append(f"{json_path(path)}: {rule.get('message', rule['rule'])}")
        return problems


# --- the NATS chart's values ---------------------------------------------------------------


def unknown_values(ours: Any, chart: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Keys of `ours` that the chart's values do not have. Below a chart value that is empty
    ({}, [] or null: a free-form map, a list, an unset option) anything goes."""
    if not isinstance(chart, dict) or not chart:
        return
    if not isinstance(ours, dict):
        yield f"{json_path(path)}: the chart expects a map here, not {ours!r}"
        return
    for key, value in ours.items():
        if key not in chart:
            yield f"{json_path((*path, key))}: the chart has no such value"
        else:
            yield from unknown_values(value, chart[key], (*path, key))


@dataclass
class NatsRelease:
    """What deploy/nats/values.yaml gives the NATS servers, as the manifests must see them."""

    name: str
    replicas: int
    client_port: int
    monitor_port: int


def dig(data: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def check_nats_values(deploy: Path) -> tuple[list[str], NatsRelease | None]:
    values_path = deploy / "nats/values.yaml"
    chart_path = deploy / "schemas/nats-chart-values.yaml"
    try:
        ours = yaml.safe_load(values_path.read_text()) or {}
        chart = yaml.safe_load(chart_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        return [f"reading the NATS values: {err}"], None
    where = "deploy/nats/values.yaml"
    problems = [f"{where}: {p}" for p in unknown_values(ours, chart)]

    def setting(*keys: str) -> Any:
        return dig(ours, *keys, default=dig(chart, *keys))

    replicas = setting("config", "cluster", "replicas")
    expected = [
        (("config", "cluster", "enabled"), True),
        (("config", "jetstream", "enabled"), True),
        (("config", "jetstream", "fileStore", "enabled"), True),
        (("config", "jetstream", "fileStore", "pvc", "enabled"), True),
        (("config", "monitor", "enabled"), True),
    ]
    for keys, want in expected:
        if setting(*keys) != want:
            problems.append(f"{where}: {json_path(keys)} must be {want}")
    if not isinstance(replicas, int) or replicas < 3 or replicas % 2 == 0:
        problems.append(
            f"{where}: config.cluster.replicas must be odd and at least 3 (R3 streams), "
            f"not {replicas!r}"
        )
    if not setting("config", "jetstream", "fileStore", "pvc", "size"):
        problems.append(f"{where}: config.jetstream.fileStore.pvc.size must be set")
    if problems:
        return problems, None
    release = NatsRelease(
        name=ours.get("fullnameOverride") or "nats",
        replicas=replicas,
        client_port=int(setting("config", "nats", "port")),
        monitor_port=int(setting("config", "monitor", "port")),
    )
    return problems, release


# --- project rules -------------------------------------------------------------------------


def parse_duration(text: str) -> float | None:
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text)
    if found is None:
        return None
    number, unit = float(found.group(1)), found.group(2)
    if unit == "" and number == 0:
        return 0.0
    if unit not in DURATION_UNITS:
        return None
    return number * DURATION_UNITS[unit]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry.get("name"): entry for entry in container.get("env") or []}


def labels_match(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def check_nats_url(url: Any, release: NatsRelease) -> list[str]:
    """NATS_URL lists every server of the release: nats://<name>-N.<name>-headless[...]:port."""
    if not isinstance(url, str):
        return [f"NATS_URL must be set to the servers' URLs, not {url!r}"]
    seen = set()
    problems = []
    for part in url.split(","):
        found = re.fullmatch(r"nats://([a-z0-9-]+)\.([a-z0-9.-]+):(\d+)", part.strip())
        if (
            found is None
            or found.group(2).split(".")[0] != f"{release.name}-headless"
            or int(found.group(3)) != release.client_port
        ):
            problems.append(
                f"NATS_URL: {part.strip()!r} is not nats://{release.name}-N."
                f"{release.name}-headless:{release.client_port}"
            )
            continue
        seen.add(found.group(1))
    wanted = {f"{release.name}-{i}" for i in range(release.replicas)}
    if not problems and seen != wanted:
        problems.append(f"NATS_URL names {sorted(seen)}, but the NATS release has {sorted(wanted)}")
    return problems


def check_pod_security(kind_name: str, pod: dict[str, Any]) -> list[str]:
    problems = []
    pod_sc = pod.get("securityContext") or {}
    if pod_sc.get("runAsNonRoot") is not True:
        problems.append(
            f"{kind_name}: spec.template.spec.securityContext.runAsNonRoot must be true"
        )
    for container in pod.get("containers") or []:
        sc = container.get("securityContext") or {}
        where = f"{kind_name}: container {container.get('name')}: securityContext"
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}.readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}.allowPrivilegeEscalation must be false")
        if "ALL" not in (dig(sc, "capabilities", "drop") or []):
            problems.append(f"{where}.capabilities.drop must include ALL")
        seccomp = dig(sc, "seccompProfile", "type") or dig(pod_sc, "seccompProfile", "type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: a RuntimeDefault seccompProfile is required")
    return problems


def check_secrets_in_env(kind_name: str, container: dict[str, Any]) -> list[str]:
    problems = []
    for name, entry in env_of(container).items():
        if SECRET_ENV.search(name or "") and "value" in entry:
            problems.append(
                f"{kind_name}: env {name} has a literal value; it must come from a Secret "
                "(valueFrom.secretKeyRef)"
            )
    return problems


# The key of a Secret that holds a NATS identity's seed (`ridectl auth init`'s <identity>.nk).
NKEY_SECRET_KEY = "nats-nkey"


def check_nats_identity(
    kind_name: str, pod: dict[str, Any], container: dict[str, Any], secret: str
) -> list[str]:
    """The container's NATS identity: NATS_NKEY_FILE names a file of a volume of the Secret
    `secret` (its key nats-nkey), mounted read-only, readable by the pod's group and nobody
    else; no password or credentials in the environment."""
    env = env_of(container)
    problems = [
        f"{kind_name}: {var} is set; the identity is an NKEY seed in a file (NATS_NKEY_FILE)"
        for var in ("NATS_USER", "NATS_PASSWORD", "NATS_CREDS")
        if var in env
    ]
    path = (env.get("NATS_NKEY_FILE") or {}).get("value")
    if not isinstance(path, str) or not path.startswith("/"):
        return problems + [
            f"{kind_name}: NATS_NKEY_FILE must name the file of the identity's seed, not {path!r}"
        ]
    mount = next(
        (
            m
            for m in container.get("volumeMounts") or []
            if path.startswith(str(m.get("mountPath", "")).rstrip("/") + "/")
        ),
        None,
    )
    if mount is None:
        return problems + [f"{kind_name}: NATS_NKEY_FILE {path} is in no mounted volume"]
    if mount.get("readOnly") is not True:
        problems.append(f"{kind_name}: the volume of NATS_NKEY_FILE must be mounted readOnly")
    volume = next((v for v in pod.get("volumes") or [] if v.get("name") == mount.get("name")), {})
    source = volume.get("secret") or {}
    if source.get("secretName") != secret or source.get("optional"):
        return problems + [
            f"{kind_name}: NATS_NKEY_FILE must come from the Secret {secret} (volume "
            f"{mount.get('name')}, not optional), not {source.get('secretName')!r}"
        ]
    relative = path[len(str(mount["mountPath"]).rstrip("/")) + 1 :]
    item = next((i for i in source.get("items") or [] if i.get("path") == relative), None)
    if item is None or item.get("key") != NKEY_SECRET_KEY:
        return problems + [
            f"{kind_name}: NATS_NKEY_FILE {path} must be the Secret's key {NKEY_SECRET_KEY} "
            f"(items: key {NKEY_SECRET_KEY}, path {relative})"
        ]
    mode = item.get("mode", source.get("defaultMode", 0o644))
    if not isinstance(mode, int) or mode & 0o007:
        problems.append(
            f"{kind_name}: the seed's file mode {mode!r} lets anyone read it; use 0440 "
            "(defaultMode: 288) and the pod's fsGroup"
        )
    elif not mode & 0o040 or dig(pod, "securityContext", "fsGroup") is None:
        problems.append(
            f"{kind_name}: the seed must be readable by the pod's group (mode 0440) and the pod "
            "needs securityContext.fsGroup: the container does not run as the file's owner"
        )
    return problems


def check_image(kind_name: str, container: dict[str, Any]) -> list[str]:
    image = container.get("image", "")
    found = re.fullmatch(re.escape(IMAGE) + r"(?::([\w][\w.-]*))?(?:@sha256:[0-9a-f]{64})?", image)
    if found is None:
        return [f"{kind_name}: image {image!r} is not {IMAGE}:<tag>"]
    if "@sha256:" not in image and found.group(1) in (None, "latest"):
        return [f"{kind_name}: image {image!r} needs a fixed tag (the overlay's images:)"]
    return []


def check_deployment(
    doc: dict[str, Any], contract: Contract, release: NatsRelease | None
) -> tuple[str | None, list[str]]:
    """Checks a worker Deployment; returns its service and the problems."""
    kind_name = describe(doc)
    name = doc["metadata"]["name"]
    service = name.removesuffix("-worker")
    problems: list[str] = []
    if not name.endswith("-worker") or service not in contract.services:
        names = [contract.consumer(s) for s in contract.services]
        return None, [f"{kind_name}: a worker Deployment is named <service>-worker, one of {names}"]
    spec = doc.get("spec") or {}
    pod = dig(spec, "template", "spec") or {}
    if "replicas" in spec:
        problems.append(
            f"{kind_name}: spec.replicas is set; the ScaledObject owns the replica count"
        )
    containers = pod.get("containers") or []
    if len(containers) != 1:
        return service, problems + [f"{kind_name}: one container expected, {len(containers)} found"]
    container = containers[0]
    problems += check_image(kind_name, container)
    if container.get("command") != [f"/usr/local/bin/{service}-worker"]:
        problems.append(
            f"{kind_name}: command must be [/usr/local/bin/{service}-worker], "
            f"not {container.get('command')}"
        )
    env = env_of(container)

    def literal(var: str) -> Any:
        return (env.get(var) or {}).get("value")

    # Drain before the kubelet's SIGKILL.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    drain_text = literal("RIDESAGA_DRAIN_TIMEOUT")
    drain = parse_duration(drain_text) if isinstance(drain_text, str) else None
    if drain is None:
        problems.append(
            f"{kind_name}: RIDESAGA_DRAIN_TIMEOUT must be set to a duration, not {drain_text!r}"
        )
    elif not grace > drain:
        problems.append(
            f"{kind_name}: terminationGracePeriodSeconds {grace} must be longer than "
            f"RIDESAGA_DRAIN_TIMEOUT {drain_text}"
        )

    # HTTP: /healthz and /metrics on the named port `http`.
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    http_port = ports.get("http")
    if http_port is None:
        problems.append(f"{kind_name}: the container needs a port named http")
    addr = literal("RIDESAGA_HTTP_ADDR")
    if addr != f"0.0.0.0:{http_port}":
        problems.append(
            f"{kind_name}: RIDESAGA_HTTP_ADDR must be 0.0.0.0:{http_port} (the http port), "
            f"not {addr!r}"
        )
    for probe in ("livenessProbe", "readinessProbe"):
        get = dig(container, probe, "httpGet") or {}
        if get.get("path") != "/healthz" or get.get("port") not in ("http", http_port):
            problems.append(
                f"{kind_name}: {probe} must be an httpGet of /healthz on port http, not {get}"
            )
    annotations = dig(spec, "template", "metadata", "annotations") or {}
    wanted = {
        "prometheus.io/scrape": "true",
        "prometheus.io/path": "/metrics",
        "prometheus.io/port": str(http_port),
    }
    for key, value in wanted.items():
        if annotations.get(key) != value:
            problems.append(
                f"{kind_name}: pod annotation {key} must be {value!r}, not {annotations.get(key)!r}"
            )

    if literal("RIDESAGA_LOG_FORMAT") != "json":
        problems.append(f"{kind_name}: RIDESAGA_LOG_FORMAT must be json")
    if dig(env.get("RIDESAGA_INSTANCE") or {}, "valueFrom", "fieldRef", "fieldPath") != (
        "metadata.name"
    ):
        problems.append(
            f"{kind_name}: RIDESAGA_INSTANCE must be the pod's name (fieldRef metadata.name): "
            "replicas need distinct names and every container's pid is 1"
        )
    database = dig(env.get("DATABASE_URL") or {}, "valueFrom", "secretKeyRef")
    if not database or database.get("optional"):
        problems.append(
            f"{kind_name}: DATABASE_URL must come from a Secret (valueFrom.secretKeyRef, "
            "not optional)"
        )
    problems += check_nats_identity(kind_name, pod, container, name)
    if "NATS_INBOX_PREFIX" in env:
        problems.append(
            f"{kind_name}: NATS_INBOX_PREFIX is set; a worker's is _INBOX_{name}, the only one "
            "its identity may receive replies on"
        )
    problems += check_secrets_in_env(kind_name, container)
    if release is not None:
        problems += [f"{kind_name}: {p}" for p in check_nats_url(literal("NATS_URL"), release)]

    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if not dig(container, "resources", kind, resource):
                problems.append(f"{kind_name}: resources.{kind}.{resource} must be set")
    problems += check_pod_security(kind_name, pod)
    return service, problems


def check_scaled_object(
    doc: dict[str, Any], contract: Contract, release: NatsRelease | None
) -> tuple[str | None, list[str]]:
    """Checks a ScaledObject; returns the Deployment it scales and the problems."""
    kind_name = describe(doc)
    spec = doc.get("spec") or {}
    problems: list[str] = []
    target = dig(spec, "scaleTargetRef", "name")
    service = target.removesuffix("-worker") if isinstance(target, str) else None
    if service not in contract.services:
        return None, [f"{kind_name}: scaleTargetRef.name {target!r} is not a worker Deployment"]
    minimum = spec.get("minReplicaCount", 0)
    maximum = spec.get("maxReplicaCount", 100)
    if minimum < 1:
        problems.append(
            f"{kind_name}: minReplicaCount must be at least 1: every service is on the path "
            "to a confirmed ride"
        )
    for key in ("pollingInterval", "cooldownPeriod"):
        if key not in spec:
            problems.append(f"{kind_name}: {key} must be set")
    fallback = spec.get("fallback")
    if not fallback:
        problems.append(f"{kind_name}: a fallback (failureThreshold, replicas) is required")
    elif not minimum <= fallback.get("replicas", 0) <= maximum:
        problems.append(
            f"{kind_name}: fallback.replicas {fallback.get('replicas')} must lie between "
            f"minReplicaCount {minimum} and maxReplicaCount {maximum}"
        )
    scale_down = dig(spec, "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown")
    if (
        not scale_down
        or scale_down.get("stabilizationWindowSeconds", 0) < 300
        or not any(p.get("type") == "Pods" for p in scale_down.get("policies") or [])
    ):
        problems.append(
            f"{kind_name}: advanced.horizontalPodAutoscalerConfig.behavior.scaleDown needs "
            "stabilizationWindowSeconds of at least 300 and a Pods policy"
        )

    triggers = spec.get("triggers") or []
    if len(triggers) != 1 or triggers[0].get("type") != "nats-jetstream":
        return service, problems + [f"{kind_name}: one trigger of type nats-jetstream expected"]
    metadata = triggers[0].get("metadata") or {}
    where = f"{kind_name}: spec.triggers.0.metadata"
    for key, value in metadata.items():
        if not isinstance(value, str):
            problems.append(
                f"{where}.{key}: {value!r} must be a quoted string, not {type(value).__name__}"
            )
    consumer = contract.consumer(service)
    if metadata.get("consumer") != consumer:
        problems.append(
            f"{where}.consumer {metadata.get('consumer')!r} is not the durable consumer of "
            f"{target}: {consumer!r}"
        )
    if metadata.get("stream") != contract.stream:
        problems.append(f"{where}.stream {metadata.get('stream')!r} must be {contract.stream!r}")
    if metadata.get("account") != contract.account:
        problems.append(
            f"{where}.account {metadata.get('account')!r} must be {contract.account!r}, the "
            "account of the streams"
        )
    for key, least in (("lagThreshold", 1), ("activationLagThreshold", 0)):
        value = metadata.get(key)
        if not (isinstance(value, str) and re.fullmatch(r"\d+", value) and int(value) >= least):
            problems.append(f"{where}.{key} must be a whole number of at least {least} as a string")
    if metadata.get("useHttps", "false") not in ("true", "false"):
        problems.append(f'{where}.useHttps must be "true" or "false"')
    endpoint = metadata.get("natsServerMonitoringEndpoint")
    if release is not None:
        found = re.fullmatch(r"([a-z0-9-]+)(\.[a-z0-9.-]+)?:(\d+)", str(endpoint))
        if (
            found is None
            or found.group(1) != f"{release.name}-headless"
            or int(found.group(3)) != release.monitor_port
        ):
            problems.append(
                f"{where}.natsServerMonitoringEndpoint {endpoint!r} must be the headless service "
                f"and monitoring port, {release.name}-headless.<namespace>.svc.cluster.local:"
                f"{release.monitor_port} (no scheme)"
            )
    return service, problems


def check_pdb(doc: dict[str, Any], min_replicas: int) -> list[str]:
    kind_name = describe(doc)
    spec = doc.get("spec") or {}
    if "maxUnavailable" in spec:
        value = spec["maxUnavailable"]
        if value in (0, "0%"):
            return [
                f"{kind_name}: maxUnavailable 0 refuses every eviction; a node drain would hang"
            ]
        return []
    value = spec.get("minAvailable")
    if isinstance(value, int) and value >= min_replicas:
        return [
            (
                f"{kind_name}: minAvailable {value} at minReplicaCount {min_replicas} refuses "
                "every eviction, so a node drain would hang; use maxUnavailable 1"
            )
        ]
    if isinstance(value, str):
        return [f"{kind_name}: use maxUnavailable 1, not minAvailable {value}"]
    return []


def check_job(doc: dict[str, Any], contract: Contract, release: NatsRelease | None) -> list[str]:
    kind_name = describe(doc)
    spec = doc.get("spec") or {}
    problems = []
    for key in ("backoffLimit", "ttlSecondsAfterFinished"):
        if key not in spec:
            problems.append(f"{kind_name}: spec.{key} must be set")
    pod = dig(spec, "template", "spec") or {}
    containers = pod.get("containers") or []
    for container in containers:
        problems += check_image(kind_name, container)
        problems += check_secrets_in_env(kind_name, container)
        command = [*container.get("command", []), *container.get("args", [])]
        if "provision" not in command:
            continue
        replicas = None
        if "--replicas" in command[:-1]:
            replicas = command[command.index("--replicas") + 1]
        if release is not None and replicas != str(release.replicas):
            problems.append(
                f"{kind_name}: ridectl provision needs --replicas {release.replicas} (the NATS "
                f"cluster's size), not {replicas}"
            )
        if release is not None:
            url = env_of(container).get("NATS_URL", {}).get("value")
            problems += [f"{kind_name}: {p}" for p in check_nats_url(url, release)]
        identity = contract.provision_identity
        problems += check_nats_identity(kind_name, pod, container, identity)
        prefix = env_of(container).get("NATS_INBOX_PREFIX", {}).get("value")
        if prefix != f"_INBOX_{identity}":
            problems.append(
                f"{kind_name}: NATS_INBOX_PREFIX must be _INBOX_{identity}, where {identity} "
                f"receives replies, not {prefix!r}"
            )
    if not any("provision" in [*c.get("command", []), *c.get("args", [])] for c in containers):
        problems.append(f"{kind_name}: expected a container running `ridectl provision`")
    problems += check_pod_security(kind_name, pod)
    return problems


def project_rules(
    docs: list[dict[str, Any]], contract: Contract, release: NatsRelease | None
) -> list[str]:
    problems: list[str] = []
    deployments: dict[str, dict[str, Any]] = {}
    scaled: dict[str, dict[str, Any]] = {}
    pdbs = []
    jobs = 0
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Deployment":
            component = dig(doc, "metadata", "labels", "app.kubernetes.io/component")
            if component != WORKER_COMPONENT:
                problems.append(f"{describe(doc)}: not labelled app.kubernetes.io/component=worker")
                continue
            service, found = check_deployment(doc, contract, release)
            problems += found
            if service is not None:
                deployments[service] = doc
        elif kind == "ScaledObject":
            service, found = check_scaled_object(doc, contract, release)
            problems += found
            if service is not None:
                if service in scaled:
                    problems.append(f"{describe(doc)}: a second ScaledObject for {service}")
                scaled[service] = doc
        elif kind == "PodDisruptionBudget":
            pdbs.append(doc)
        elif kind == "Job":
            jobs += 1
            problems += check_job(doc, contract, release)

    for service in contract.services:
        if service not in deployments:
            problems.append(f"no Deployment {contract.consumer(service)}")
        if service not in scaled:
            problems.append(f"no ScaledObject for {contract.consumer(service)}")
    accounts = {
        dig(doc, "spec", "triggers", default=[{}])[0].get("metadata", {}).get("account")
        for doc in scaled.values()
    }
    if len(accounts) > 1:
        problems.append(
            f"the ScaledObjects name different NATS accounts: {sorted(map(str, accounts))}"
        )
    urls = {
        env_of(dig(doc, "spec", "template", "spec", "containers")[0])
        .get("NATS_URL", {})
        .get("value")
        for doc in deployments.values()
        if dig(doc, "spec", "template", "spec", "containers")
    }
    if len(urls) > 1:
        problems.append(f"the workers have different NATS_URLs: {sorted(map(str, urls))}")
    for service, deployment in deployments.items():
        pod_labels = dig(deployment, "spec", "template", "metadata", "labels") or {}
        covering = [
            pdb for pdb in pdbs if labels_match(dig(pdb, "spec", "selector") or {}, pod_labels)
        ]
        if len(covering) != 1:
            problems.append(
                f"{describe(deployment)}: {len(covering)} PodDisruptionBudgets select its pods; "
                "one expected"
            )
            continue
        min_replicas = dig(scaled.get(service) or {}, "spec", "minReplicaCount", default=0)
        problems += check_pdb(covering[0], min_replicas)
    if jobs != 1:
        problems.append(f"{jobs} Jobs; one (ridectl provision) expected")
    return problems


# --- the whole check -----------------------------------------------------------------------


@dataclass
class Checker:
    renderer: Renderer
    kube: KubeSchemas
    contract: Contract

    def check(self, deploy: Path) -> tuple[list[str], list[str]]:
        """Checks deploy/ (or a copy); returns (problems, what was checked)."""
        problems: list[str] = []
        checked: list[str] = []
        values_problems, release = check_nats_values(deploy)
        problems += values_problems
        checked.append("deploy/nats/values.yaml")
        keda = KedaSchema(deploy / "schemas/keda.sh_scaledobjects.yaml", self.kube)

        k8s = deploy / "k8s"
        overlays = sorted(
            p for p in (k8s / "overlays").glob("*") if (p / "kustomization.yaml").exists()
        )
        if not overlays:
            problems.append(f"no overlay with a kustomization.yaml in {k8s / 'overlays'}")
        for directory in [k8s / "base", *overlays]:
            label = str(directory.relative_to(deploy.parent))
            try:
                docs = self.renderer.render(directory)
            except BuildError as err:
                problems.append(f"{label}: the build failed: {err}")
                continue
            schema_problems: list[str] = []
            for doc in docs:
                api = str(doc.get("apiVersion", ""))
                group = api.split("/")[0] if "/" in api else ""
                if group == keda.group and doc.get("kind") == keda.kind:
                    found = keda.validate(doc)
                elif group == "" or group in KUBE_API_GROUPS:
                    found = self.kube.validate(doc)
                else:
                    found = [f"no schema for {api} {doc.get('kind')}: nothing here can check it"]
                schema_problems += [f"{label}: {describe(doc)}: {p}" for p in found]
            problems += schema_problems
            # The rules read fields as the schemas describe them, so they wait for valid objects.
            if directory.parent.name == "overlays":
                if schema_problems:
                    problems.append(f"{label}: project rules not checked: schema problems first")
                else:
                    rules = project_rules(docs, self.contract, release)
                    problems += [f"{label}: {p}" for p in rules]
            checked.append(f"{label} ({len(docs)} objects)")
        return problems, checked


# --- self-test -----------------------------------------------------------------------------


@dataclass
class Break:
    """One way to break the tree: replace `old` (found exactly once) by `new` in `file`, and
    expect a problem matching `expect`."""

    what: str
    file: str
    old: str
    new: str
    expect: str


BREAKS = [
    Break(
        "an unknown field in a Deployment",
        "k8s/base/ride-worker.yaml",
        "        - name: worker\n",
        "        - name: worker\n          imagePullPolicyy: Always\n",
        r"Deployment/ride-worker: .*'imagePullPolicyy' was unexpected",
    ),
    Break(
        "an unknown field in a ScaledObject",
        "k8s/base/ride-worker.yaml",
        "  pollingInterval: 15\n",
        "  pollingIntervall: 15\n",
        r"ScaledObject/ride-worker: .*'pollingIntervall' was unexpected",
    ),
    Break(
        "minReplicaCount above maxReplicaCount",
        "k8s/base/payment-worker.yaml",
        "  minReplicaCount: 1\n",
        "  minReplicaCount: 9\n",
        r"ScaledObject/payment-worker: spec: minReplicaCount must be less than or equal to "
        r"maxReplicaCount",
    ),
    Break(
        "an unquoted number in a ScaledObject's metadata",
        "k8s/base/fraud-worker.yaml",
        '        lagThreshold: "128"\n',
        "        lagThreshold: 128\n",
        r"ScaledObject/fraud-worker: .*lagThreshold.*128 is not of type 'string'",
    ),
    Break(
        "a consumer that is not the service's durable",
        "k8s/base/driver-worker.yaml",
        '        consumer: "driver-worker"\n',
        '        consumer: "drivers-worker"\n',
        r"ScaledObject/driver-worker: .*consumer 'drivers-worker' is not the durable consumer",
    ),
    Break(
        "a service that may scale to zero",
        "k8s/base/notification-worker.yaml",
        "  minReplicaCount: 1\n",
        "  minReplicaCount: 0\n",
        r"ScaledObject/notification-worker: minReplicaCount must be at least 1",
    ),
    Break(
        "a drain timeout as long as the grace period",
        "k8s/base/worker-defaults.yaml",
        "- name: RIDESAGA_DRAIN_TIMEOUT\n              value: 20s\n",
        "- name: RIDESAGA_DRAIN_TIMEOUT\n              value: 45s\n",
        r"terminationGracePeriodSeconds 45 must be longer than RIDESAGA_DRAIN_TIMEOUT 45s",
    ),
    Break(
        "a readiness probe off /healthz",
        "k8s/base/worker-defaults.yaml",
        "readinessProbe:\n            httpGet:\n              path: /healthz\n",
        "readinessProbe:\n            httpGet:\n              path: /health\n",
        r"readinessProbe must be an httpGet of /healthz",
    ),
    Break(
        "a database URL written into the manifest",
        "k8s/base/ride-worker.yaml",
        "            - name: DATABASE_URL\n              valueFrom:\n                secretKeyRef:\n"
        "                  name: ride-worker\n                  key: database-url\n",
        "            - name: DATABASE_URL\n              value: postgres://ride:pw@db/ride\n",
        r"Deployment/ride-worker: env DATABASE_URL has a literal value",
    ),
    Break(
        "a PodDisruptionBudget that blocks node drains",
        "k8s/base/ride-worker.yaml",
        "  maxUnavailable: 1\n",
        "  minAvailable: 1\n",
        r"PodDisruptionBudget/ride-worker: minAvailable 1 .* node drain would hang",
    ),
    Break(
        "a provision Job without the cluster's replicas",
        "k8s/base/provision-job.yaml",
        '"--replicas", "3"',
        '"--replicas", "1"',
        r"Job/ridesaga-provision: ridectl provision needs --replicas 3",
    ),
    Break(
        "a NATS_URL missing a server",
        "k8s/overlays/example/nats-settings.yaml",
        ",nats://nats-2.nats-headless:4222\n",
        "\n",
        r"Deployment/ride-worker: NATS_URL names .*nats-2",
    ),
    Break(
        "a worker with another service's NATS identity",
        "k8s/base/payment-worker.yaml",
        "            secretName: payment-worker\n",
        "            secretName: ride-worker\n",
        r"Deployment/payment-worker: NATS_NKEY_FILE must come from the Secret payment-worker",
    ),
    Break(
        "a seed anyone in the pod can read",
        "k8s/base/driver-worker.yaml",
        "            defaultMode: 288 #",
        "            defaultMode: 420 #",
        r"Deployment/driver-worker: the seed's file mode 420 lets anyone read it",
    ),
    Break(
        "a worker with a password instead of its seed",
        "k8s/base/fraud-worker.yaml",
        "                  key: database-url\n",
        "                  key: database-url\n            - name: NATS_PASSWORD\n"
        "              valueFrom:\n                secretKeyRef:\n"
        "                  name: fraud-worker\n                  key: nats-password\n",
        r"Deployment/fraud-worker: NATS_PASSWORD is set; the identity is an NKEY seed",
    ),
    Break(
        "a provision Job without its identity's seed",
        "k8s/base/provision-job.yaml",
        "              value: /etc/ridesaga/nats/nkey\n",
        "              value: /etc/ridesaga/other/nkey\n",
        r"Job/ridesaga-provision: NATS_NKEY_FILE /etc/ridesaga/other/nkey is in no mounted",
    ),
    Break(
        "ScaledObjects on the global account",
        "k8s/overlays/example/nats-settings.yaml",
        "  account: RIDESAGA\n",
        "  account: $G\n",
        r"ScaledObject/ride-worker: .*account '\$G' must be 'RIDESAGA'",
    ),
    Break(
        "a key the NATS chart does not have",
        "nats/values.yaml",
        "    fileStore:\n",
        "    fileStorage:\n",
        r"deploy/nats/values.yaml: config\.jetstream\.fileStorage: the chart has no such value",
    ),
]


# Fixtures that exercise the builtin renderer beyond deploy/: `base` and `overlay`.
FIXTURES = ROOT / "scripts/kustomize_subset_fixtures"

# What the builtin renderer must refuse rather than render, as breaks of the fixtures (the
# overlay is built).
RENDERER_REFUSALS = [
    Break(
        "a kustomization field it does not implement",
        "overlay/kustomization.yaml",
        "namespace: fx\n",
        "namespace: fx\nnamePrefix: x-\n",
        r"the kustomization: namePrefix not implemented by the builtin renderer",
    ),
    Break(
        "a generator",
        "overlay/kustomization.yaml",
        "namespace: fx\n",
        "namespace: fx\nconfigMapGenerator:\n  - name: generated\n    literals: [a=b]\n",
        r"configMapGenerator not implemented by the builtin renderer",
    ),
    Break(
        "a JSON 6902 patch",
        "base/kustomization.yaml",
        "  - path: probes.yaml\n",
        "  - target:\n      kind: Service\n    patch: |-\n      - op: add\n"
        "        path: /metadata/annotations\n        value: {a: b}\n  - path: probes.yaml\n",
        r"JSON 6902 patches are not supported",
    ),
    Break(
        "a $patch directive",
        "base/probes.yaml",
        "        - name: app\n",
        "        - name: app\n          $patch: replace\n",
        r"the strategic-merge directive '\$patch' is not supported",
    ),
    Break(
        "patch options",
        "base/kustomization.yaml",
        "  - path: probes.yaml\n",
        "  - path: probes.yaml\n    options:\n      allowNameChange: true\n",
        r"a patch: options not implemented",
    ),
    Break(
        "a set-based label selector",
        "base/kustomization.yaml",
        'labelSelector: "role=web,!legacy"',
        'labelSelector: "role in (web)"',
        r"set-based selector 'role in \(web\)' is not supported",
    ),
    Break(
        "labels with field specs of their own",
        "base/kustomization.yaml",
        '      plain: "yes"\n',
        '      plain: "yes"\n    fields:\n      - path: spec/labels\n',
        r"a labels entry: fields not implemented",
    ),
    Break(
        "an image tag suffix",
        "base/kustomization.yaml",
        '    newTag: "1.36"\n',
        '    newTag: "1.36"\n    tagSuffix: -debug\n',
        r"an images entry: tagSuffix not implemented",
    ),
    Break(
        "replacement options",
        "overlay/kustomization.yaml",
        "          - spec.config\n",
        "          - spec.config\n        options:\n          create: true\n",
        r"a target: options not implemented",
    ),
    Break(
        "a regular expression in a field path",
        "overlay/kustomization.yaml",
        "[name=URL]",
        "[name=U.L]",
        r"the field path item \[name=U\.L\] is not supported",
    ),
    Break(
        "a remote resource",
        "overlay/kustomization.yaml",
        "  - ../base\n",
        "  - ../base\n  - https://github.com/example/repo//deploy?ref=v1\n",
        r"remote resource .* is not supported",
    ),
    Break(
        "a patch of a kind outside kustomize's schema",
        "overlay/kustomization.yaml",
        "namespace: fx\n",
        "namespace: fx\npatches:\n  - target:\n      kind: ClusterRole\n    patch: |-\n"
        "      apiVersion: rbac.authorization.k8s.io/v1\n      kind: ClusterRole\n"
        "      metadata:\n        name: reader\n      rules: []\n",
        r"patching ClusterRole \(rbac.authorization.k8s.io/v1\) is not supported",
    ),
    Break(
        "a namespace over a RoleBinding",
        "overlay/cluster.yaml",
        "    verbs: [get]\n",
        "    verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n"
        "metadata:\n  name: readers\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n"
        "  kind: ClusterRole\n  name: reader\nsubjects:\n  - kind: ServiceAccount\n"
        "    name: default\n",
        r"namespace with a RoleBinding is not supported",
    ),
    Break(
        "a keyed list item without its key",
        "base/kustomization.yaml",
        "                  - name: NEW\n",
        "                  - value: unnamed\n                  - name: NEW\n",
        r"env: an item without name",
    ),
    Break(
        "a YAML 1.1 boolean",
        "base/kustomization.yaml",
        '      plain: "yes"\n',
        "      plain: yes\n",
        r"quote 'yes': YAML 1.1 reads it as a boolean",
    ),
    Break(
        "a null in a resource",
        "base/app.yaml",
        "  endpoint: placeholder\n",
        "  endpoint: null\n",
        r"null values are not supported",
    ),
]


def apply_break(case: Break, root: Path) -> bool:
    """Applies `case` to the tree at `root`; False (and says so) when its text is not there
    exactly once."""
    target = root / case.file
    text = target.read_text()
    if text.count(case.old) != 1:
        print(
            f"FAIL {case.what}: {case.file} holds the text to replace "
            f"{text.count(case.old)} times, not once"
        )
        return False
    target.write_text(text.replace(case.old, case.new))
    return True


def self_test(
    checker: Checker,
    deploy: Path,
    builtin: BuiltinRenderer,
    kustomize: KustomizeRenderer | None,
) -> bool:
    ok = True
    with tempfile.TemporaryDirectory(prefix="check-manifests.") as tmp:
        pristine = Path(tmp) / "pristine" / "deploy"
        shutil.copytree(deploy, pristine)
        problems, _ = checker.check(pristine)
        if problems:
            print("self-test: the unbroken copy is refused:", *problems, sep="\n  ")
            return False
        print("self-test: the unbroken copy passes")
        for number, case in enumerate(BREAKS, 1):
            copy_dir = Path(tmp) / str(number) / "deploy"
            shutil.copytree(pristine, copy_dir)
            if not apply_break(case, copy_dir):
                ok = False
                continue
            problems, _ = checker.check(copy_dir)
            matching = [p for p in problems if re.search(case.expect, p)]
            if matching:
                print(f"ok   {case.what}: refused: {matching[0]}")
            else:
                ok = False
                print(
                    f"FAIL {case.what}: no problem matches {case.expect!r}; got:",
                    *(problems or ["(none)"]),
                    sep="\n  ",
                )
        print(
            f"self-test: {len(BREAKS)} broken trees tried, "
            f"{'all refused' if ok else 'some NOT refused'}"
        )
        ok = renderer_self_test(checker, builtin, kustomize, Path(tmp)) and ok
    return ok


@dataclass
class SkewedRenderer:
    """The builtin renderer with one label changed, to show that comparisons can fail."""

    builtin: BuiltinRenderer
    description: str = "the builtin renderer with one label changed"

    def render(self, directory: Path) -> Docs:
        docs = self.builtin.render(directory)
        docs[0].setdefault("metadata", {}).setdefault("labels", {})["skewed"] = "true"
        return docs


def renderer_self_test(
    checker: Checker, builtin: BuiltinRenderer, kustomize: KustomizeRenderer | None, tmp: Path
) -> bool:
    """The builtin renderer builds the fixtures, refuses what it does not implement and, where
    a real kustomize is installed, renders everything the self-test built as kustomize does."""
    ok = True
    fixtures = tmp / "fixtures"
    shutil.copytree(FIXTURES, fixtures)
    comparing = checker.renderer if isinstance(checker.renderer, ComparingRenderer) else None
    for name in ("base", "overlay"):
        try:
            docs = (comparing or builtin).render(fixtures / name)
            print(f"ok   the builtin renderer builds the fixture {name} ({len(docs)} objects)")
        except BuildError as err:
            ok = False
            print(f"FAIL the builtin renderer cannot build the fixture {name}: {err}")
    if comparing is None:
        print(
            "self-test: no kustomize v5 here, so the builtin renderer is not compared with "
            "kustomize (install kubectl or kustomize to compare)"
        )
    elif comparing.disagreements:
        ok = False
        print(
            f"FAIL the builtin renderer and {kustomize.description if kustomize else 'kustomize'} "
            f"disagree on {len(comparing.disagreements)} of {comparing.builds} builds; the first:",
            *comparing.disagreements[:3],
            sep="\n  ",
        )
    else:
        print(
            f"ok   the builtin renderer and {kustomize.description if kustomize else 'kustomize'} "
            f"render the same objects in all {comparing.builds} builds (deploy/, its broken "
            "copies, the fixtures)"
        )
        # The comparison itself: a rendering one label off must be caught.
        skewed = ComparingRenderer(SkewedRenderer(builtin), comparing.other)
        skewed.render(fixtures / "overlay")
        if skewed.disagreements:
            print("ok   a rendering that differs from kustomize's in one label is caught")
        else:
            ok = False
            print("FAIL a rendering that differs from kustomize's in one label passes")
    for number, case in enumerate(RENDERER_REFUSALS, 1):
        copy_dir = tmp / f"refusal-{number}"
        shutil.copytree(FIXTURES, copy_dir)
        if not apply_break(case, copy_dir):
            ok = False
            continue
        try:
            builtin.render(copy_dir / "overlay")
        except BuildError as err:
            message = str(err).replace(f"{copy_dir}/", "")
            if re.search(case.expect, message):
                print(f"ok   the builtin renderer refuses {case.what}: {message}")
                continue
            print(f"FAIL the builtin renderer refuses {case.what}, but with: {message}")
        else:
            print(f"FAIL the builtin renderer builds {case.what}")
        ok = False
    print(
        f"self-test: {len(RENDERER_REFUSALS)} constructs the builtin renderer does not "
        f"implement tried, {'all refused' if ok else 'NOT all refused'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="break a copy of deploy/ in several ways; each must be refused",
    )
    parser.add_argument(
        "--deploy",
        type=Path,
        default=ROOT / "deploy",
        help="the directory to check (default: deploy/ of the repository)",
    )
    parser.add_argument(
        "--renderer",
        choices=("auto", "kustomize", "builtin"),
        default="auto",
        help="build with kustomize or kubectl (v5 or later), with the builtin renderer, or "
        "(auto, the default) with kustomize when there is one",
    )
    args = parser.parse_args()
    try:
        kube = KubeSchemas(KUBE_VERSION)
        renderer, kustomize = choose_renderer(args.renderer, kube)
        print(
            f"check-manifests: builds with {renderer.description}; Kubernetes {KUBE_VERSION} "
            f"schemas (kubernetes-validate {kubernetes_validate.__version__}, strict); "
            f"jsonschema {jsonschema_version()}"
        )
        contract = read_contract(ROOT)
        if args.self_test:
            builtin = (
                renderer
                if isinstance(renderer, BuiltinRenderer)
                else BuiltinRenderer(kustomize_subset.MergeSchemas(kube.definitions))
            )
            # With a real kustomize at hand, every build is made both ways and compared.
            active: Renderer = renderer
            if kustomize is not None:
                other = kustomize if renderer is builtin else builtin
                active = ComparingRenderer(renderer, other)
            checker = Checker(active, kube, contract)
            return 0 if self_test(checker, args.deploy, builtin, kustomize) else 1
        problems, checked = Checker(renderer, kube, contract).check(args.deploy)
    except CheckError as err:
        print(f"check-manifests: error: {err}", file=sys.stderr)
        return 1
    for item in checked:
        print(f"checked {item}")
    for problem in problems:
        print(f"problem: {problem}")
    print(f"check-manifests: {len(problems)} problems" if problems else "check-manifests: ok")
    return 1 if problems else 0


def jsonschema_version() -> str:
    from importlib.metadata import version

    return version("jsonschema")


if __name__ == "__main__":
    sys.exit(main())
