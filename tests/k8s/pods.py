"""AdmissionReview v1 documents shaped after the Kubernetes API reference: pods as a Deployment's
ReplicaSet creates them from its template (the API server has defaulted them before the webhook)."""

from __future__ import annotations

import copy
import uuid
from typing import Any


def pod(template_annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "generateName": "orders-6d4cf56db6-",
        "namespace": "shop",
        "labels": labels if labels is not None else {"app": "orders", "pod-template-hash": "6d4cf56db6"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "orders-6d4cf56db6",
                "uid": str(uuid.uuid4()),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if template_annotations is not None:
        metadata["annotations"] = template_annotations
    body = {
        "containers": [app_container()],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "schedulerName": "default-scheduler",
        "securityContext": {},
    }
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def app_container(name: str = "orders", **extra: Any) -> dict[str, Any]:
    container = {
        "name": name,
        "image": "registry.example.com/orders:1.4.2",
        "command": ["uvicorn", "app:app", "--host", "0.0.0.0", "--port", "8000"],
        "ports": [{"containerPort": 8000, "name": "http", "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }
    container.update(extra)
    return container


def sidecar() -> dict[str, Any]:
    return {
        "name": "envoy",
        "image": "envoyproxy/envoy:v1.31.0",
        "args": ["-c", "/etc/envoy/envoy.yaml"],
        "ports": [{"containerPort": 9000}],
    }


def review(obj: dict[str, Any], operation: str = "CREATE", kind: str = "Pod") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": copy.deepcopy(obj),
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
