"""Names that identify the resource and the operator's marks on it."""

from __future__ import annotations

from enum import Enum

GROUP = "crossadapt.io"
VERSION = "v1alpha1"
PLURAL = "modelswitches"
KIND = "ModelSwitch"
SHORT_NAME = "msw"

#: kubectl annotate msw NAME crossadapt.io/action=promote|abort|retry; the operator removes it once handled.
ACTION_ANNOTATION = f"{GROUP}/action"
FINALIZER = f"{GROUP}/modelswitch"


class Phase(str, Enum):
    """Where a switch stands. Training phases run in order, then Shadow, Canary steps, and an end."""

    PENDING = "Pending"
    PROJECTING = "Projecting"
    SAMPLING = "Sampling"
    OFFLINE_DISTILLING = "OfflineDistilling"
    ONLINE_CODISTILLING = "OnlineCoDistilling"
    SHADOW = "Shadow"
    CANARY = "Canary"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    PAUSED = "Paused"


TRAINING_PHASES = (Phase.PROJECTING, Phase.SAMPLING, Phase.OFFLINE_DISTILLING, Phase.ONLINE_CODISTILLING)
ROLLOUT_PHASES = (Phase.SHADOW, Phase.CANARY)
#: Phases a switch only leaves through a user's action (retry, abort).
FINAL_PHASES = (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED)


class Action(str, Enum):
    """What the `crossadapt.io/action` annotation asks for."""

    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"
