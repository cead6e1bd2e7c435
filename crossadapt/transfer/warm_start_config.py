"""The cross-domain warm start's settings, apart from its models (crossadapt.transfer.warm_start): pydantic only,
so a process that validates a switch config does not load torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from crossadapt.models.spec import FeatureSpec


class WarmStartConfig(BaseModel):
    """Which levels run and how the two source models are trained (crossadapt.transfer.warm_start's docstring)."""

    model_config = ConfigDict(extra="forbid")

    embeddings: bool = Field(True, description="(a) the tiny source model's embeddings as target features.")
    parameters: bool = Field(True, description="(b) the complete source model's parameters as the initialisation.")
    batch_norm: bool = Field(True, description="(c) batch-norm statistics re-initialised for the target.")
    embedding_fields: list[str] = Field(default_factory=lambda: ["user"], min_length=1,
                                        description="Fields the domains share whose source embeddings become features.")
    tiny_dim: PositiveInt = Field(4, description="Width of the tiny source model (its embeddings' width).")
    tiny_hidden_units: list[PositiveInt] = Field(default_factory=lambda: [32])
    tiny_epochs: PositiveInt = 1
    complete_epochs: PositiveInt = 1
    complete_share: float = Field(1.0, gt=0.0, le=1.0, description="Most recent share of the source rows the "
                                  "complete model trains on (the paper's short-term data).")
    batch_norm_rows: int = Field(8192, ge=0, description="Target training rows that re-estimate the batch-norm "
                                 "statistics after the reset (0: reset only).")

    @model_validator(mode="after")
    def _some_level(self) -> "WarmStartConfig":
        if not (self.embeddings or self.parameters or self.batch_norm):
            raise ValueError("a warm start needs at least one of embeddings, parameters, batch_norm")
        return self

    def check_fields(self, spec: FeatureSpec) -> None:
        """Raise if an ``embedding_fields`` entry is not a categorical field of ``spec``."""
        names = [f.name for f in spec.categorical]
        unknown = [name for name in self.embedding_fields if name not in names]
        if self.embeddings and unknown:
            raise ValueError(f"warm_start.embedding_fields {unknown} are not categorical fields of the data {names}")
