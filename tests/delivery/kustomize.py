"""Render a kustomization (the subset deploy/k8s uses) without kubectl, for schema validation.

Supported fields: ``resources`` (files and directories holding a kustomization), ``namespace``,
``images`` (``name`` -> ``newName``/``newTag``/``digest``), ``replicas`` and ``patches`` given
by ``path`` (strategic merge, matched on kind + metadata.name). Any other field fails loudly, so
an overlay cannot use a feature this renderer would silently ignore.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILE = "kustomization.yaml"
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
# Lists merged element by element on this key in a strategic merge patch (as Kubernetes does for
# containers, env, ports, volumes, volumeMounts); other lists are replaced.
MERGE_KEYS = ("name", "containerPort", "mountPath")
# Kinds that live outside any namespace.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

Document = dict[str, Any]


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not support, or is inconsistent."""


def load_documents(path: Path) -> list[Document]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def render(directory: Path) -> list[Document]:
    """The documents ``kubectl kustomize DIRECTORY`` would print (for the supported subset)."""
    kustomization_path = directory / KUSTOMIZATION_FILE
    if not kustomization_path.is_file():
        raise KustomizeError(f"{directory} has no {KUSTOMIZATION_FILE}")
    spec = yaml.safe_load(kustomization_path.read_text(encoding="utf-8")) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(
            f"{kustomization_path}: {sorted(unknown)} not supported by this renderer; "
            "use only " + ", ".join(sorted(SUPPORTED))
        )
    documents: list[Document] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        documents.extend(render(target) if target.is_dir() else load_documents(target))
    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise KustomizeError(f"{kustomization_path}: only patches given by 'path' supported")
        for patch in load_documents(directory / patch_entry["path"]):
            _apply_patch(documents, patch, kustomization_path)
    for replica in spec.get("replicas", []):
        _find(documents, "Deployment", replica["name"], kustomization_path)["spec"]["replicas"] = (
            replica["count"]
        )
    for image in spec.get("images", []):
        _set_image(documents, image)
    if "namespace" in spec:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED:
                document.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return documents


def _find(documents: list[Document], kind: str, name: str, where: Path) -> Document:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise KustomizeError(f"{where}: no {kind} named {name!r} among the resources")


def _apply_patch(documents: list[Document], patch: Document, where: Path) -> None:
    target = _find(documents, patch["kind"], patch["metadata"]["name"], where)
    merged = merge(target, patch)
    target.clear()
    target.update(merged)


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge: maps recursively, lists of named maps by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        result = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(result[key], value) if key in result else copy.deepcopy(value)
        return result
    if isinstance(base, list) and isinstance(patch, list):
        key = _merge_key(base + patch)
        if key is None:
            return copy.deepcopy(patch)
        result_list = copy.deepcopy(base)
        for item in patch:
            for index, existing in enumerate(result_list):
                if existing[key] == item[key]:
                    result_list[index] = merge(existing, item)
                    break
            else:
                result_list.append(copy.deepcopy(item))
        return result_list
    return copy.deepcopy(patch)


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in MERGE_KEYS:
        if all(key in item for item in items):
            return key
    return None


def _set_image(documents: list[Document], image: Document) -> None:
    for document in documents:
        for container in pod_containers(document):
            name, _, tag = container["image"].partition(":")
            if name != image["name"]:
                continue
            new = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{new}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{new}:{image['newTag']}"
            else:
                container["image"] = f"{new}:{tag}" if tag else new


def pod_containers(document: Document) -> list[Document]:
    """Containers and init containers of a workload's pod template (empty for other kinds)."""
    pod = document.get("spec", {}).get("template", {}).get("spec")
    if not isinstance(pod, dict):
        return []
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
