"""LightningModules (autoencoder, classifier, FixMatch, SimCLR, BYOL) and the plain nn.Modules inside them."""

from lightning_modules.autoencoder import AutoencoderModule, ConvAutoencoder
from lightning_modules.classifier import BatchAugment, ClassifierModule
from lightning_modules.fixmatch import FixMatchModule, StrongAugment, flex_thresholds
from lightning_modules.ssl import BYOLModule, SimCLRModule, SimCLRViews

__all__ = [
    "AutoencoderModule",
    "BYOLModule",
    "BatchAugment",
    "ClassifierModule",
    "ConvAutoencoder",
    "FixMatchModule",
    "SimCLRModule",
    "SimCLRViews",
    "StrongAugment",
    "flex_thresholds",
]
