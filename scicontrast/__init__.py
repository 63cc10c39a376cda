"""scicontrast: scientific domain knowledge as contrastive training signal.

The package is split by stage: ``scicontrast.data_adapters`` reads raw data and builds
positive pairs, ``scicontrast.models`` holds encoders, the InfoNCE loss and the training
loop, ``scicontrast.analysis`` embeds, clusters and evaluates. This top-level package holds
what ties them together: configuration, component registries, file IO and the CLI.
"""

__version__ = "0.1.0"
