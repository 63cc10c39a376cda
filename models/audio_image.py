r"""Two towers for sound and pictures: a log-mel CNN for audio, a CNN for images.

Input and output::

    batch: AudioImageBatch (scicontrast.data_adapters.audio_image.pairs)
        audio   [A, T]           waveforms at ``sample_rate``
        images  [I, C, S, S]     images in [0, 1]
        is_audio [M]             which output rows are audio (M = A + I)
    h: [M, embedding_dim]        row m embeds input row m, whichever tower it went through

Both towers end in a linear layer to the same ``embedding_dim``, so their outputs live in
one space; the shared projection head and the symmetric InfoNCE (CLIP, Radford et al. 2021)
on top of them are built by :mod:`scicontrast.models.contrastive`.

**Log-mel spectrogram** (:class:`LogMelSpectrogram`; torchaudio is not needed). With a
periodic Hann window ``w`` of ``n_fft`` samples, hop ``H``, and the signal reflect-padded by
``n_fft / 2`` on both sides (``torch.stft(center=True)``), the power spectrogram is
``P[k, t] = |sum_n x[tH + n] w[n] exp(-2 pi i k n / n_fft)|^2`` for the
``K = n_fft / 2 + 1`` bins ``f_k = k * sample_rate / n_fft``. The mel scale is HTK's,
``mel(f) = 2595 log10(1 + f / 700)``; ``n_mels + 2`` points ``m_0 < ... < m_{n_mels+1}``
equally spaced in mel from ``f_min`` to ``f_max``, back in Hz ``g_0 .. g_{n_mels+1}``, give
triangular filters

.. math::

    F[k, j] = \max\Big(0, \min\Big(\frac{f_k - g_j}{g_{j+1} - g_j},
                                 \frac{g_{j+2} - f_k}{g_{j+2} - g_{j+1}}\Big)\Big),
    \qquad j = 0 .. n_{mels} - 1,

which peak at 1 on ``g_{j+1}`` (``torchaudio.functional.melscale_fbanks`` with
``mel_scale="htk", norm=None``). ``norm="slaney"`` scales filter ``j`` by
``2 / (g_{j+2} - g_j)`` so that every filter has the same area. The output is
``log(F^T P + eps)``, ``[B, n_mels, frames]`` with ``frames = 1 + T // H``.

**Audio tower.** The log-mel image of each clip is standardised: with
``spectrogram_norm="clip"`` by its own mean and standard deviation over all bins and frames,
which removes the recording gain; with ``"band"`` each mel band by its mean and standard
deviation over the clip's frames (cepstral mean and variance normalisation, Viikki & Laurila
1998), which also removes a fixed coloration of the spectrum, such as one microphone's
frequency response or one room's, since a filter multiplies every frame's spectrum by the
same gain per band. Then
:class:`ConvTower`. In training mode, SpecAugment's masks (Park et al., Interspeech 2019)
may hide one band of up to ``freq_mask`` mel bands and one stretch of up to ``time_mask``
frames of each clip (set to 0, the clip's mean after standardisation), so that no single
band or moment, say one speaker's formant, decides. With ``vtlp = w > 0``, vocal tract
length perturbation (Jaitly & Hinton, ICML 2013 workshop) warps each training clip's
frequency axis by a factor ``alpha ~ U[1 - w, 1 + w]``, as a shorter or longer vocal tract
moves every formant by the same ratio while the tempo and the pitch contour stay: bin
``f_k``'s power is counted at

.. math::

    f'_k = \begin{cases} \alpha f_k & f_k \le b \\
        N - \frac{N - \alpha b}{N - b} (N - f_k) & f_k > b \end{cases},
    \qquad b = 0.8\, N \min(\alpha, 1) / \alpha,

with ``N = sample_rate / 2``: linear up to the boundary ``b``, then the straight line to
``(N, N)``, so the whole band stays covered; the mel filters are applied at ``f'_k``
instead of ``f_k``. The masks and warp factors are drawn from torch's generator, which
training checkpoints, so a resumed run draws the same ones.
**Image tower.** :class:`ConvTower` on the images.

**ConvTower.** ``len(channels)`` stages of ``Conv3x3 -> BatchNorm -> ReLU``, each striding
by 2, then an adaptive average pool to a ``pool = (rows, cols)`` grid, flattened, and a
linear layer to ``embedding_dim``. The grid keeps coarse position: for a spectrogram,
``pool = (bands, 1)`` averages over time but keeps which frequency band a pattern sits in
(a tone's pitch); for an image, ``(4, 4)`` keeps the layout of a shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scicontrast.errors import ConfigError
from scicontrast.registry import ENCODERS

MEL_NORMS = (None, "slaney")
SPECTROGRAM_NORMS = ("clip", "band")
# The fraction of the Nyquist frequency below which a VTLP warp is a pure scaling (for
# alpha <= 1): formants F1-F3 of speech lie below it at 8 kHz and above.
VTLP_BOUNDARY = 0.8


def hz_to_mel(frequency: Tensor | float) -> Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(frequency, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    norm: str | None = None,
    bins: Tensor | None = None,
) -> Tensor:
    """Triangular mel filters ``float32 [..., n_freqs, n_mels]`` (module docstring).

    ``n_freqs`` is ``n_fft // 2 + 1``; ``f_max`` defaults to the Nyquist frequency. ``bins``
    (``[..., n_freqs]`` Hz) evaluates the filters at other frequencies than the bins' own,
    one filterbank per leading index (a VTLP warp, :func:`vtlp_warp`).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(
            f"mel filterbank: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, "
            f"f_max={f_max}, sample_rate={sample_rate}"
        )
    if norm not in MEL_NORMS:
        raise ConfigError(f"mel filterbank: norm must be one of {MEL_NORMS}, got {norm!r}")
    if bins is None:
        bins = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    points = mel_to_hz(torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    points = points.to(bins.device)
    lower, centre, upper = points[:-2], points[1:-1], points[2:]
    frequencies = bins.double()[..., None]
    rising = (frequencies - lower) / (centre - lower)
    falling = (upper - frequencies) / (upper - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (upper - lower))
    return filters.float()


def vtlp_warp(frequencies: Tensor, alpha: Tensor, nyquist: float) -> Tensor:
    """VTLP's piecewise-linear warp ``[K]`` x ``[B]`` -> ``[B, K]`` Hz (module docstring)."""
    alpha = alpha.double()[:, None]
    frequencies = frequencies.double()[None, :]
    boundary = VTLP_BOUNDARY * nyquist * torch.clamp(alpha, max=1.0) / alpha
    above = nyquist - (nyquist - alpha * boundary) / (nyquist - boundary) * (nyquist - frequencies)
    return torch.where(frequencies <= boundary, alpha * frequencies, above)


class LogMelSpectrogram(nn.Module):
    """Waveforms ``[B, T]`` -> log-mel spectrograms ``[B, n_mels, 1 + T // hop_length]``.

    Args:
        sample_rate: Of the input (Hz).
        n_fft: FFT size and window length (samples).
        hop_length: Samples between frames.
        n_mels: Mel bands.
        f_min, f_max: Frequency range of the filters (Hz); ``f_max=None`` is Nyquist.
        norm: ``None`` (filters peak at 1) or ``"slaney"`` (equal area).
        eps: Added before the logarithm, so silence stays finite.
    """

    window: Tensor
    filters: Tensor

    def __init__(
        self,
        sample_rate: int = 8000,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        norm: str | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.eps = eps
        self.n_mels = n_mels
        self.f_min, self.f_max, self.norm = f_min, f_max, norm
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "filters",
            mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max, norm),
            persistent=False,
        )

    def forward(self, waveforms: Tensor, warp: Tensor | None = None) -> Tensor:
        """``warp`` (``[B]``, optional): each clip's VTLP factor ``alpha``."""
        if waveforms.dim() != 2:
            raise ValueError(f"expected waveforms [B, T], got {list(waveforms.shape)}")
        # The FFT and the logarithm of small powers need full precision (no bf16 autocast).
        with torch.autocast(waveforms.device.type, enabled=False):
            spectrum = torch.stft(
                waveforms.float(),
                self.n_fft,
                hop_length=self.hop_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            power = spectrum.real.square() + spectrum.imag.square()
            if warp is None:
                return torch.log(torch.einsum("bkt,km->bmt", power, self.filters) + self.eps)
            nyquist = self.sample_rate / 2
            bins = torch.linspace(
                0, nyquist, self.n_fft // 2 + 1, dtype=torch.float64, device=power.device
            )
            filters = mel_filterbank(
                len(bins),
                self.n_mels,
                self.sample_rate,
                self.f_min,
                self.f_max,
                self.norm,
                bins=vtlp_warp(bins, warp.to(power.device), nyquist),
            )
            return torch.log(torch.einsum("bkt,bkm->bmt", power, filters) + self.eps)


class ConvTower(nn.Module):
    """Strided CNN, pooled to a coarse grid, then linear (module docstring).

    Input ``[B, in_channels, H, W]``, output ``[B, embedding_dim]``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: list[int] | tuple[int, ...],
        pool: list[int] | tuple[int, int],
        embedding_dim: int,
    ) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        layers: list[nn.Module] = []
        for i in range(len(channels)):
            layers += [
                # The bias would be cancelled by the BatchNorm that follows.
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.AdaptiveAvgPool2d(tuple(pool)))
        self.trunk = nn.Sequential(*layers)
        self.output = nn.Linear(channels[-1] * math.prod(pool), embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.trunk(x).flatten(1))


@ENCODERS.register("two_tower")
class TwoTowerEncoder(nn.Module):
    """Audio (log-mel CNN) and image (CNN) towers into one embedding space.

    Args:
        embedding_dim: Output size of both towers.
        sample_rate: Audio rate the log-mel front end expects (the adapter's
            ``sample_rate``; checked on every batch).
        n_fft, hop_length, n_mels, f_min, f_max, mel_norm: :class:`LogMelSpectrogram`.
        audio_channels: Channels of the audio tower's stages.
        audio_pool: ``(mel bands, frames)`` grid the audio features are pooled to.
        image_in_channels: Image channels (the adapter's ``channels``).
        image_channels: Channels of the image tower's stages.
        image_pool: ``(rows, cols)`` grid the image features are pooled to.
        freq_mask, time_mask: Widest SpecAugment masks in training (0: none).
        spectrogram_norm: Standardise each clip's log-mel image as a whole (``"clip"``) or
            each mel band on its own (``"band"``); see the module docstring.
        vtlp: Widest VTLP warp in training, ``alpha ~ U[1 - vtlp, 1 + vtlp]`` (0: none;
            below 0.5).
    """

    def __init__(
        self,
        embedding_dim: int = 64,
        sample_rate: int = 8000,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_norm: str | None = None,
        audio_channels: list[int] | tuple[int, ...] = (16, 32, 64),
        audio_pool: list[int] | tuple[int, int] = (4, 1),
        image_in_channels: int = 1,
        image_channels: list[int] | tuple[int, ...] = (16, 32, 64),
        image_pool: list[int] | tuple[int, int] = (4, 4),
        freq_mask: int = 0,
        time_mask: int = 0,
        spectrogram_norm: str = "clip",
        vtlp: float = 0.0,
    ) -> None:
        super().__init__()
        for key, value in (
            ("embedding_dim", embedding_dim),
            ("sample_rate", sample_rate),
            ("n_fft", n_fft),
            ("hop_length", hop_length),
            ("n_mels", n_mels),
            ("image_in_channels", image_in_channels),
        ):
            _check_positive_int(key, value)
        for key, value in (("freq_mask", freq_mask), ("time_mask", time_mask)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"encoder two_tower: {key} must be an integer >= 0, not {value!r}"
                )
        for key, entries, length in (
            ("audio_channels", audio_channels, None),
            ("image_channels", image_channels, None),
            ("audio_pool", audio_pool, 2),
            ("image_pool", image_pool, 2),
        ):
            if not isinstance(entries, (list, tuple)) or not entries:
                raise ConfigError(f"encoder two_tower: {key} must be a non-empty list")
            if length is not None and len(entries) != length:
                raise ConfigError(f"encoder two_tower: {key} must have {length} entries")
            for entry in entries:
                _check_positive_int(key, entry)
        if spectrogram_norm not in SPECTROGRAM_NORMS:
            raise ConfigError(
                f"encoder two_tower: spectrogram_norm must be one of {SPECTROGRAM_NORMS}, "
                f"not {spectrogram_norm!r}"
            )
        if isinstance(vtlp, bool) or not isinstance(vtlp, (int, float)) or not 0 <= vtlp < 0.5:
            raise ConfigError(f"encoder two_tower: vtlp must be a number in [0, 0.5), not {vtlp!r}")
        self.vtlp = float(vtlp)
        self.embedding_dim = embedding_dim
        self.sample_rate = sample_rate
        # The axes each clip's statistics are taken over: all bins and frames, or frames only.
        self.norm_dims = (1, 2) if spectrogram_norm == "clip" else (2,)
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self.log_mel = LogMelSpectrogram(
            sample_rate, n_fft, hop_length, n_mels, f_min, f_max, mel_norm
        )
        self.audio = ConvTower(1, audio_channels, audio_pool, embedding_dim)
        self.image = ConvTower(image_in_channels, image_channels, image_pool, embedding_dim)

    def embed_audio(self, waveforms: Tensor) -> Tensor:
        """``[A, T]`` -> ``[A, embedding_dim]``."""
        warp = None
        if self.training and self.vtlp > 0:
            warp = 1.0 + self.vtlp * (2.0 * torch.rand(waveforms.shape[0]) - 1.0)
        spectrogram = self.log_mel(waveforms, warp)
        mean = spectrogram.mean(dim=self.norm_dims, keepdim=True)
        std = spectrogram.std(dim=self.norm_dims, keepdim=True)
        standardised = (spectrogram - mean) / (std + 1e-5)
        if self.training:
            standardised = standardised * self._keep_mask(standardised)
        return self.audio(standardised.unsqueeze(1))

    def _keep_mask(self, spectrogram: Tensor) -> Tensor:
        """``[A, n_mels, frames]``: 0 inside each clip's random band and stretch, else 1."""
        count, bands, frames = spectrogram.shape
        keep = torch.ones_like(spectrogram)
        for axis, widest, size in ((1, self.freq_mask, bands), (2, self.time_mask, frames)):
            if widest == 0:
                continue
            width = torch.randint(0, min(widest, size) + 1, (count, 1))
            start = (torch.rand(count, 1) * (size - width + 1)).long()
            position = torch.arange(size)[None, :]
            hidden = ((position >= start) & (position < start + width)).to(spectrogram.device)
            keep = keep * (~hidden).to(spectrogram.dtype).unsqueeze(3 - axis)
        return keep

    def embed_images(self, images: Tensor) -> Tensor:
        """``[I, C, S, S]`` -> ``[I, embedding_dim]``."""
        return self.image(images)

    def forward(self, batch) -> Tensor:
        if batch.sample_rate != self.sample_rate:
            raise ValueError(
                f"two_tower: audio at {batch.sample_rate} Hz but the encoder expects "
                f"{self.sample_rate} Hz; set encoder params.sample_rate to the adapter's"
            )
        is_audio = batch.is_audio
        n_audio = int(batch.audio.shape[0])
        if int(is_audio.sum()) != n_audio or len(is_audio) - n_audio != batch.images.shape[0]:
            raise ValueError(
                f"two_tower: is_audio marks {int(is_audio.sum())} audio rows of {len(is_audio)}, "
                f"but the batch holds {n_audio} clips and {batch.images.shape[0]} images"
            )
        parts = []
        if batch.audio.shape[0]:
            parts.append(self.embed_audio(batch.audio))
        if batch.images.shape[0]:
            parts.append(self.embed_images(batch.images))
        stacked = torch.cat(parts) if parts else batch.audio.new_zeros(0, self.embedding_dim)
        # Output row m takes the next audio embedding if it is an audio row, else the next
        # image embedding: the inverse of "audio rows first, then image rows".
        sources = torch.empty(len(is_audio), dtype=torch.long, device=is_audio.device)
        sources[is_audio] = torch.arange(n_audio, device=is_audio.device)
        sources[~is_audio] = n_audio + torch.arange(len(is_audio) - n_audio, device=is_audio.device)
        return stacked[sources]


def _check_positive_int(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"encoder two_tower: {key} must be a positive integer, not {value!r}")
