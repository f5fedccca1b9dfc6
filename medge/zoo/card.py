"""Model cards: what a zoo entry is, for whom, and how well its demo weights do."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    """Everything medge knows about a built-in model before building it."""

    name: str
    family: str  # e.g. "DenseNet", "U-Net", "hybrid ViT"
    task: str  # one of medge.common.metadata.TASKS
    modality: str  # DICOM modality code: CR, US, ECG
    description: str
    input_name: str
    input_shape: tuple[int, ...]  # batch 1
    input_layout: str  # NCHW or NCL
    output_names: tuple[str, ...]
    output_shape: tuple[int, ...]  # batch 1
    labels: tuple[str, ...]
    preprocessing: dict[str, Any]  # schema in medge.common.metadata
    factory: str  # "package.module:callable" returning an nn.Module
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # file name under medge/zoo/weights/, None: random init only
    synthetic_task: str | None = None  # generator in medge.calibration.synthetic for demo data
    demo_metric: dict[str, Any] | None = None  # {"name": "auroc", "value": 0.97, "n": 500, ...}
    params: int | None = None  # parameter count (medge.zoo.complexity.count_params)
    macs: int | None = None  # multiply-accumulates per batch-1 forward (count_macs)
    #: further inputs after the image, e.g. ({"name": "point", "shape": [1, 1, 2], "dtype": "float32",
    #: "default": [[0.5, 0.5]]},); `default` feeds them when a data source gives only images
    extra_inputs: tuple[dict[str, Any], ...] = ()
    note: str = "DEMO weights trained on synthetic data - not for clinical use."
    #: the zoo model whose shipped weights this card's factory loads itself (an encoder, decoder
    #: or recurrent step of that model); its demo metric is shown for this card too
    weights_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)
