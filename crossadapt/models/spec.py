"""What a model needs to know about the data: the fields and their vocabulary sizes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CategoricalField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    vocab_size: int = Field(gt=0, description="Rows in this field's table, <UNK> (id 0) included.")


class FeatureSpec(BaseModel):
    """The input layout shared by teacher and student (row i of a field's table is the same value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    categorical: tuple[CategoricalField, ...]
    numerical: tuple[str, ...] = ()

    @property
    def num_fields(self) -> int:
        """F: categorical fields plus numerical fields (each numerical field gets one vector)."""
        return len(self.categorical) + len(self.numerical)
