"""Builds kustomizations without kustomize: the subset of kustomize v5 that deploy/k8s uses.

scripts/check_manifests.py renders with it when neither `kustomize` nor `kubectl` (v5 or later)
is on PATH; its --self-test compares the two renderings wherever a real kustomize is present.
What it implements, with the semantics of kustomize v5.5 (api/internal/target, api/filters):
  - resources: YAML files (several documents each) and directories holding a kustomization;
  - patches: strategic-merge patches from `path` or `patch`, with or without a `target`
    (selected by group, version, kind and name as anchored regular expressions, labelSelector
    and annotationSelector); lists merge by the merge keys of the Kubernetes schema, items of
    the patch first, as kustomize does;
  - namespace: metadata.namespace of every namespaced object, the name of a v1 Namespace;
  - labels: pairs, includeSelectors, includeTemplates, with kustomize's default field specs;
  - images: name, newName, newTag, digest;
  - replacements: a source by group, version, kind and name, its fieldPath; targets selected by
    group, version, kind, name, labelSelector and annotationSelector, fieldPaths made of field
    names and [key=value] list items;
  - objects annotated config.kubernetes.io/local-config are left out of the result.
The transformers run in kustomize's order (patches, namespace, labels, images, replacements) in
each kustomization, on what it and its resources hold. Every other kustomization field, and every
option of these fields that is not listed (patch options, JSON 6902 patches, $patch directives,
replacement options and rejects, ...), is refused with a RenderError: what this cannot render
exactly as kustomize would, it does not render.

Kustomize merges patches with the Kubernetes 1.21 schema built into it; the schema here is the
one of the checked Kubernetes version, minus the list fields that 1.21 did not merge by key
(KUSTOMIZE_SCHEMA_LACKS). Patches apply with a schema only to the kinds of
KUSTOMIZE_SCHEMA_TYPES; a kind of any other Kubernetes API group is refused, and a custom
resource merges without a schema (maps merge, lists are replaced), as in kustomize.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_API = "kustomize.config.k8s.io/v1beta1"
KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "patches",
    "replacements",
}
LOCAL_CONFIG = "config.kubernetes.io/local-config"

# The kinds kustomize's built-in schema knows as cluster-scoped (kyaml/openapi,
# precomputedIsNamespaceScoped); every other kind is namespaced to kustomize.
CLUSTER_SCOPED = {
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io/v1beta1", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io/v1beta1", "ValidatingWebhookConfiguration"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"),
    ("apiregistration.k8s.io/v1", "APIService"),
    ("apiregistration.k8s.io/v1beta1", "APIService"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest"),
    ("certificates.k8s.io/v1beta1", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "PriorityLevelConfiguration"),
    ("networking.k8s.io/v1", "IngressClass"),
    ("networking.k8s.io/v1beta1", "IngressClass"),
    ("node.k8s.io/v1", "RuntimeClass"),
    ("node.k8s.io/v1beta1", "RuntimeClass"),
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass"),
    ("storage.k8s.io/v1", "CSIDriver"),
    ("storage.k8s.io/v1", "CSINode"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("storage.k8s.io/v1", "VolumeAttachment"),
    ("storage.k8s.io/v1beta1", "CSIDriver"),
    ("storage.k8s.io/v1beta1", "CSINode"),
    ("storage.k8s.io/v1beta1", "StorageClass"),
    ("storage.k8s.io/v1beta1", "VolumeAttachment"),
    ("v1", "ComponentStatus"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "NodeProxyOptions"),
    ("v1", "PersistentVolume"),
}
# Kinds that kustomize's namespace transformer treats in ways not implemented here (role binding
# subjects, service references).
NAMESPACE_SPECIAL_KINDS = {
    "RoleBinding",
    "ClusterRoleBinding",
    "APIService",
    "CustomResourceDefinition",
}

# Kinds whose patches merge with the Kubernetes schema: each is in kustomize's built-in schema
# (Kubernetes 1.21) with this apiVersion.
KUSTOMIZE_SCHEMA_TYPES = {
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "Pod"),
    ("v1", "PodTemplate"),
    ("v1", "ReplicationController"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "Namespace"),
    ("v1", "PersistentVolumeClaim"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
}
# List fields that later Kubernetes versions merge by key but kustomize's 1.21 schema does not
# (added after 1.21, or without a merge strategy then): kustomize replaces them whole.
KUSTOMIZE_SCHEMA_LACKS = {
    ("io.k8s.api.admissionregistration.v1.MutatingWebhook", "matchConditions"),
    ("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "matchConditions"),
    ("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus"),
    ("io.k8s.api.core.v1.ContainerStatus", "volumeMounts"),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs"),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses"),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
        "x-kubernetes-validations",
    ),
}

# kustomize's field specs for labels (api/internal/konfig/builtinpluginconsts): path, whether
# to create it, group, version, kind ("" matches any).
FieldSpec = tuple[str, bool, str, str, str]
METADATA_LABEL_SPECS: tuple[FieldSpec, ...] = (
    ("metadata/labels", True, "", "", ""),
    ("spec/template/metadata/labels", True, "", "v1", "ReplicationController"),
    ("spec/template/metadata/labels", True, "", "", "Deployment"),
    ("spec/template/metadata/labels", True, "", "", "ReplicaSet"),
    ("spec/template/metadata/labels", True, "", "", "DaemonSet"),
    ("spec/template/metadata/labels", True, "apps", "", "StatefulSet"),
    ("spec/volumeClaimTemplates[]/metadata/labels", True, "apps", "", "StatefulSet"),
    ("spec/template/metadata/labels", True, "batch", "", "Job"),
    ("spec/jobTemplate/metadata/labels", True, "batch", "", "CronJob"),
    ("spec/jobTemplate/spec/template/metadata/labels", True, "batch", "", "CronJob"),
)
_AFFINITY = "spec/template/spec/affinity"
SELECTOR_LABEL_SPECS: tuple[FieldSpec, ...] = (
    ("spec/selector", True, "", "v1", "Service"),
    ("spec/selector", True, "", "v1", "ReplicationController"),
    ("spec/selector/matchLabels", True, "", "", "Deployment"),
    *(
        (f"{_AFFINITY}/{path}/labelSelector/matchLabels", False, "apps", "", kind)
        for kind in ("Deployment", "StatefulSet")
        for path in (
            "podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm",
            "podAffinity/requiredDuringSchedulingIgnoredDuringExecution",
            "podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm",
            "podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        )
    ),
    (
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        False,
        "apps",
        "",
        "Deployment",
    ),
    (
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        False,
        "apps",
        "",
        "StatefulSet",
    ),
    ("spec/selector/matchLabels", True, "", "", "ReplicaSet"),
    ("spec/selector/matchLabels", True, "", "", "DaemonSet"),
    ("spec/selector/matchLabels", True, "apps", "", "StatefulSet"),
    ("spec/selector/matchLabels", False, "batch", "", "Job"),
    ("spec/jobTemplate/spec/selector/matchLabels", False, "batch", "", "CronJob"),
    ("spec/selector/matchLabels", False, "policy", "", "PodDisruptionBudget"),
    ("spec/podSelector/matchLabels", False, "networking.k8s.io", "", "NetworkPolicy"),
    ("spec/ingress/from/podSelector/matchLabels", False, "networking.k8s.io", "", "NetworkPolicy"),
    ("spec/egress/to/podSelector/matchLabels", False, "networking.k8s.io", "", "NetworkPolicy"),
    *METADATA_LABEL_SPECS,
)

# Plain scalars that YAML 1.1 (this parser) reads as booleans and YAML 1.2 (kustomize's) as
# strings; kustomize may quote them when it rewrites a field.
YAML11_BOOLEANS = re.compile(r"yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF")
# What a value in [key=value] of a field path or a selector may hold here: text that means the
# same to Go's regular expressions and Python's.
PLAIN_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
SELECTOR_PATTERN = re.compile(r"[A-Za-z0-9._/|*+?()-]*")


class RenderError(Exception):
    """A kustomization that cannot be rendered, or not exactly as kustomize would."""


Doc = dict[str, Any]


# --- YAML ----------------------------------------------------------------------------------


def load_documents(path: Path, allow_nulls: bool) -> list[Any]:
    """The documents of a YAML file, refusing what YAML 1.1 and 1.2 read differently, anchors,
    duplicate keys and (unless allow_nulls) null values."""
    try:
        text = path.read_text()
    except OSError as err:
        raise RenderError(f"reading {path}: {err}") from err
    return load_text(text, str(path), allow_nulls)


def load_text(text: str, where: str, allow_nulls: bool) -> list[Any]:
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise RenderError(f"{where}: YAML anchors and aliases are not supported")
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise RenderError(f"{where}: not YAML: {err}") from err
    docs = []
    for node in nodes:
        if node is None:
            continue
        check_node(node, where, allow_nulls)
        loader = yaml.SafeLoader("")
        try:
            docs.append(loader.construct_document(node))
        finally:
            loader.dispose()
    return docs


def check_node(node: yaml.Node, where: str, allow_nulls: bool) -> None:
    line = f"{where}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.ScalarNode):
        if node.style is None and YAML11_BOOLEANS.fullmatch(node.value):
            raise RenderError(
                f"{line}: quote {node.value!r}: YAML 1.1 reads it as a boolean, kustomize as a "
                "string"
            )
        if not allow_nulls and node.tag == "tag:yaml.org,2002:null":
            raise RenderError(f"{line}: null values are not supported; leave the field out")
    elif isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise RenderError(f"{line}: the key {key.value!r} appears twice")
                seen.add(key.value)
            check_node(key, where, allow_nulls=True)
            check_node(value, where, allow_nulls)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            check_node(item, where, allow_nulls)


def scalar_text(value: Any) -> str:
    """A scalar as YAML writes it, as kustomize compares and copies values."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    return str(value)


