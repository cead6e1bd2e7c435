"""The kopf wiring: a reconcile timer per switch, a deletion handler, and an index of predictor owners.

Handlers only translate between kopf and `reconcile`: they read the object, call the pure-ish pass,
and write its status patch, annotation removal and events back. State lives in `status` alone;
the one thing kept in memory (`memo.written_revision`) only spots a view of the object that is
older than the operator's own last write, so a tick never acts on it (kopf's timers see the object
as the watch last delivered it, which may lag behind a patch by a moment).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import kopf

from operators.modelswitch.clients import Clients
from operators.modelswitch.crd import ACTION_ANNOTATION, FINALIZER, GROUP, PLURAL, VERSION
from operators.modelswitch.models import read_status
from operators.modelswitch.reconcile import Observed, reconcile
from operators.modelswitch.settings import OperatorSettings
from operators.modelswitch.transitions import Tick, restore_teacher

PREDICTOR_OWNER = "predictor"


def observe(body: Any, owners: Any, now: datetime) -> Observed:
    """The parts of a kopf body the reconciler reads."""
    meta = body.get("metadata", {})
    return Observed(name=meta["name"], namespace=meta.get("namespace", ""), uid=meta.get("uid", ""),
                    generation=meta.get("generation"), spec=dict(body.get("spec") or {}),
                    status=dict(body.get("status") or {}),
                    action=(meta.get("annotations") or {}).get(ACTION_ANNOTATION) or None, now=now,
                    predictor_owners=frozenset(owners.get(PREDICTOR_OWNER, ())) if owners else frozenset())


def is_stale(memo: Any, status: Any, now: datetime, patience: timedelta) -> bool:
    """True if the object shows an older status than this operator last wrote (and not for too long)."""
    written, written_at = memo.get("written_revision"), memo.get("written_at")
    if written is None or written_at is None:
        return False
    return (status.get("revision") or 0) < written and now - written_at < patience


def register_handlers(registry: kopf.OperatorRegistry, operator_settings: OperatorSettings,
                      clients: Clients | None = None) -> None:
    """Register the operator's handlers on `registry`; `clients` replaces the gRPC clients (tests)."""
    interval = operator_settings.reconcile_interval_s
    patience = timedelta(seconds=max(3 * interval, 5.0))

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # The operator's marks carry its own prefix; only status fields the CRD declares are written.
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        # Watch only the namespaces given (or all): no listing of namespaces or CRDs, so no RBAC for them.
        settings.scanning.disabled = True
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        memo.clients = clients if clients is not None else operator_settings.grpc_clients()

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry)
    def predictor_owners(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict[str, str]:
        """Which switches hold the predictor's arms: a second rollout waits until they hand them back."""
        return {PREDICTOR_OWNER: f"{namespace}/{name}"} if (status.get("rollout") or {}).get("ownsPredictor") else {}

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="reconcile", interval=interval, backoff=interval)
    def reconcile_switch(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo,
                         logger: logging.Logger, **kwargs: Any) -> None:
        now = datetime.now(timezone.utc)
        if is_stale(memo, status, now, patience):
            logger.debug("status revision %s is older than the last write %s; waiting for the watch",
                         status.get("revision"), memo.get("written_revision"))
            return
        outcome = reconcile(observe(body, kwargs.get("predictor_owners"), now), memo.clients)
        for key, value in outcome.status_patch.items():
            patch.status[key] = value
        if outcome.clear_action:
            patch.metadata.annotations[ACTION_ANNOTATION] = None
        if outcome.status_patch:
            memo.written_revision, memo.written_at = outcome.status.get("revision"), now
        for event in outcome.events:
            logger.info("%s: %s", event.reason, event.message)
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="hand-back-predictor", retries=5,
                    backoff=interval)
    def hand_back_predictor(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        """Deleting a switch mid-rollout (or mid-promotion) puts all traffic back on the teacher."""
        observed = observe(body, None, datetime.now(timezone.utc))
        status = read_status(observed.status)
        rollout = status.rollout
        if not rollout.owns_predictor or rollout.promotion_complete:
            return
        tick = Tick(name=observed.name, namespace=observed.namespace, uid=observed.uid,
                    generation=observed.generation, spec=None, status=status,  # type: ignore[arg-type]
                    clients=memo.clients, now=observed.now)
        restore_teacher(tick)
        logger.info("deleted mid-rollout: the teacher serves 100%% of traffic again")
