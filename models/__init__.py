"""Encoders, the InfoNCE loss and the training loop.

``scicontrast.models.nt_xent(z1, z2, temperature)`` is the fastest exact NT-Xent in the
package (the chunked form of :mod:`scicontrast.models.chunked_loss`), for outside harnesses.
"""

from scicontrast.models.chunked_loss import nt_xent

__all__ = ["nt_xent"]
