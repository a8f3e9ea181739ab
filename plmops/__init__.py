"""plmops: an MLOps platform for pre-trained language models in Chinese and China's minority languages."""

__version__ = "0.1.0"