# --- objects and selection -----------------------------------------------------------------


def api_group_version(doc: Doc) -> tuple[str, str]:
    api = str(doc.get("apiVersion", ""))
    if "/" in api:
        group, version = api.split("/", 1)
        return group, version
    return "", api


def is_cluster_scoped(doc: Doc) -> bool:
    return (str(doc.get("apiVersion", "")), doc.get("kind")) in CLUSTER_SCOPED


def name_of(doc: Doc) -> str:
    return str(doc["metadata"]["name"])


def namespace_of(doc: Doc) -> str:
    return str(doc["metadata"].get("namespace") or "")


def effective_namespace(doc: Doc) -> str:
    if is_cluster_scoped(doc):
        return "~X"
    return namespace_of(doc) or "default"


def res_id(doc: Doc) -> tuple[str, str, str, str, str]:
    group, version = api_group_version(doc)
    return group, version, doc["kind"], name_of(doc), effective_namespace(doc)


def describe(doc: Doc) -> str:
    namespace = namespace_of(doc)
    return f"{doc.get('kind')}/{name_of(doc)}" + (f" in {namespace}" if namespace else "")


def is_local_config(doc: Doc) -> bool:
    annotations = doc["metadata"].get("annotations") or {}
    return LOCAL_CONFIG in annotations and scalar_text(annotations[LOCAL_CONFIG]) != "false"


