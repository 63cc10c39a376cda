"""Classical features: what a scientist computes in ten lines, the bar an embedding must clear.

Every evaluation scores these beside the learned embedding, on the same splits and with the
same probe, kNN and clustering (``scicontrast.analysis.baselines``). A pair builder declares
its domain's features in :meth:`~scicontrast.data_adapters.base.PairBuilder.classical_features`;
the built-in ones use the functions below.

- **k-mer frequencies** (DNA; tetranucleotide frequencies, TNF, for k = 4, the classic
  genome-binning signature, Teeling et al., BMC Bioinformatics 5:163, 2004). Per window
  ``x``, ``f_w(x) = n_w(x) / sum_v n_v(x)`` over the overlapping words ``w`` of ``ACGT^k``
  (words with ambiguity codes or padding are not counted). *Canonical*: a word and its
  reverse complement are one dimension (``n_w + n_rc(w)``, a palindrome counted once), so the
  feature is the same on both strands. Each dimension is then z-scored over the items.
- **Multi-scale rotation-invariant uniform LBP** (images; Ojala, Pietikäinen & Mäenpää,
  IEEE TPAMI 24:971, 2002): ``skimage.feature.local_binary_pattern(method="uniform")`` at
  ``(P, R) = (8, 1), (16, 2), (24, 3)``, one normalised histogram of the ``P + 2`` codes per
  scale, concatenated (54 numbers), on the grey image.
- **Raw pixels**: the grey image resized to 32 x 32 with anti-aliasing, flattened.
- **SGC features** (graphs; Wu et al., "Simplifying Graph Convolutional Networks", ICML 2019):
  ``S^k X`` with ``S = D^-1/2 (A + I) D^-1/2`` (PyG's ``gcn_norm``), no training; and
  **PPR features**, the same smoothing with APPNP's teleport back to ``X`` (personalized
  PageRank, Gasteiger et al., ICLR 2019: teleport 0.1, 10 hops), which reaches further.
- **MFCCs** (audio): mean and standard deviation over frames of the first 13 mel-frequency
  cepstral coefficients (log mel power spectrum, 40 triangular filters, DCT-II).

Features that cannot be computed (an image smaller than the largest LBP radius allows, a
graph without informative node features, windows shorter than ``k``) come back as a
:class:`ClassicalFeatures` with ``skipped`` saying why, never as an error.
"""

from __future__ import annotations

# scikit-learn, scikit-image and scipy.signal are imported where they are used: every DNA
# and graph step imports this module, and they would add about a second to each start.
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from scicontrast.data_adapters.dna.kmers import kmer_frequencies

LBP_SCALES = ((8, 1), (16, 2), (24, 3))
RAW_PIXELS_SIZE = 32
MFCC_COEFFICIENTS = 13
MEL_FILTERS = 40


@dataclass(frozen=True)
class ClassicalFeatures:
    """One classical feature set, ``features [N, F]`` in items order, or why it is missing."""

    name: str
    features: np.ndarray | None = None
    skipped: str | None = None

    def __post_init__(self) -> None:
        if (self.features is None) == (self.skipped is None):
            raise ValueError("ClassicalFeatures needs features or a reason for skipping, not both")


