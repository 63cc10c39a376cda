"""Encoders, the InfoNCE loss and the training loop."""