def check_object(doc: Any, where: str, patch: bool = False) -> Doc:
    if not isinstance(doc, dict):
        raise RenderError(f"{where}: a document is not a mapping")
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise RenderError(f"{where}: a document has no kind")
    if kind.endswith("List"):
        raise RenderError(f"{where}: {kind}: lists of objects are not supported")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise RenderError(f"{where}: {kind} has no metadata.name")
    if not isinstance(doc.get("apiVersion", "" if patch else None), str):
        raise RenderError(f"{where}: {kind}/{meta['name']} has no apiVersion")
    return doc


def selector_regex(pattern: Any, what: str, where: str) -> re.Pattern[str] | None:
    if pattern in (None, ""):
        return None
    if not isinstance(pattern, str) or not SELECTOR_PATTERN.fullmatch(pattern):
        raise RenderError(
            f"{where}: {what} {pattern!r}: only letters, digits and . _ / - | * + ? "
            "( ) are supported"
        )
    return re.compile(f"(?:{pattern})")


def parse_label_selector(text: Any, where: str) -> list[tuple[str, str, str]]:
    """The requirements of an equality-based label selector: (operator, key, value)."""
    if text in (None, ""):
        return []
    if not isinstance(text, str):
        raise RenderError(f"{where}: a label selector must be a string, not {text!r}")
    if re.search(r"\b(in|notin)\s*\(", text):
        raise RenderError(f"{where}: set-based selector {text!r} is not supported")
    requirements = []
    for part in text.split(","):
        part = part.strip()
        key = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
        found = re.fullmatch(rf"(!?)\s*({key})", part)
        if found:
            requirements.append(("!" if found.group(1) else "exists", found.group(2), ""))
            continue
        found = re.fullmatch(rf"({key})\s*(==|=|!=)\s*([A-Za-z0-9._-]*)", part)
        if found is None:
            raise RenderError(f"{where}: cannot read the selector {text!r}")
        operator = "!=" if found.group(2) == "!=" else "="
        requirements.append((operator, found.group(1), found.group(3)))
    return requirements


def labels_match(requirements: list[tuple[str, str, str]], labels: Any) -> bool:
    labels = labels if isinstance(labels, dict) else {}
    for operator, key, value in requirements:
        present = key in labels
        actual = scalar_text(labels.get(key))
        if operator == "exists" and not present:
            return False
        if operator == "!" and present:
            return False
        if operator == "=" and (not present or actual != value):
            return False
        if operator == "!=" and present and actual == value:
            return False
    return True


