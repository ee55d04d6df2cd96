"""What a saved model is, as one typed record: :class:`ModelConfig` (``config.json``'s content).

Pure Python (no torch), so the command line reads a model's genes and geometry before the slow
imports. :func:`stmix._model_files.read_config` checks a file and builds the record;
:meth:`ModelConfig.to_json` is what :meth:`stmix.tl.Imputer.save` writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from stmix.errors import MissingKeyError

#: The layout of ``config.json``; files without one (stmix 0.1.0) have the same keys.
SCHEMA = 1


@dataclass(frozen=True)
class ModelConfig(Mapping):
    """Everything needed to rebuild a trained network and to know what it predicts.

    Read by attribute (``config.genes``) or, as the saved JSON object, by key
    (``config["genes"]``, ``config.get("head")``).
    """

    genes: list[str]
    backbone: str  # the timm model; for heads, the encoder that made the embedding
    kind: str = "image"  # "image" (takes patches) or "head" (takes an embedding)
    patch_size: int | None = None
    dropout: float = 0.2
    target: str = "expression"  # "expression" or "delta" (learns the deviation from the mean)
    augment: str | None = None
    layer: str | None = None
    best_epoch: int | None = None
    spot_scale: float = 1.0  # patch side / spot diameter
    spot_diameter_px: float | None = None
    microns_per_pixel: float | None = None
    spot_diameter_um: float | None = None
    weights_source: str | None = None
    backbone_kwargs: dict = field(default_factory=dict)
    head: str | None = None  # "linear", "mlp" or "ridge" (kind "head")
    use_rep: str | None = None
    in_features: int | None = None
    hidden: int = 256
    embedding: dict = field(default_factory=dict)  # how the embedding was made
    params: dict = field(default_factory=dict)  # the fit's settings
    uncertainty: dict = field(default_factory=dict)  # how its spread is made (calibration file)
    stain: dict = field(default_factory=dict)  # the stain normalisation of its patches
    scales: list = field(default_factory=lambda: [1.0])  # fields of view (kind "image")
    stmix_version: str = "0"
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> ModelConfig:
        """The config of a checked ``config.json`` object (keys stmix does not know are left)."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in record.items() if k in names}
        known.setdefault("schema", SCHEMA)
        for key in ("backbone_kwargs", "embedding", "params", "uncertainty", "stain"):
            if known.get(key) is None:
                known.pop(key, None)
        for key in ("hidden", "scales"):
            if known.get(key) is None:
                known.pop(key, None)
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``config.json`` holds."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise MissingKeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)
