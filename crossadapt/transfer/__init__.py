"""Transfer engine: embedding projection, strategic sampling, distillation, drift and replay (paper §3)."""

from typing import TYPE_CHECKING

from crossadapt.lazy import lazy_members

if TYPE_CHECKING:
    from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
    from crossadapt.transfer.offline.adaptive import AdaptiveKDController
    from crossadapt.transfer.experiments.baselines import BASELINES
    from crossadapt.transfer.experiments.baselines import BaselineConfig
    from crossadapt.transfer.experiments.baselines import BaselineResult
    from crossadapt.transfer.experiments.baselines import run_baseline
    from crossadapt.transfer.experiments.baselines import run_full_retrain
    from crossadapt.transfer.experiments.baselines import run_hint_kd
    from crossadapt.transfer.experiments.baselines import run_rkd
    from crossadapt.transfer.experiments.baselines import run_scratch
    from crossadapt.transfer.experiments.baselines import run_scratch_online
    from crossadapt.transfer.experiments.baselines import run_vanilla_kd
    from crossadapt.transfer.online.codistillation import AsymmetricTeacher
    from crossadapt.transfer.online.codistillation import CoDistiller
    from crossadapt.transfer.online.codistillation import OnlineCoDistillConfig
    from crossadapt.transfer.online.codistillation import OnlineCoDistillResult
    from crossadapt.transfer.online.codistillation import build_codistiller
    from crossadapt.transfer.online.codistillation import codistill_online
    from crossadapt.transfer.offline.distillation import DistillationTrainer
    from crossadapt.transfer.offline.distillation import OfflineDistillConfig
    from crossadapt.transfer.offline.distillation import OfflineDistillResult
    from crossadapt.transfer.offline.distillation import cache_teacher_logits
    from crossadapt.transfer.offline.distillation import distill_offline
    from crossadapt.transfer.drift.detector import DriftConfig
    from crossadapt.transfer.drift.detector import DriftReport
    from crossadapt.transfer.drift.detector import FeatureDrift
    from crossadapt.transfer.drift.detector import HistogramBinner
    from crossadapt.transfer.drift.detector import js_divergence
    from crossadapt.transfer.drift.detector import kl_divergence
    from crossadapt.transfer.drift.detector import measure_drift
    from crossadapt.transfer.drift.detector import wasserstein_1d
    from crossadapt.transfer.offline.losses import bce
    from crossadapt.transfer.offline.losses import hint_mse
    from crossadapt.transfer.offline.losses import kd_cross_entropy
    from crossadapt.transfer.offline.losses import kd_kl
    from crossadapt.transfer.offline.losses import rkd_angle
    from crossadapt.transfer.offline.losses import rkd_distance
    from crossadapt.transfer.projection import Projection
    from crossadapt.transfer.projection import ProjectionReport
    from crossadapt.transfer.projection import ProjectionStats
    from crossadapt.transfer.projection import fit_projection
    from crossadapt.transfer.projection import project_model_embeddings
    from crossadapt.transfer.projection import project_table
    from crossadapt.transfer.online.replay import ReplayConfig
    from crossadapt.transfer.online.replay import ReplayController
    from crossadapt.transfer.online.replay import ReplayHistoryEntry
    from crossadapt.transfer.online.replay import replay_ratio
    from crossadapt.transfer.offline.sampling import BlockReport
    from crossadapt.transfer.offline.sampling import PcvrSample
    from crossadapt.transfer.offline.sampling import SampleReport
    from crossadapt.transfer.offline.sampling import SampleResult
    from crossadapt.transfer.offline.sampling import SamplingConfig
    from crossadapt.transfer.offline.sampling import StrategicSampler
    from crossadapt.transfer.offline.sampling import assemble_pcvr_sample
    from crossadapt.transfer.offline.sampling import augment_unclicked

_HOMES = {
    **dict.fromkeys(('AdaptiveKDConfig', 'AdaptiveKDController'), 'offline.adaptive'),
    **dict.fromkeys(('BASELINES', 'BaselineConfig', 'BaselineResult', 'run_baseline', 'run_full_retrain', 'run_hint_kd', 'run_rkd', 'run_scratch', 'run_scratch_online', 'run_vanilla_kd'), 'experiments.baselines'),
    **dict.fromkeys(('AsymmetricTeacher', 'CoDistiller', 'OnlineCoDistillConfig', 'OnlineCoDistillResult', 'build_codistiller', 'codistill_online'), 'online.codistillation'),
    **dict.fromkeys(('DistillationTrainer', 'OfflineDistillConfig', 'OfflineDistillResult', 'cache_teacher_logits', 'distill_offline'), 'offline.distillation'),
    **dict.fromkeys(('DriftConfig', 'DriftReport', 'FeatureDrift', 'HistogramBinner', 'js_divergence', 'kl_divergence', 'measure_drift', 'wasserstein_1d'), 'drift.detector'),
    **dict.fromkeys(('bce', 'hint_mse', 'kd_cross_entropy', 'kd_kl', 'rkd_angle', 'rkd_distance'), 'offline.losses'),
    **dict.fromkeys(('Projection', 'ProjectionReport', 'ProjectionStats', 'fit_projection', 'project_model_embeddings', 'project_table'), 'projection'),
    **dict.fromkeys(('ReplayConfig', 'ReplayController', 'ReplayHistoryEntry', 'replay_ratio'), 'online.replay'),
    **dict.fromkeys(('BlockReport', 'PcvrSample', 'SampleReport', 'SampleResult', 'SamplingConfig', 'StrategicSampler', 'assemble_pcvr_sample', 'augment_unclicked'), 'offline.sampling'),
}
__getattr__ = lazy_members(__name__, _HOMES, globals())
