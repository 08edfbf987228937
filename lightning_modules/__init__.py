"""LightningModules (autoencoder, classifier) and the plain nn.Modules inside them."""

from lightning_modules.autoencoder import AutoencoderModule, ConvAutoencoder

__all__ = ["AutoencoderModule", "ConvAutoencoder"]
