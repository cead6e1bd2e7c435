"""Suite-wide set-up. Runs before any test module imports torch."""

import os

# Same reason as in crossadapt/__init__.py: spinning OpenMP threads starve everything else on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ---- real servers the platform tests share (started once per run, only if a test asks) -----------
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The platform harness (`platform_stack`, `worker_hooks`) is importable from every test folder.
sys.path.insert(0, str(Path(__file__).parent / "platform"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real redis-server on a free loopback port."""
    from services.local.stack import RedisServer

    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real S3 server (SeaweedFS `weed mini`) on 127.0.0.1."""
    from services.local.stack import SeaweedS3

    server = SeaweedS3.start(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()
