"""The built-in model cards.

Architectures live in `medge.zoo.cnn`, `medge.zoo.hybrid_vit` and `medge.zoo.ecg_net`; this
module only describes them.  Two small JSON files keep the measured facts next to the code:
``weights/metrics.json`` (written by ``scripts/train_demo_weights.py``: demo metric per model) and
``complexity.json`` (params/MACs from `medge.zoo.complexity`, checked by the zoo tests), so that
retraining updates the cards and ``medge zoo list`` never has to build a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medge.zoo.card import ModelCard

ZOO_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = ZOO_DIR / "weights"
METRICS_FILE = WEIGHTS_DIR / "metrics.json"
COMPLEXITY_FILE = ZOO_DIR / "complexity.json"

DEMO_NOTE = "DEMO weights trained on synthetic data - not for clinical use."
NO_WEIGHTS_NOTE = "No weights shipped: random initialisation only - load your own trained weights."

CXR_FINDINGS: tuple[str, ...] = ("effusion", "pneumothorax", "nodule", "cardiomegaly")
CHEXNET_LABELS: tuple[str, ...] = (
    "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening", "hernia",
)
STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
INPUT_LEADS: tuple[str, ...] = ("II", "V1", "V5")


def image_preprocessing(modality: str, size: int, mean: float, std: float) -> dict[str, Any]:
    """Image preprocessing block (schema in medge.common.metadata) for raw inputs in [0, 1]."""
    return {
        "kind": "image",
        "modality": modality,
        "channels": 1,
        "height": size,
        "width": size,
        "layout": "NCHW",
        "intensity": "unit",
        "window_center": None,
        "window_width": None,
        "mean": [mean],
        "std": [std],
    }


ECG_PREPROCESSING: dict[str, Any] = {
    "kind": "signal",
    "modality": "ECG",
    "leads": list(INPUT_LEADS),
    "sample_rate_hz": 500,
    "samples": 5000,
    "units": "mV",
    "layout": "NCL",
    "scale": 1.0,
}

# Raw inputs are in [0, 1]; fixed normalisation constants that the demo weights were trained with
# (close to the synthetic data's statistics; changing them requires retraining).
CXR_MEAN, CXR_STD = 0.5, 0.25
US_MEAN, US_STD = 0.25, 0.2


def _base_cards() -> list[dict[str, Any]]:
    return [
        dict(
            name="cxr-densenet121",
            family="DenseNet",
            task="multilabel-classification",
            modality="CR",
            description="Full DenseNet-121 in CheXNet layout: single-channel chest X-ray, 14 findings, sigmoid each.",
            input_name="image",
            input_shape=(1, 1, 224, 224),
            input_layout="NCHW",
            output_names=("probabilities",),
            output_shape=(1, 14),
            labels=CHEXNET_LABELS,
            preprocessing=image_preprocessing("CR", 224, CXR_MEAN, CXR_STD),
            factory="medge.zoo.cnn:chexnet_densenet121",
            synthetic_task="cxr",
            note=NO_WEIGHTS_NOTE,
        ),
        dict(
            name="cxr-densenet-tiny",
            family="DenseNet",
            task="multilabel-classification",
            modality="CR",
            description="Narrow DenseNet (growth 12) for chest X-ray findings on CPU/NPU-class devices.",
            input_name="image",
            input_shape=(1, 1, 224, 224),
            input_layout="NCHW",
            output_names=("probabilities",),
            output_shape=(1, 4),
            labels=CXR_FINDINGS,
            preprocessing=image_preprocessing("CR", 224, CXR_MEAN, CXR_STD),
            factory="medge.zoo.cnn:tiny_densenet",
            synthetic_task="cxr",
        ),
        dict(
            name="us-frame-screen",
            family="CNN",
            task="classification",
            modality="US",
            description="Ultrasound frame pre-screening: does this B-mode frame contain the structure/lesion?",
            input_name="image",
            input_shape=(1, 1, 128, 128),
            input_layout="NCHW",
            output_names=("probabilities",),
            output_shape=(1, 1),
            labels=("structure_present",),
            preprocessing=image_preprocessing("US", 128, US_MEAN, US_STD),
            factory="medge.zoo.cnn:frame_screen_cnn",
            synthetic_task="us-frame",
        ),
        dict(
            name="cxr-hybrid-vit",
            family="hybrid ViT",
            task="multilabel-classification",
            modality="CR",
            description="Conv stem + MobileViT-style transformer blocks for chest X-ray findings, sigmoid each.",
            input_name="image",
            input_shape=(1, 1, 224, 224),
            input_layout="NCHW",
            output_names=("probabilities",),
            output_shape=(1, 4),
            labels=CXR_FINDINGS,
            preprocessing=image_preprocessing("CR", 224, CXR_MEAN, CXR_STD),
            factory="medge.zoo.hybrid_vit:hybrid_vit",
            synthetic_task="cxr",
        ),
        dict(
            name="us-lesion-unet",
            family="U-Net",
            task="segmentation",
            modality="US",
            description="MONAI U-Net: B-mode ultrasound frame to a sigmoid lesion probability mask.",
            input_name="image",
            input_shape=(1, 1, 256, 256),
            input_layout="NCHW",
            output_names=("mask",),
            output_shape=(1, 1, 256, 256),
            labels=("lesion",),
            preprocessing=image_preprocessing("US", 256, US_MEAN, US_STD),
            factory="medge.zoo.cnn:lesion_unet",
            synthetic_task="us-seg",
        ),
        dict(
            name="ecg-3to12",
            family="1-D TCN",
            task="ecg-reconstruction",
            modality="ECG",
            description="Reconstruct the 12 standard ECG leads (mV) from leads II, V1, V5 (10 s at 500 Hz).",
            input_name="ecg",
            input_shape=(1, 3, 5000),
            input_layout="NCL",
            output_names=("leads",),
            output_shape=(1, 12, 5000),
            labels=STANDARD_LEADS,
            preprocessing=ECG_PREPROCESSING,
            factory="medge.zoo.ecg_net:ecg_lead_reconstructor",
            synthetic_task="ecg",
        ),
    ]


SMALL = 64  # side of the research architectures' demo inputs (CPU-minute training)


def _research_cards() -> list[dict[str, Any]]:
    """The research architectures users deploy (medvit, dct_vit, xlstm_unet, mamba_ecg, promptable)."""
    us_small = image_preprocessing("US", SMALL, US_MEAN, US_STD)
    return [
        dict(name="cxr-medvit-kan", family="MedViTV2-style (NA + KAN)", task="multilabel-classification",
             modality="CR", description="Conv stem, dilated neighbourhood attention (precomputed neighbour indices, "
             "relative-position bias) and FasterKAN MLPs; chest X-ray findings, sigmoid each.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW",
             output_names=("probabilities",), output_shape=(1, 4), labels=CXR_FINDINGS,
             preprocessing=image_preprocessing("CR", SMALL, CXR_MEAN, CXR_STD),
             factory="medge.zoo.medvit:medvit_style", factory_kwargs={"size": SMALL}, synthetic_task="cxr"),
        dict(name="us-dct-vit", family="DCT-HistoTransformer-style", task="classification", modality="US",
             description="MobileConv blocks + attention over low-band 2-D DCT coefficients (fixed-basis matmuls); "
             "ultrasound frame pre-screening.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW",
             output_names=("probabilities",), output_shape=(1, 1), labels=("structure_present",),
             preprocessing=us_small, factory="medge.zoo.dct_vit:dct_histo_style", factory_kwargs={"size": SMALL},
             synthetic_task="us-frame"),
        dict(name="us-xlstm-unet", family="xLSTM-UNet", task="segmentation", modality="US",
             description="U-Net with mLSTM bottleneck (parallel stabilised form, forward + reversed); "
             "ultrasound lesion mask.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW",
             output_names=("mask",), output_shape=(1, 1, SMALL, SMALL), labels=("lesion",),
             preprocessing=us_small, factory="medge.zoo.xlstm_unet:xlstm_unet", factory_kwargs={"size": SMALL},
             synthetic_task="us-seg"),
        dict(name="ecg-mamba-3to12", family="1D-CNN + Mamba", task="ecg-reconstruction", modality="ECG",
             description="Conv stem + Mamba blocks (chunked closed-form selective scan) reconstructing 12 leads "
             "from II, V1, V5.",
             input_name="ecg", input_shape=(1, 3, 5000), input_layout="NCL", output_names=("leads",),
             output_shape=(1, 12, 5000), labels=STANDARD_LEADS, preprocessing=ECG_PREPROCESSING,
             factory="medge.zoo.mamba_ecg:mamba_ecg", synthetic_task="ecg"),
        dict(name="ecg-mamba-3to12-step", family="1D-CNN + Mamba", task="ecg-reconstruction", modality="ECG",
             description="The Mamba blocks of ecg-mamba-3to12 as a recurrent step for streaming: one stem token "
             "(4 samples) with the conv window and scan state of every block as inputs and outputs (zeros at start).",
             input_name="token", input_shape=(1, 1, 32), input_layout="NLC",
             output_names=("token_out", "conv_state_out", "ssm_state_out"), output_shape=(1, 1, 32),
             labels=("token",), preprocessing={"kind": "embedding", "source": "ecg-mamba-3to12",
                                               "tensor": "stem tokens (B, 1250, 32), one per step"},
             factory="medge.zoo.mamba_ecg:mamba_ecg_step",
             extra_inputs=({"name": "conv_state", "shape": [1, 2, 64, 3], "dtype": "float32", "default": 0.0},
                           {"name": "ssm_state", "shape": [1, 2, 64, 8], "dtype": "float32", "default": 0.0}),
             note=MAMBA_SHARED_NOTE, weights_from="ecg-mamba-3to12"),
        dict(name="us-lesion-sam", family="promptable (SAM-style)", task="segmentation", modality="US",
             description="Image encoder + point prompt encoder + two-way mask decoder: lesion mask from one click "
             "(point = click (x, y) in [0, 1]); mask at the input size.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW", output_names=("mask",),
             output_shape=(1, 1, SMALL, SMALL), labels=("lesion",), preprocessing=us_small,
             factory="medge.zoo.promptable:promptable_segmenter", factory_kwargs={"size": SMALL},
             synthetic_task="us-seg", extra_inputs=(POINT_INPUT,)),
        dict(name="us-lesion-sam-encoder", family="promptable (SAM-style)", task="segmentation", modality="US",
             description="The image encoder of us-lesion-sam (run once per frame); shares its demo weights.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW",
             output_names=("embedding",), output_shape=(1, 64, SMALL // 8, SMALL // 8), labels=("lesion",),
             preprocessing=us_small, factory="medge.zoo.promptable:promptable_encoder",
             factory_kwargs={"size": SMALL}, synthetic_task="us-seg", note=SHARED_NOTE,
             weights_from="us-lesion-sam"),
        dict(name="us-lesion-sam-decoder", family="promptable (SAM-style)", task="segmentation", modality="US",
             description="The prompt/mask decoder of us-lesion-sam (run per click on the encoder's embedding).",
             input_name="embedding", input_shape=(1, 64, SMALL // 8, SMALL // 8), input_layout="NCHW",
             output_names=("mask",), output_shape=(1, 1, SMALL, SMALL), labels=("lesion",),
             preprocessing={"kind": "embedding", "source": "us-lesion-sam-encoder"},
             factory="medge.zoo.promptable:promptable_decoder", factory_kwargs={"size": SMALL},
             extra_inputs=(POINT_INPUT,), note=SHARED_NOTE, weights_from="us-lesion-sam"),
        dict(name="us-swinunetr", family="MONAI SwinUNETR (2-D)", task="segmentation", modality="US",
             description="MONAI SwinUNETR, 2-D, sigmoid lesion mask; bring your own weights.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW", output_names=("mask",),
             output_shape=(1, 1, SMALL, SMALL), labels=("lesion",), preprocessing=us_small,
             factory="medge.zoo.monai_segmenters:swinunetr_2d", synthetic_task="us-seg", note=NO_WEIGHTS_NOTE),
        dict(name="us-mednext", family="MONAI MedNeXt (2-D)", task="segmentation", modality="US",
             description="MONAI MedNeXt-S, 2-D, sigmoid lesion mask; bring your own weights.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW", output_names=("mask",),
             output_shape=(1, 1, SMALL, SMALL), labels=("lesion",), preprocessing=us_small,
             factory="medge.zoo.monai_segmenters:mednext_2d", synthetic_task="us-seg", note=NO_WEIGHTS_NOTE),
        dict(name="us-unetr", family="MONAI UNETR (2-D)", task="segmentation", modality="US",
             description="MONAI UNETR (ViT encoder), 2-D, sigmoid lesion mask; bring your own weights.",
             input_name="image", input_shape=(1, 1, SMALL, SMALL), input_layout="NCHW", output_names=("mask",),
             output_shape=(1, 1, SMALL, SMALL), labels=("lesion",), preprocessing=us_small,
             factory="medge.zoo.monai_segmenters:unetr_2d", synthetic_task="us-seg", note=NO_WEIGHTS_NOTE),
    ]


POINT_INPUT: dict[str, Any] = {"name": "point", "shape": [1, 1, 2], "dtype": "float32", "default": [[0.5, 0.5]]}
SHARED_NOTE = "DEMO weights (shared with us-lesion-sam) trained on synthetic data - not for clinical use."
MAMBA_SHARED_NOTE = "DEMO weights (shared with ecg-mamba-3to12) trained on synthetic data - not for clinical use."


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def load_cards() -> list[ModelCard]:
    """Build every card, filling in weights/demo metric/complexity from the shipped files."""
    metrics = _read_json(METRICS_FILE)
    complexity = _read_json(COMPLEXITY_FILE)
    cards = []
    for spec in _base_cards() + _research_cards():
        name = spec["name"]
        weights_file = WEIGHTS_DIR / f"{name}.safetensors"
        has_weights = weights_file.is_file()
        shares = spec.get("weights_from")
        if shares:  # the factory loads the whole model's weights itself
            metrics.setdefault(name, metrics.get(shares))
        cost = complexity.get(name, {})
        cards.append(
            ModelCard(
                **spec,
                weights=weights_file.name if has_weights else None,
                demo_metric=metrics.get(name) if has_weights or shares else None,
                params=cost.get("params"),
                macs=cost.get("macs"),
            )
        )
    return cards
