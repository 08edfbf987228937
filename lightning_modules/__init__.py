"""LightningModules (autoencoder, classifier, FixMatch, SimCLR) and the plain nn.Modules inside them."""

from lightning_modules.autoencoder import AutoencoderModule, ConvAutoencoder
from lightning_modules.classifier import BatchAugment, ClassifierModule
from lightning_modules.fixmatch import FixMatchModule, StrongAugment, flex_thresholds
from lightning_modules.ssl import SimCLRModule, SimCLRViews

__all__ = [
    "AutoencoderModule",
    "BatchAugment",
    "ClassifierModule",
    "ConvAutoencoder",
    "FixMatchModule",
    "SimCLRModule",
    "SimCLRViews",
    "StrongAugment",
    "flex_thresholds",
]