def check_keys(data: Any, allowed: set[str], what: str, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RenderError(f"{where}: {what} must be a mapping, not {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RenderError(
            f"{where}: {what}: {', '.join(map(str, unknown))} not implemented by the builtin "
            "renderer (install kustomize v5 or kubectl to build this)"
        )
    return data


def string_field(data: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise RenderError(f"{where}: {key} must be a {'non-empty ' if required else ''}string")
    return value


# --- strategic merge -----------------------------------------------------------------------


class MergeSchemas:
    """The Kubernetes definitions ($defs of an OpenAPI schema) that say how lists merge."""

    def __init__(self, definitions: dict[str, Any]):
        self.definitions = definitions
        self.types: dict[tuple[str, str], str] = {}
        self.groups: set[str] = set()
        for name, definition in definitions.items():
            for gvk in definition.get("x-kubernetes-group-version-kind") or []:
                group = gvk.get("group", "")
                api = f"{group}/{gvk['version']}" if group else gvk["version"]
                self.types[(api, gvk["kind"])] = name
                self.groups.add(group)

    def for_object(self, doc: Doc, where: str) -> dict[str, Any] | None:
        """The schema a patch of `doc` merges with; None for a custom resource."""
        group, _ = api_group_version(doc)
        if group not in self.groups:
            return None
        key = (str(doc.get("apiVersion")), doc["kind"])
        if key not in KUSTOMIZE_SCHEMA_TYPES or key not in self.types:
            raise RenderError(
                f"{where}: patching {key[1]} ({key[0]}) is not supported by the builtin renderer"
            )
        return {"$ref": f"#/$defs/{self.types[key]}"}

    def resolve(self, schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        name = None
        seen = 0
        while "$ref" in schema and seen < 64:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            schema = self.definitions.get(name) or {}
            seen += 1
        return name, schema

    def field(self, schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
        if schema is None:
            return None
        name, resolved = self.resolve(schema)
        properties = resolved.get("properties") or {}
        if key in properties:
            if (name, key) in KUSTOMIZE_SCHEMA_LACKS:
                return None
            return properties[key]
        extra = resolved.get("additionalProperties")
        return extra if isinstance(extra, dict) else None

    def items(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None:
            return None
        items = self.resolve(schema)[1].get("items")
        return items if isinstance(items, dict) else None

    def list_keys(self, schema: dict[str, Any] | None) -> list[str] | None:
        """The merge keys of a list merged by key ([] for a list of scalars merged as a set),
        None for a list that a patch replaces."""
        if schema is None:
            return None
        resolved = self.resolve(schema)[1]
        strategy = str(resolved.get("x-kubernetes-patch-strategy") or "")
        if "merge" not in strategy.split(","):
            return None
        if resolved.get("x-kubernetes-list-map-keys"):
            return [str(k) for k in resolved["x-kubernetes-list-map-keys"]]
        if resolved.get("x-kubernetes-patch-merge-key"):
            return [str(resolved["x-kubernetes-patch-merge-key"])]
        return []


def check_no_directives(patch: Any, where: str) -> None:
    if isinstance(patch, dict):
        for key, value in patch.items():
            if isinstance(key, str) and key.startswith("$"):
                raise RenderError(
                    f"{where}: the strategic-merge directive {key!r} is not supported by the "
                    "builtin renderer"
                )
            check_no_directives(value, where)
    elif isinstance(patch, list):
        for item in patch:
            check_no_directives(item, where)


def type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return "a scalar"


def strategic_merge(
    dest: Any, patch: Any, schema: dict[str, Any] | None, schemas: MergeSchemas, path: str
) -> Any:
    """`patch` merged into `dest` as kustomize's strategic merge does (kyaml merge2, patch items
    first)."""
    if isinstance(patch, dict):
        if dest is None:
            dest = {}
        if not isinstance(dest, dict):
            raise RenderError(f"{path}: the patch has a map where the object has {type_name(dest)}")
        out = dict(dest)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
                continue
            out[key] = strategic_merge(
                dest.get(key), value, schemas.field(schema, key), schemas, f"{path}.{key}"
            )
        return out
    if isinstance(patch, list):
        if dest is not None and not isinstance(dest, list):
            raise RenderError(
                f"{path}: the patch has a list where the object has {type_name(dest)}"
            )
        keys = schemas.list_keys(schema)
        if keys is None:
            return copy.deepcopy(patch)
        if not keys:
            return merge_scalar_set(dest or [], patch, path)
        return merge_keyed_list(dest or [], patch, keys, schemas.items(schema), schemas, path)
    if isinstance(dest, (dict, list)):
        raise RenderError(f"{path}: the patch has a scalar where the object has {type_name(dest)}")
    return copy.deepcopy(patch)


def merge_scalar_set(dest: list[Any], patch: list[Any], path: str) -> list[Any]:
    out = []
    seen = set()
    for item in [*patch, *dest]:
        if isinstance(item, (dict, list)):
            raise RenderError(f"{path}: a list merged as a set holds {type_name(item)}")
        text = scalar_text(item)
        if text not in seen:
            seen.add(text)
            out.append(copy.deepcopy(item))
    return out


def merge_keyed_list(
    dest: list[Any],
    patch: list[Any],
    keys: list[str],
    item_schema: dict[str, Any] | None,
    schemas: MergeSchemas,
    path: str,
) -> list[Any]:
    every = [*dest, *patch]
    for item in every:
        if not isinstance(item, dict):
            raise RenderError(f"{path}: a list merged by {keys} holds {type_name(item)}")
    # Keys that no item sets do not take part (a port list whose items all omit protocol).
    used = [key for key in keys if any(scalar_text(item.get(key)) for item in every)] or keys
    for item in every:
        missing = [key for key in used if not scalar_text(item.get(key))]
        if missing:
            raise RenderError(
                f"{path}: an item without {', '.join(missing)}; the builtin renderer merges "
                f"only items that set all of {', '.join(used)}"
            )

    def identity(item: dict[str, Any]) -> tuple[str, ...]:
        return tuple(scalar_text(item.get(key)) for key in used)

    def index(items: list[dict[str, Any]], which: str) -> dict[tuple[str, ...], dict[str, Any]]:
        found: dict[tuple[str, ...], dict[str, Any]] = {}
        for item in items:
            ident = identity(item)
            if ident in found:
                raise RenderError(f"{path}: two items of the {which} have {dict(zip(used, ident))}")
            found[ident] = item
        return found

    in_dest = index(dest, "object")
    in_patch = index(patch, "patch")
    merged = {}
    for ident, item in in_patch.items():
        where = f"{path}[{','.join(ident)}]"
        merged[ident] = strategic_merge(in_dest.get(ident), item, item_schema, schemas, where)
    for ident, item in in_dest.items():
        merged.setdefault(ident, copy.deepcopy(item))
    # Items of the patch come first. With one merge key the object's other items follow; with
    # several, kyaml moves every item of the object behind those only the patch has.
    if len(used) == 1:
        order = list(merged)
    else:
        order = [i for i in in_patch if i not in in_dest] + list(in_dest)
    return [merged[ident] for ident in order if merged[ident]]


# --- the build -----------------------------------------------------------------------------


def find_kustomization(directory: Path) -> Path:
    found = [directory / name for name in KUSTOMIZATION_FILES if (directory / name).is_file()]
    if not found:
        raise RenderError(f"{directory}: no kustomization.yaml")
    if len(found) > 1:
        raise RenderError(f"{directory}: several kustomization files")
    return found[0]


def inside(path: Path, root: Path, where: str) -> Path:
    """`path`, which kustomize loads only from within the kustomization's directory."""
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise RenderError(f"{where}: {path} is not in or below {root}")
    return resolved


class Builder:
    def __init__(self, schemas: MergeSchemas):
        self.schemas = schemas

    def build(self, directory: Path) -> list[Doc]:
        docs = self.accumulate(directory.resolve(), ())
        return [doc for doc in docs if not is_local_config(doc)]

    def accumulate(self, directory: Path, stack: tuple[Path, ...]) -> list[Doc]:
        if directory in stack:
            raise RenderError(f"{directory}: a cycle of kustomizations")
        path = find_kustomization(directory)
        where = str(path)
        loaded = load_documents(path, allow_nulls=False)
        if len(loaded) != 1:
            raise RenderError(f"{where}: expected one YAML document")
        kust = check_keys(loaded[0], KUSTOMIZATION_FIELDS, "the kustomization", where)
        if kust.get("apiVersion", KUSTOMIZATION_API) != KUSTOMIZATION_API:
            raise RenderError(f"{where}: apiVersion must be {KUSTOMIZATION_API}")
        if kust.get("kind", "Kustomization") != "Kustomization":
            raise RenderError(f"{where}: kind {kust.get('kind')!r} is not supported")

        docs: list[Doc] = []
        for entry in as_list(kust.get("resources"), "resources", where):
            for doc in self.resource(directory, entry, (*stack, directory), where):
                add(docs, doc, where)
        for number, entry in enumerate(as_list(kust.get("patches"), "patches", where)):
            self.patch(docs, directory, entry, f"{where}: patches[{number}]")
        if "namespace" in kust:
            set_namespace(docs, string_field(kust, "namespace", where, required=True), where)
        for number, entry in enumerate(as_list(kust.get("labels"), "labels", where)):
            add_labels(docs, entry, f"{where}: labels[{number}]")
        for number, entry in enumerate(as_list(kust.get("images"), "images", where)):
            set_images(docs, entry, f"{where}: images[{number}]")
        for number, entry in enumerate(as_list(kust.get("replacements"), "replacements", where)):
            replace(docs, entry, f"{where}: replacements[{number}]")
        return docs

    def resource(
        self, directory: Path, entry: Any, stack: tuple[Path, ...], where: str
    ) -> list[Doc]:
        if not isinstance(entry, str) or not entry:
            raise RenderError(f"{where}: resources: {entry!r} is not a path")
        if "://" in entry or entry.startswith(("github.com/", "git@", "ssh:")):
            raise RenderError(f"{where}: remote resource {entry!r} is not supported")
        path = directory / entry
        if path.is_dir():
            return self.accumulate(path.resolve(), stack)
        if not path.is_file():
            raise RenderError(f"{where}: resources: {entry} does not exist")
        path = inside(path, directory, where)
        docs = []
        for doc in load_documents(path, allow_nulls=False):
            if isinstance(doc, dict) and not doc:
                continue
            docs.append(check_object(doc, str(path)))
        return docs

    def patch(self, docs: list[Doc], directory: Path, entry: Any, where: str) -> None:
        entry = check_keys(entry, {"path", "patch", "target"}, "a patch", where)
        if ("path" in entry) == ("patch" in entry):
            raise RenderError(f"{where}: set one of path and patch")
        if "path" in entry:
            source = inside(directory / string_field(entry, "path", where, True), directory, where)
            patches = load_documents(source, allow_nulls=True)
            where = f"{where} ({source})"
        else:
            text = string_field(entry, "patch", where, required=True).strip()
            if text.startswith("["):
                raise RenderError(f"{where}: JSON 6902 patches are not supported")
            patches = load_text(text, where, allow_nulls=True)
        patches = [p for p in patches if p not in ({}, None)]
        if not patches:
            raise RenderError(f"{where}: an empty patch")
        for patch in patches:
            if isinstance(patch, list):
                raise RenderError(f"{where}: JSON 6902 patches are not supported")
            check_object(patch, where, patch=True)
            check_no_directives(patch, where)
        if "target" in entry:
            if len(patches) > 1:
                raise RenderError(f"{where}: a patch with a target holds one object")
            select = Selector(entry["target"], regex=True, where=f"{where}: target")
            targets = [doc for doc in docs if select.matches(doc)]
            for index, doc in enumerate(docs):
                if any(doc is target for target in targets):
                    docs[index] = self.apply_patch(doc, patches[0], where)
            return
        for patch in patches:
            wanted = res_id({**patch, "apiVersion": patch.get("apiVersion", "")})
            matching = [index for index, doc in enumerate(docs) if res_id(doc) == wanted]
            if len(matching) != 1:
                raise RenderError(f"{where}: no object is {describe(patch)}")
            docs[matching[0]] = self.apply_patch(docs[matching[0]], patch, where)

    def apply_patch(self, doc: Doc, patch: Doc, where: str) -> Doc:
        """`patch` merged into `doc`, whose apiVersion, kind, name and namespace it keeps."""
        patch = copy.deepcopy(patch)
        patch.pop("apiVersion", None)
        patch.pop("kind", None)
        meta = patch.get("metadata")
        if isinstance(meta, dict):
            meta.pop("name", None)
            meta.pop("namespace", None)
        schema = self.schemas.for_object(doc, where)
        merged = strategic_merge(doc, patch, schema, self.schemas, f"{where}: {describe(doc)}")
        if not isinstance(merged.get("metadata"), dict):
            raise RenderError(f"{where}: the patch removes the metadata of {describe(doc)}")
        return merged


def as_list(value: Any, what: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RenderError(f"{where}: {what} must be a list")
    return value


def add(docs: list[Doc], doc: Doc, where: str) -> None:
    if any(res_id(other) == res_id(doc) for other in docs):
        raise RenderError(f"{where}: {describe(doc)} is defined twice")
    docs.append(doc)


class Selector:
    """A patch target (regular expressions, as types.Selector) or a replacement's select
    (exact values, as resid.ResId), with label and annotation selectors."""

    FIELDS: ClassVar[set[str]] = {
        "group",
        "version",
        "kind",
        "name",
        "labelSelector",
        "annotationSelector",
    }

    def __init__(self, data: Any, regex: bool, where: str):
        data = check_keys(data, self.FIELDS, "a selector", where)
        self.where = where
        self.regex = regex
        self.values = {}
        for key in ("group", "version", "kind", "name"):
            value = data.get(key, "")
            if not isinstance(value, str):
                raise RenderError(f"{where}: {key} must be a string")
            if value and regex:
                selector_regex(value, key, where)
            self.values[key] = value
        self.labels = parse_label_selector(data.get("labelSelector"), where)
        self.annotations = parse_label_selector(data.get("annotationSelector"), where)

    def matches(self, doc: Doc) -> bool:
        group, version = api_group_version(doc)
        actual = {"group": group, "version": version, "kind": doc["kind"], "name": name_of(doc)}
        for key, wanted in self.values.items():
            if not wanted:
                continue
            if self.regex:
                if not re.fullmatch(f"(?:{wanted})", actual[key]):
                    return False
            elif actual[key] != wanted:
                return False
        meta = doc["metadata"]
        return labels_match(self.labels, meta.get("labels")) and labels_match(
            self.annotations, meta.get("annotations")
        )


def set_namespace(docs: list[Doc], namespace: str, where: str) -> None:
    for doc in docs:
        if doc["kind"] in NAMESPACE_SPECIAL_KINDS:
            raise RenderError(
                f"{where}: namespace with a {doc['kind']} is not supported by the builtin renderer"
            )
        if not is_cluster_scoped(doc):
            doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Namespace" and doc.get("apiVersion") == "v1":
            doc["metadata"]["name"] = namespace
    ids = [res_id(doc) for doc in docs]
    if len(set(ids)) != len(ids):
        raise RenderError(f"{where}: namespace {namespace} makes two objects the same")


def field_spec_matches(spec: FieldSpec, doc: Doc) -> bool:
    _, _, group, version, kind = spec
    actual_group, actual_version = api_group_version(doc)
    return (
        (not kind or kind == doc["kind"])
        and (not group or group == actual_group)
        and (not version or version == actual_version)
    )


def apply_field_spec(
    node: Any, parts: list[str], create: bool, set_value: Callable[[Any], None], where: str
) -> None:
    """Walks a field spec's path as kustomize's fieldspec filter: through every item of a list,
    creating missing maps when `create`."""
    if not parts:
        set_value(node)
        return
    if node is None:
        return
    if isinstance(node, list):
        for item in node:
            apply_field_spec(item, parts, create, set_value, where)
        return
    if not isinstance(node, dict):
        raise RenderError(f"{where}: expected a list or a map on the way to {'/'.join(parts)}")
    name, is_list = parts[0].removesuffix("[]"), parts[0].endswith("[]")
    if node.get(name) is None:
        if not create or is_list:
            return
        node[name] = {}
    apply_field_spec(node[name], parts[1:], create, set_value, where)


def add_labels(docs: list[Doc], entry: Any, where: str) -> None:
    entry = check_keys(
        entry, {"pairs", "includeSelectors", "includeTemplates"}, "a labels entry", where
    )
    pairs = entry.get("pairs") or {}
    if not isinstance(pairs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()
    ):
        raise RenderError(f"{where}: pairs must map strings to strings")
    for flag in ("includeSelectors", "includeTemplates"):
        if not isinstance(entry.get(flag, False), bool):
            raise RenderError(f"{where}: {flag} must be true or false")
    if entry.get("includeSelectors"):
        specs = SELECTOR_LABEL_SPECS
    elif entry.get("includeTemplates"):
        specs = METADATA_LABEL_SPECS
    else:
        specs = (METADATA_LABEL_SPECS[0],)

    def setter(key: str, value: str) -> Callable[[Any], None]:
        def set_value(node: Any) -> None:
            if not isinstance(node, dict):
                raise RenderError(f"{where}: labels go into a map, found {type_name(node)}")
            node[key] = value

        return set_value

    for doc in docs:
        for key in sorted(pairs):
            for spec in specs:
                if field_spec_matches(spec, doc):
                    parts = spec[0].split("/")
                    apply_field_spec(doc, parts, spec[1], setter(key, pairs[key]), where)


def split_image(image: str) -> tuple[str, str, str]:
    """Name, tag and digest of an image reference, as kustomize's image.Split."""
    slash = image.find("/")
    offset = max(0, slash)
    search = image[offset:]
    at, colon = search.find("@"), search.find(":")
    if colon < 0 and at < 0:
        return image, "", ""
    if at >= 0 and (at < colon or colon < 0):
        return image[: offset + at], "", image[offset + at + 1 :]
    if at >= 0 and colon >= 0:
        return (
            image[: offset + colon],
            image[offset + colon + 1 : offset + at],
            image[offset + at + 1 :],
        )
    return image[: offset + colon], image[offset + colon + 1 :], ""


def set_images(docs: list[Doc], entry: Any, where: str) -> None:
    entry = check_keys(entry, {"name", "newName", "newTag", "digest"}, "an images entry", where)
    name = string_field(entry, "name", where, required=True)
    new_name = string_field(entry, "newName", where)
    new_tag = string_field(entry, "newTag", where)
    digest = string_field(entry, "digest", where)
    if not re.fullmatch(r"[A-Za-z0-9._/:-]+", name):
        raise RenderError(f"{where}: image name {name!r} is not supported")
    matcher = re.compile(f"{name}(:[a-zA-Z0-9_.{{}}-]*)?(@sha256:[a-zA-Z0-9_.{{}}-]*)?")

    def update(image: Any) -> Any:
        if not isinstance(image, str):
            raise RenderError(f"{where}: an image is not a string: {image!r}")
        if not matcher.fullmatch(image):
            return image
        base, tag, old_digest = split_image(image)
        base = new_name or base
        if new_tag or digest:
            tag, old_digest = new_tag, digest
        return base + (f":{tag}" if tag else "") + (f"@{old_digest}" if old_digest else "")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value)
                if key in ("containers", "initContainers") and isinstance(value, list):
                    for container in value:
                        if isinstance(container, dict) and "image" in container:
                            container["image"] = update(container["image"])
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            walk(doc)


def split_field_path(path: str) -> list[str]:
    """kyaml's SmarterPathSplitter on '.': `\\.` escapes a dot; [key=value] stays whole."""
    parts: list[str] = []
    for piece in path.split("."):
        if parts and parts[-1].endswith("\\"):
            parts[-1] = parts[-1][:-1] + "." + piece
        else:
            parts.append(piece)
    if len(parts) > 1 and parts[0] == "":
        parts = parts[1:]
    out: list[str] = []
    index = 0
    while index < len(parts):
        part = parts[index]
        if part.startswith("[") and not part.endswith("]"):
            joined = [part]
            while index < len(parts) - 1:
                index += 1
                joined.append(parts[index])
                if parts[index].endswith("]"):
                    break
            text = ".".join(joined)
            out.append(text if "=" in text else text.strip("[]"))
        else:
            out.append(part)
        index += 1
    return out


def check_path_part(part: str, where: str) -> tuple[str, str] | None:
    """(key, value) of a [key=value] part, None for a field name."""
    if part.startswith("[") and part.endswith("]") and "=" in part:
        key, value = part[1:-1].split("=", 1)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key) or not PLAIN_PATTERN.fullmatch(value):
            raise RenderError(f"{where}: the field path item {part} is not supported")
        return key, value
    if not re.fullmatch(r"[A-Za-z0-9_.$/-]+", part) or part.isdigit() or part in ("*", "-"):
        raise RenderError(f"{where}: the field path part {part!r} is not supported")
    return None


def find_fields(node: Any, parts: list[str], where: str) -> Iterator[tuple[Any, Any]]:
    """(container, key or index) of every field a replacement's field path selects; a
    [key=value] item matches when the item's key contains the value, as kyaml's PathMatcher."""
    item = check_path_part(parts[0], where)
    rest = parts[1:]
    if item is None:
        if not isinstance(node, dict) or parts[0] not in node:
            return
        if not rest:
            yield node, parts[0]
        else:
            yield from find_fields(node[parts[0]], rest, where)
        return
    key, value = item
    if not isinstance(node, list):
        return
    for index, element in enumerate(node):
        if not isinstance(element, dict) or key not in element:
            continue
        if isinstance(element[key], (dict, list)):
            raise RenderError(f"{where}: [{key}={value}] meets a {type_name(element[key])}")
        if value not in scalar_text(element[key]):
            continue
        if not rest:
            yield node, index
        else:
            yield from find_fields(element, rest, where)


def replace(docs: list[Doc], entry: Any, where: str) -> None:
    entry = check_keys(entry, {"source", "targets"}, "a replacement", where)
    if "source" not in entry or not entry.get("targets"):
        raise RenderError(f"{where}: a replacement needs a source and at least one target")
    source_spec = check_keys(
        entry["source"], {"group", "version", "kind", "name", "fieldPath"}, "source", where
    )
    select = Selector(
        {k: v for k, v in source_spec.items() if k != "fieldPath"}, regex=False, where=where
    )
    sources = [doc for doc in docs if select.matches(doc)]
    if len(sources) != 1:
        raise RenderError(f"{where}: the source selects {len(sources)} objects, not one")
    field_path = string_field(source_spec, "fieldPath", where) or "metadata.name"
    value: Any = sources[0]
    for part in split_field_path(field_path):
        if check_path_part(part, where) is not None:
            raise RenderError(f"{where}: [key=value] in a source fieldPath is not supported")
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or value in ({}, []):
        raise RenderError(f"{where}: fieldPath {field_path} is missing in the source")

    for number, target in enumerate(as_list(entry["targets"], "targets", where)):
        here = f"{where}: targets[{number}]"
        target = check_keys(target, {"select", "fieldPaths"}, "a target", here)
        if "select" not in target:
            raise RenderError(f"{here}: a target needs select")
        chosen = Selector(target["select"], regex=False, where=here)
        paths = as_list(target.get("fieldPaths"), "fieldPaths", here) or ["metadata.name"]
        for doc in docs:
            if not chosen.matches(doc):
                continue
            for path in paths:
                if not isinstance(path, str):
                    raise RenderError(f"{here}: a field path must be a string")
                fields = list(find_fields(doc, split_field_path(path), here))
                if not fields:
                    raise RenderError(f"{here}: {describe(doc)} has no field {path}")
                for container, key in fields:
                    container[key] = replaced(container[key], value, f"{here}: {path}")


def replaced(old: Any, value: Any, where: str) -> Any:
    """What a replacement writes: a scalar's text into a string field, anything into a map or
    a list field (kyaml keeps a scalar target's type and replaces other nodes)."""
    if isinstance(old, (dict, list)):
        return copy.deepcopy(value)
    if not isinstance(old, str):
        raise RenderError(
            f"{where}: replacing a {type(old).__name__} is not supported; only strings"
        )
    if isinstance(value, (dict, list)):
        raise RenderError(f"{where}: cannot write {type_name(value)} into a string")
    return scalar_text(value)


def render(directory: Path, schemas: MergeSchemas) -> list[Doc]:
    """The objects that `kustomize build DIRECTORY` renders."""
    return Builder(schemas).build(directory)
