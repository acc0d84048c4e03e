"""The Kubernetes manifests of deploy/, by variant, and what they are checked against: the Kubernetes
API's schemas (kubernetes-validate), KEDA's CRD schemas (the npm package @kubernetes-models/keda) and
the metadata names KEDA's azure-eventhub scaler reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT: Final = Path(__file__).resolve().parents[1]
DEPLOY: Final = ROOT / "deploy"

#: Each variant's files: connection strings from a Secret, or managed identity (workload identity).
#: Both use the one rules ConfigMap.
VARIANTS: Final = {
    "connection-string": sorted(DEPLOY.glob("*.yaml")),
    "workload-identity": [*sorted((DEPLOY / "workload-identity").glob("*.yaml")), DEPLOY / "rules-configmap.yaml"],
}

#: Kubernetes versions the manifests are validated against (strict: no field the API does not know):
#: an older one still widely run, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS: Final = ("1.33", "1.37")

#: KEDA's kinds, validated against KEDA's own CRD schemas instead.
KEDA_API: Final = "keda.sh/v1alpha1"
#: @kubernetes-models/keda 0.3.x carries each CRD's openAPIV3Schema (KEDA 2.10's) as data, in the
#: module of its model; later releases carry only validators compiled from it.
KEDA_MODELS: Final = ROOT / "node_modules" / "@kubernetes-models" / "keda" / "keda.sh" / "v1alpha1"
#: How the CRD schemas refer to the Kubernetes object metadata, and where kubernetes-validate holds it.
_OBJECT_META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_DEFINITIONS: Final = "https://kubernetes.io/api/_definitions.json"

#: The metadata keys KEDA's azure-eventhub scaler reads (KEDA 2.20: the `keda:"name=..."` fields of
#: eventHubMetadata in pkg/scalers/azure_eventhub_scaler.go and of EventHubInfo in
#: pkg/scalers/azure/azure_eventhub.go, and the cloud keys of pkg/scalers/azure/azure_cloud_environment.go).
EVENTHUB_METADATA: Final = frozenset(
    {
        "unprocessedEventThreshold",
        "activationUnprocessedEventThreshold",
        "stalePartitionInfoThreshold",
        "consumerGroup",
        "storageAccountName",
        "blobContainer",
        "eventHubNamespace",
        "eventHubName",
        "checkpointStrategy",
        "cloud",
        "endpointSuffix",
        "storageEndpointSuffix",
    }
)
#: Keys whose value KEDA can read from the scale target's environment instead: the metadata then
#: holds ``<key>FromEnv``, the variable's name (``connection`` and ``storageConnection`` only so, or
#: from a TriggerAuthentication).
EVENTHUB_FROM_ENV: Final = frozenset({"connection", "storageConnection", "eventHubNamespace", "eventHubName"})


@dataclass(frozen=True)
class Manifest:
    """One document of a manifest file."""

    path: Path
    document: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.document["kind"])

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}: {self.kind} {self.document['metadata']['name']}"


def manifests(variant: str) -> list[Manifest]:
    return [
        Manifest(path, document)
        for path in VARIANTS[variant]
        for document in yaml.safe_load_all(path.read_text())
        if document is not None
    ]


def the(variant: str, kind: str) -> dict[str, Any]:
    """The one document of ``kind`` in ``variant``."""
    [found] = [m.document for m in manifests(variant) if m.kind == kind]
    return found


def keda_schema(kind: str) -> dict[str, Any]:
    """KEDA's CRD schema of ``kind``, as @kubernetes-models/keda carries it: the JSON object literal
    its model module assigns to ``schema``."""
    module = KEDA_MODELS / f"{kind}.js"
    if not module.exists():
        raise FileNotFoundError(f"{module.relative_to(ROOT)} is missing: run `make setup` (or `npm ci`)")
    text = module.read_text()
    marker = "const schema = "
    schema, _ = json.JSONDecoder().raw_decode(text, text.index(marker) + len(marker))
    assert isinstance(schema, dict)
    return schema


def strict(schema: Any) -> Any:
    """``schema`` refusing fields it does not name, as ``kubectl apply`` (strict field validation)
    refuses them: every object schema with properties and no rule for other ones gets
    ``additionalProperties: false``."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        out.get("properties")
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def keda_errors(document: dict[str, Any], version: str = KUBERNETES_VERSIONS[-1]) -> list[str]:
    """What KEDA's CRD schema (strict) finds wrong with ``document``; its metadata is checked as the
    Kubernetes API of ``version`` has it."""
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version
    )
    registry: Registry[Any] = Registry().with_resources(
        [
            (_DEFINITIONS, Resource.from_contents(definitions)),
            (_OBJECT_META, DRAFT202012.create_resource({"$ref": f"{_DEFINITIONS}#/$defs/{_OBJECT_META}"})),
        ]
    )
    validator = jsonschema.Draft202012Validator(strict(keda_schema(document["kind"])), registry=registry)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def kubernetes_errors(document: dict[str, Any], version: str) -> list[str]:
    """What the Kubernetes API of ``version`` (strict) finds wrong with ``document``."""
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"]
    return []