def zscore(features: np.ndarray) -> np.ndarray:
    """Each column minus its mean over rows, divided by its std; (numerically) constant
    columns become 0 (``StandardScaler`` leaves rounding noise undivided)."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))


def kmer_features(codes: np.ndarray, k: int, canonical: bool) -> ClassicalFeatures:
    """Z-scored k-mer frequencies (:func:`~scicontrast.data_adapters.dna.kmers.kmer_frequencies`)
    of windows given as codes ``uint8 [N, L]``."""
    strand = "canonical" if canonical else "strand-specific"
    name = f"{k}-mer frequencies ({strand})"
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] < k:
        return ClassicalFeatures(
            name, skipped=f"windows of {codes.shape[-1]} nt are shorter than k = {k}"
        )
    return ClassicalFeatures(name, zscore(kmer_frequencies(codes, k, canonical)))


def grey_image(image: np.ndarray) -> np.ndarray:
    """``float64 [H, W]`` in [0, 1] from a ``[C, H, W]`` image (uint8, or floats in [0, 1]),
    the mean over channels."""
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    return np.asarray(image, dtype=np.float64).mean(axis=0) / scale


def lbp_histograms(images: Iterable[np.ndarray], scales=LBP_SCALES) -> ClassicalFeatures:
    """Multi-scale rotation-invariant uniform LBP histograms of ``[C, H, W]`` images of any
    sizes (an ``[N, C, H, W]`` array, or a sequence)."""
    from skimage.feature import local_binary_pattern

    name = "multi-scale rotation-invariant LBP"
    radius = max(r for _, r in scales)
    rows = []
    for image in images:
        grey = grey_image(image)
        if min(grey.shape) < 2 * radius + 1:
            return ClassicalFeatures(
                name,
                skipped=f"images of {grey.shape[0]} x {grey.shape[1]} px are smaller than the "
                f"largest LBP radius ({radius} px) needs",
            )
        # LBP compares grey levels only by sign: 8-bit levels lose nothing and keep
        # scikit-image from warning about float input.
        quantised = np.round(grey * 255).astype(np.uint8)
        histograms = []
        for points, r in scales:
            codes = local_binary_pattern(quantised, points, r, method="uniform").astype(np.int64)
            counts = np.bincount(codes.ravel(), minlength=points + 2)
            histograms.append(counts / counts.sum())
        rows.append(np.concatenate(histograms))
    return ClassicalFeatures(name, np.stack(rows))


def raw_pixels(images: Iterable[np.ndarray], size: int = RAW_PIXELS_SIZE) -> ClassicalFeatures:
    """Grey ``[C, H, W]`` images resized to ``size x size`` with anti-aliasing, flattened:
    ``[N, size**2]``."""
    from skimage.transform import resize

    resized = [
        resize(grey_image(image), (size, size), anti_aliasing=True).ravel() for image in images
    ]
    return ClassicalFeatures(f"raw pixels {size}x{size}", np.stack(resized))


def propagated_features(
    features: torch.Tensor, edge_index: torch.Tensor, hops: int = 2, teleport: float = 0.0
) -> ClassicalFeatures:
    """``P^(hops)`` of ``P^(t+1) = (1 - teleport) S P^(t) + teleport X``, ``P^(0) = X``, for
    node features ``X [N, F]`` on the graph ``edge_index [2, E]``.

    ``teleport = 0`` gives SGC's ``S^hops X``; ``teleport > 0`` APPNP's truncated
    personalized PageRank (Gasteiger et al., ICLR 2019). Float64.
    """
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    name = (
        f"SGC features S^{hops} X"
        if teleport == 0
        else f"PPR features ({hops} hops, teleport {teleport:g})"
    )
    x0 = x = features.double()
    if x.shape[1] == 0 or bool((x == x[:1]).all()):
        return ClassicalFeatures(name, skipped="the graph has no informative node features")
    n = len(x)
    normalised, weight = gcn_norm(edge_index, num_nodes=n, add_self_loops=True, dtype=x.dtype)
    propagation = torch.sparse_coo_tensor(normalised, weight, (n, n), check_invariants=True)
    for _ in range(hops):
        x = (1 - teleport) * torch.sparse.mm(propagation, x) + teleport * x0
    return ClassicalFeatures(name, x.numpy())


def _mel_filterbank(sample_rate: int, n_fft: int, filters: int) -> np.ndarray:
    """Triangular filters ``[filters, n_fft // 2 + 1]`` evenly spaced on the mel scale."""

    def mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(sample_rate / 2), filters + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def mfcc_statistics(
    audio: np.ndarray, sample_rate: int, coefficients: int = MFCC_COEFFICIENTS
) -> ClassicalFeatures:
    """Mean and std over frames of the MFCCs of clips ``[N, samples]``: ``[N, 2 * coefficients]``.

    Frames of 25 ms every 10 ms (Hann window).
    """
    from scipy.fft import dct
    from scipy.signal import stft

    name = "MFCC statistics"
    audio = np.asarray(audio, dtype=np.float64)
    n_fft = round(0.025 * sample_rate)
    if audio.ndim != 2 or audio.shape[1] < n_fft:
        return ClassicalFeatures(
            name, skipped=f"clips shorter than one 25 ms frame ({n_fft} samples)"
        )
    hop = round(0.010 * sample_rate)
    _, _, spectrum = stft(audio, nperseg=n_fft, noverlap=n_fft - hop, boundary=None, padded=False)
    power = np.abs(spectrum) ** 2  # [N, frequencies, frames]
    filters = _mel_filterbank(sample_rate, n_fft, MEL_FILTERS)
    log_mel = np.log(np.einsum("mf,nft->nmt", filters, power) + 1e-10)
    cepstra = dct(log_mel, type=2, axis=1, norm="ortho")[:, :coefficients]
    return ClassicalFeatures(name, np.concatenate([cepstra.mean(axis=2), cepstra.std(axis=2)], 1))
