"""Redis restarted in the middle of a sampling: the operation still ends SUCCEEDED with the right sample.

Its own Redis (append-only, fsync always) so the restart disturbs no other test; SeaweedFS is the
suite's. A chain step lost in the restart (a task that failed outside its body) is re-sent by the
sampler server's stall watchdog from the recorded stage (services.common.watchdog).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from crossadapt.transfer.offline.distillation import cache_teacher_logits
from crossadapt.transfer.offline.sampling import SamplingConfig, StrategicSampler
from sampler_drift_fixtures import HOOK_TEXT, assert_same_rows, put_dataset, put_teacher, tiny_clicks, tiny_model, unique
from services.common.model_io import read_all
from services.common.proto import common_pb2, operations_pb2, sampler_pb2
from services.common.storage import DatasetStore, open_object_store
from services.local.stack import LocalPlatform, RedisServer, SeaweedS3

pytestmark = pytest.mark.slow
ROWS = 3_000
TERMINAL = (common_pb2.OPERATION_STATE_SUCCEEDED, common_pb2.OPERATION_STATE_FAILED,
            common_pb2.OPERATION_STATE_CANCELLED)


@pytest.fixture(scope="module")
def stack(seaweed: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, RedisServer]]:
    root = tmp_path_factory.mktemp("sampler-redis-restart")
    redis = RedisServer.start(tmp_path_factory.mktemp("sampler-redis"), persistent=True)
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOK_TEXT)
    flag = root / "slow.flag"
    flag.touch()  # every block report pauses: the restart lands while blocks are being scored
    platform = LocalPlatform.redis_s3(root / "stack", redis, seaweed, visibility_timeout_s="10", stall_s="4",
                                      shard_chunk_rows="64")
    platform.extra_env.update({"PYTHONPATH": str(hooks), "CROSSADAPT_TEST_SAMPLER_PAUSE_S": "0.1",
                               "CROSSADAPT_TEST_SLOW_FLAG": str(flag)})
    try:
        platform.start(workers=("r1",), servers=("sampler",), queue_names=("sampler",))
        yield platform, redis
    finally:
        platform.stop()
        redis.stop()


def _get(platform: LocalPlatform, operation_id: str):  # noqa: ANN202
    return platform.operations("sampler").GetOperation(
        operations_pb2.GetOperationRequest(operation_id=operation_id), timeout=10).operation


def test_redis_restarted_mid_sampling(stack) -> None:  # noqa: ANN001
    platform, redis = stack
    objects = open_object_store(platform.settings())
    dataset, teacher, sample = unique("clicks"), unique("teacher"), unique("sample")
    put_dataset(objects, dataset, tiny_clicks(ROWS, seed=1), partitions=3)
    put_teacher(objects, teacher, tiny_model(seed=2))
    request = sampler_pb2.StartSamplingRequest(
        dataset=common_pb2.DatasetRef(name=dataset), teacher=common_pb2.CheckpointRef(name=teacher),
        config=sampler_pb2.SamplingConfig(ratio=0.2, temporal_blocks=4, seed=7), sample_name=sample)
    operation = platform.stub("sampler").StartSampling(request, timeout=30).operation
    deadline = time.monotonic() + 60
    while _get(platform, operation.id).stage != "score":
        assert time.monotonic() < deadline, "the sampling never reached its blocks"
        time.sleep(0.05)
    redis.restart(down_s=1.0)
    deadline = time.monotonic() + 120
    while (current := _get(platform, operation.id)).state not in TERMINAL:
        assert time.monotonic() < deadline, f"the operation neither finished nor failed: {current}"
        time.sleep(0.3)
    assert current.state == common_pb2.OPERATION_STATE_SUCCEEDED, current.error
    data = tiny_clicks(ROWS, seed=1)
    rows = data.take(StrategicSampler(SamplingConfig(ratio=0.2, temporal_blocks=4, seed=7)).sample(
        data.label, data.timestamp).indices)
    assert_same_rows(read_all(DatasetStore(objects), sample), rows.with_teacher_logit(
        cache_teacher_logits(tiny_model(seed=2), rows, 8192)))
