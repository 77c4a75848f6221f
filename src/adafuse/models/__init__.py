"""Networks: backbones with temporal slots, the recognizer, and ``build_model``."""

from adafuse.models import bninception, efficientnet, mobilenet, resnet  # noqa: F401  (registers the backbones)
from adafuse.models._registry import BackboneSpec, get_backbone, list_backbones, register_backbone
from adafuse.models.arnet import ARNet
from adafuse.models.builder import (
    METHODS,
    MethodSpec,
    build_from_config,
    build_model,
    get_method,
    load_pretrained,
)
from adafuse.models.config import ModelConfig
from adafuse.models.recognizer import Recognizer
from adafuse.models.weights import LoadReport

__all__ = [
    "METHODS",
    "ARNet",
    "BackboneSpec",
    "LoadReport",
    "MethodSpec",
    "ModelConfig",
    "Recognizer",
    "build_from_config",
    "build_model",
    "get_backbone",
    "get_method",
    "list_backbones",
    "load_pretrained",
    "register_backbone",
]
