"""Transfer engine: embedding projection, strategic sampling, distillation, drift and replay (paper §3)."""

from crossadapt.transfer.drift import DriftConfig
from crossadapt.transfer.drift import DriftReport
from crossadapt.transfer.drift import FeatureDrift
from crossadapt.transfer.drift import HistogramBinner
from crossadapt.transfer.drift import js_divergence
from crossadapt.transfer.drift import kl_divergence
from crossadapt.transfer.drift import measure_drift
from crossadapt.transfer.drift import wasserstein_1d
from crossadapt.transfer.projection import Projection
from crossadapt.transfer.projection import ProjectionReport
from crossadapt.transfer.projection import ProjectionStats
from crossadapt.transfer.projection import fit_projection
from crossadapt.transfer.projection import project_model_embeddings
from crossadapt.transfer.projection import project_table
from crossadapt.transfer.replay import ReplayConfig
from crossadapt.transfer.replay import ReplayController
from crossadapt.transfer.replay import ReplayHistoryEntry
from crossadapt.transfer.replay import replay_ratio
from crossadapt.transfer.sampling import BlockReport
from crossadapt.transfer.sampling import PcvrSample
from crossadapt.transfer.sampling import SampleReport
from crossadapt.transfer.sampling import SampleResult
from crossadapt.transfer.sampling import SamplingConfig
from crossadapt.transfer.sampling import StrategicSampler
from crossadapt.transfer.sampling import assemble_pcvr_sample
from crossadapt.transfer.sampling import augment_unclicked
