"""`Driver`: the reconcile pass run tick by tick without Kubernetes (the test plays the API server).

It keeps the object, applies each pass's status merge patch and annotation removal, and checks every
status the operator writes against the CRD's schema.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from operator_crd_schema import errors
from operator_fakes import Platform
from operator_harness import SPEC

from operators.modelswitch.reconcile import Observed, Outcome, reconcile

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def merge_patch_into(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch_into(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclass
class Driver:
    platform: Platform
    schema: dict[str, Any]
    spec: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(SPEC))
    status: dict[str, Any] = field(default_factory=dict)
    action: str | None = None
    now: datetime = T0
    owners: frozenset[str] = frozenset()
    outcomes: list[Outcome] = field(default_factory=list)

    def tick(self, seconds: float = 1.0) -> Outcome:
        observed = Observed(name="sw", namespace="ml", uid="u-1", generation=1, spec=copy.deepcopy(self.spec),
                            status=copy.deepcopy(self.status), action=self.action, now=self.now,
                            predictor_owners=self.owners)
        outcome = reconcile(observed, self.platform.clients())  # fresh clients: nothing kept between passes
        self.status = merge_patch_into(self.status, outcome.status_patch)
        assert self.status == outcome.status, "the merge patch must reproduce the operator's status"
        obj = {"apiVersion": "crossadapt.io/v1alpha1", "kind": "ModelSwitch", "metadata": {"name": "sw"},
               "spec": self.spec, "status": self.status}
        assert errors(self.schema, obj) == [], "the status must fit the CRD (else the API server prunes it)"
        if outcome.clear_action:
            self.action = None
        self.now += timedelta(seconds=seconds)
        self.outcomes.append(outcome)
        return outcome

    def run_until(self, *phases: str, limit: int = 60, seconds: float = 1.0) -> None:
        for _ in range(limit):
            if self.status.get("phase") in phases:
                return
            self.tick(seconds)
        raise AssertionError(f"never reached {phases}; at {self.status.get('phase')}: {self.status.get('message')}")

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")

    def reasons(self) -> list[str]:
        return [event.reason for outcome in self.outcomes for event in outcome.events]
