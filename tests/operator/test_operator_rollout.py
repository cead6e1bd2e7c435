"""The real kopf operator against kmock's Kubernetes emulator, with in-memory services and predictor."""

from __future__ import annotations

import pytest

from operator_fakes import BROKEN, Platform
from operator_harness import (
    Emulator,
    add_switch,
    declare_resources,
    events,
    phase_is,
    running_operator,
    status,
    wait_for,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator)]


@pytest.fixture
def emulator(kmock: Emulator) -> Emulator:
    declare_resources(kmock)
    return kmock


async def test_happy_path_reaches_promoted(emulator: Emulator, platform: Platform) -> None:
    add_switch(emulator, "happy")
    async with running_operator(emulator, platform.clients()):
        await wait_for("Promoted", phase_is(emulator, "happy", "Promoted"))
        await wait_for("promotion complete", lambda: status(emulator, "happy")["rollout"].get("promotionComplete"))
    final = status(emulator, "happy")
    print(final)
    print([e["reason"] for e in events(emulator, "happy")])
    print(platform.predictor.calls)
