"""Embeddings for selection: the paper's autoencoder, raw pixels + PCA, a timm backbone, or a file."""

from imgselect.embeddings.autoencoder import AutoencoderEmbedding
from imgselect.embeddings.backbone import BackboneEmbedding
from imgselect.embeddings.base import EmbedContext, Embedding, EmbedOutput
from imgselect.embeddings.file import FileEmbedding
from imgselect.embeddings.pixels import PixelsEmbedding
from imgselect.embeddings.ssl import PretrainedEmbedding, SSLEmbedding

__all__ = [
    "AutoencoderEmbedding",
    "BackboneEmbedding",
    "EmbedContext",
    "EmbedOutput",
    "Embedding",
    "FileEmbedding",
    "PixelsEmbedding",
    "PretrainedEmbedding",
    "SSLEmbedding",
]
