"""Grains: segmenting micrographs into grains, grain statistics, and the ``grains`` adapter."""
