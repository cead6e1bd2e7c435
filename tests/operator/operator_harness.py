"""Run the real kopf operator (this repository's handlers) against kmock's Kubernetes emulator.

`running_operator` starts `kopf.operator(...)` in the test's event loop with the operator's own
handlers (`operators.modelswitch.handlers.register_handlers`) and a login handler pointing at the
emulator; the services and the predictor are the in-memory fakes of `operator_fakes`.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import kmock
import kopf

from operators.modelswitch.clients import Clients
from operators.modelswitch.handlers import register_handlers
from operators.modelswitch.settings import OperatorSettings

RESOURCE = "crossadapt.io/v1alpha1/modelswitches"
EVENTS = "v1/events"
NAMESPACE = "ml"
INTERVAL = 0.1

SPEC: dict[str, Any] = {
    "teacher": {"checkpoint": "ctr/mlp-teacher", "version": "v000003"},
    "student": {"architecture": "fibinet", "embeddingDim": 16, "hidden": [256, 128, 16]},
    "data": {"train": "ctr/train", "stream": "ctr/stream"},
    "rollout": {"steps": [5, 25, 50, 100], "gates": {"minLabels": 100_000}},
}


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, plus `metadata.generateName` on creation (kopf names its events that way)."""

    _names = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(self._names)}"
        return await super()._handle(request)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """What discovery shows: the CRD's resource (with its status subresource) and kopf's backbone."""
    emulator.resources[RESOURCE] = kmock.ResourceInfo(
        kind="ModelSwitch", singular="modelswitch", namespaced=True, shortnames={"msw"}, categories={"crossadapt"},
        subresources={"status"}, verbs={"get", "list", "watch", "patch", "create", "delete", "update"})
    emulator.resources[EVENTS] = kmock.ResourceInfo(kind="Event", singular="event", namespaced=True,
                                                    verbs={"create", "list"})
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", singular="namespace",
                                                             namespaced=False, verbs={"list", "watch"})
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False,
        verbs={"list", "watch"})


@asynccontextmanager
async def running_operator(emulator: kmock.KubernetesEmulator, clients: Clients, interval: float = INTERVAL,
                           peering: str | None = None) -> AsyncIterator[None]:
    """The operator watching NAMESPACE until the block ends (then stopped as on SIGTERM).

    It runs in its own thread and event loop, as a separate process would: kopf's shutdown waits for
    every task of its loop, which must not include the emulator's own server tasks."""
    registry = kopf.OperatorRegistry()
    register_handlers(registry, OperatorSettings(reconcile_interval_s=interval), clients=clients)
    server = str(emulator.url)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server)

    stop, failure = threading.Event(), []

    def main() -> None:
        try:
            asyncio.run(kopf.operator(registry=registry, standalone=peering is None, peering_name=peering,
                                      namespaces=[NAMESPACE], stop_flag=stop))
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)

    thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        while thread.is_alive():
            await asyncio.sleep(0.05)  # keep the emulator serving while the operator shuts down
        assert not failure, f"the operator crashed: {failure[0]!r}"


def add_switch(emulator: kmock.KubernetesEmulator, name: str, spec: dict[str, Any] | None = None,
               **meta: Any) -> None:
    """Create a ModelSwitch as `kubectl apply` would leave it (the emulator keeps resourceVersion fixed)."""
    emulator.objects[RESOURCE, NAMESPACE, name] = {
        "apiVersion": "crossadapt.io/v1alpha1", "kind": "ModelSwitch",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "resourceVersion": "1",
                     "generation": 1, "creationTimestamp": "2026-12-01T00:00:00Z", **meta},
        "spec": copy.deepcopy(spec if spec is not None else SPEC),
    }


def switch(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    """The stored object as plain JSON."""
    return json.loads(json.dumps(emulator.objects[RESOURCE, NAMESPACE, name].raw, default=dict))


def status(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return switch(emulator, name).get("status") or {}


async def patch_switch(emulator: kmock.KubernetesEmulator, name: str, changes: dict[str, Any]) -> None:
    """`kubectl patch msw NAME --type merge -p ...` through the API (so the operator's watch sees it)."""
    url = f"/apis/crossadapt.io/v1alpha1/namespaces/{NAMESPACE}/modelswitches/{name}"
    headers = {"Content-Type": "application/merge-patch+json"}
    async with emulator.patch(url, json=changes, headers=headers) as resp:
        assert resp.status == 200, await resp.text()


async def delete_switch(emulator: kmock.KubernetesEmulator, name: str) -> None:
    url = f"/apis/crossadapt.io/v1alpha1/namespaces/{NAMESPACE}/modelswitches/{name}"
    async with emulator.delete(url) as resp:
        assert resp.status == 200, await resp.text()


async def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 20.0,
                   explain: Callable[[], str] | None = None) -> Any:
    """Poll until `predicate()` is truthy; fail with `what` (and `explain()`: where things stood) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            where = f"\n{explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{where}")
        await asyncio.sleep(0.05)


def phase_is(emulator: kmock.KubernetesEmulator, name: str, *phases: str) -> Callable[[], bool]:
    return lambda: status(emulator, name).get("phase") in phases


def events(emulator: kmock.KubernetesEmulator, name: str) -> list[dict[str, Any]]:
    """Events posted about the switch, oldest first."""
    found = []
    for (resource, _, _), obj in list(emulator.objects.items()):
        if resource == kmock.resource(EVENTS) and not obj.deleted:
            raw = json.loads(json.dumps(obj.raw, default=dict))
            if raw.get("involvedObject", {}).get("name") == name:
                found.append(raw)
    return sorted(found, key=lambda e: e.get("eventTime", ""))


def operator_requests(emulator: kmock.KubernetesEmulator) -> list[Any]:
    """The API requests the operator made (kopf's user agent), not the test's own."""
    return [r for r in list(emulator) if "kopf" in (r.headers.get("User-Agent") or "")]
