"""Operator settings from `CROSSADAPT_OPERATOR_*` environment variables (the Helm chart sets them).

    CROSSADAPT_OPERATOR_PROJECTOR_ADDRESS=crossadapt-projector:50051
    CROSSADAPT_OPERATOR_PREDICTOR_ADDRESS=crossadapt-predictor:50056
    CROSSADAPT_OPERATOR_RECONCILE_INTERVAL_S=10
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from operators.modelswitch.clients import Clients, GrpcPredictor, GrpcServices, Service, Channels


class OperatorSettings(BaseSettings):
    """Where the services are, and how often each switch is reconciled."""

    model_config = SettingsConfigDict(env_prefix="CROSSADAPT_OPERATOR_", extra="forbid")

    projector_address: str = Field("crossadapt-projector:50051", min_length=1)
    sampler_address: str = Field("crossadapt-sampler:50052", min_length=1)
    offline_distiller_address: str = Field("crossadapt-offline-distiller:50053", min_length=1)
    online_codistiller_address: str = Field("crossadapt-online-codistiller:50054", min_length=1)
    drift_detector_address: str = Field("crossadapt-drift-detector:50055", min_length=1)
    predictor_address: str = Field("crossadapt-predictor:50056", min_length=1,
                                   description="The predictor's admin gRPC API (PredictorAdminService).")
    reconcile_interval_s: float = Field(10.0, gt=0, description="Seconds between two passes over one switch: "
                                        "also the longest a breached gate keeps student traffic.")
    rpc_timeout_s: float = Field(10.0, gt=0, description="Deadline of one gRPC call.")

    def addresses(self) -> dict[Service, str]:
        return {
            Service.PROJECTOR: self.projector_address,
            Service.SAMPLER: self.sampler_address,
            Service.OFFLINE_DISTILLER: self.offline_distiller_address,
            Service.ONLINE_CODISTILLER: self.online_codistiller_address,
            Service.DRIFT_DETECTOR: self.drift_detector_address,
            Service.PREDICTOR: self.predictor_address,
        }

    def grpc_clients(self) -> Clients:
        channels = Channels()
        return Clients(services=GrpcServices(self.addresses(), self.rpc_timeout_s, channels),
                       predictor=GrpcPredictor(self.predictor_address, self.rpc_timeout_s, channels))
