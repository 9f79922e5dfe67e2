"""Coloured noise and mixing at a signal-to-noise ratio (docs/spec.md, "Device figures").

The SNR of a noisy clip is ``10 log10(P_clip / P_noise)``, both powers the mean of the
squared samples over the whole clip as given (already padded or cut to 1 s). White
noise has a flat power spectrum, pink noise falls 3 dB per octave (power ∝ 1/f),
brown noise 6 dB per octave (∝ 1/f²).

Note on brown noise: with only the DC bin removed, most of its power lies at the
lowest frequencies a clip holds (for a 1 s clip, 97% below 20 Hz, the features'
mel floor, and 3% within 20-4000 Hz; pink noise: 37% and 56%). At a given SNR it
therefore masks far less of the speech band than white or pink noise does.
"""
import numpy as np

COLOURS = ("white", "pink", "brown")
# power spectrum ∝ 1 / f**k
EXPONENTS = {"white": 0, "pink": 1, "brown": 2}

# the noise report's fixed conditions (colour, SNR in dB) and seed: every model's
# report is measured on the same noisy clips
REPORT_CONDITIONS = (("white", 20), ("white", 10), ("white", 5), ("white", 0),
                     ("pink", 20), ("pink", 10), ("pink", 5), ("pink", 0))
REPORT_SEED = 1234

_CHUNK_ROWS = 256  # rows shaped per FFT: bounds the complex spectrum's memory


def _check_colour(colour):
    if colour not in EXPONENTS:
        raise ValueError(f"noise colour must be one of {', '.join(COLOURS)}, "
                         f"got {colour!r}")
    return EXPONENTS[colour]


def colored_noise(colour, length, rng, count=None):
    """Gaussian noise of one ``colour`` ("white", "pink" or "brown"), float32 of unit
    power (each realisation's mean square is 1).

    White Gaussian noise drawn from ``rng`` is shaped in the frequency domain: its
    rfft amplitudes are scaled by ``f ** (-k / 2)`` (k = 0, 1, 2: a power spectrum
    flat, ∝ 1/f, ∝ 1/f²), the DC bin is set to 0, and the irfft is normalised. For
    white noise (no shaping) zeroing the DC bin is subtracting the mean, done
    without the FFT.

    ``count=None`` gives one realisation ``[length]``; an integer ``count`` gives
    ``count`` independent ones ``[count, length]`` (drawn as consecutive rows from
    ``rng``: one call for ``count`` rows draws what ``count`` calls of one row do).
    """
    k = _check_colour(colour)
    length = int(length)
    if length < 2:
        raise ValueError(f"noise needs at least 2 samples, got {length}")
    rows = 1 if count is None else int(count)
    out = np.empty((rows, length), np.float32)
    if k:
        f = np.fft.rfftfreq(length)
        gain = np.zeros_like(f)
        gain[1:] = f[1:] ** (-k / 2.0)
        gain = gain.astype(np.float32)
    for start in range(0, rows, _CHUNK_ROWS):
        stop = min(rows, start + _CHUNK_ROWS)
        # float32 throughout (numpy >= 2 transforms float32 as complex64): half the
        # memory traffic; each realisation's power is still summed in float64
        white = rng.standard_normal((stop - start, length), dtype=np.float32)
        if k:
            shaped = np.fft.irfft(np.fft.rfft(white, axis=-1) * gain, n=length, axis=-1)
        else:
            shaped = white - white.mean(axis=-1, keepdims=True, dtype=np.float64
                                        ).astype(np.float32)
        out[start:stop] = shaped * (1.0 / np.sqrt(power(shaped)))[:, None].astype(np.float32)
    return out[0] if count is None else out


def power(x):
    """Mean of the squared samples over the last axis, accumulated in float64 (a
    float32 input is squared in float32: no float64 copy of a whole split)."""
    x = np.asarray(x)
    return np.mean(np.square(x), axis=-1, dtype=np.float64)


def snr_db(clip, noise):
    """``10 log10(P_clip / P_noise)`` over the last axis (inf for silent noise)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power(clip) / power(noise))


def mix_at_snr(clip, noise, snr_db):
    """``clip + noise * s``, with ``s`` chosen so that ``10 log10(P_clip / P_noise)``
    is ``snr_db``; both powers are the mean of the squared samples over the whole
    clip as given (already padded or cut to 1 s).

    ``clip`` and ``noise`` are ``[..., samples]`` of one shape; ``snr_db`` is a number
    or one per clip (shape ``[...]``). A silent clip (power 0) is returned unchanged:
    its SNR is undefined. The result is NOT clipped to [-1, 1]: callers decide (a
    16-bit recording saturates there; a measurement may want the exact SNR).
    Returns float32 (the powers are summed in float64). Raises ValueError
    for a silent noise mixed into a clip that is not silent.
    """
    clip = np.asarray(clip)
    noise = np.asarray(noise)
    if clip.shape != noise.shape:
        raise ValueError(f"clip {clip.shape} and noise {noise.shape} differ in shape")
    p_clip, p_noise = power(clip), power(noise)
    audible = p_clip > 0
    if np.any(audible & (p_noise == 0)):
        raise ValueError("cannot mix silent noise at an SNR")
    target = np.broadcast_to(np.asarray(snr_db, np.float64), p_clip.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(audible, np.sqrt(p_clip / (p_noise * 10.0 ** (target / 10.0))),
                         0.0)
    dtype = np.result_type(clip.dtype, noise.dtype, np.float32)
    mixed = (clip.astype(dtype, copy=False)
             + noise.astype(dtype, copy=False) * scale[..., None].astype(dtype))
    return mixed.astype(np.float32, copy=False)


def _zigzag(value):
    """A signed integer as a non-negative one (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...)."""
    return 2 * value if value >= 0 else -2 * value - 1


def condition_rng(colour, snr_db, seed):
    """The generator of one noise condition: seeded by ``(seed, colour index, SNR)``
    only, so a condition's noise is the same whichever other conditions are
    computed, and in which order. The SNR enters in thousandths of a dB."""
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    snr_key = _zigzag(int(round(float(snr_db) * 1000)))
    return np.random.default_rng([int(seed), COLOURS.index(colour), snr_key])


def noisy_split(clips, colour, snr_db, seed, saturate=True):
    """The fixed-seed noisy version of a whole split ``[n, samples]`` (float32): clip
    ``i`` mixed at ``snr_db`` with row ``i`` of ``colored_noise(colour, samples,
    condition_rng(colour, snr_db, seed), count=n)``.

    The same ``(clips, colour, snr_db, seed)`` always gives the same arrays, so noise
    reports of different models are measured on the same noisy clips. Silent clips
    stay silent. With ``saturate`` (the default) the result is clipped to [-1, 1], as
    a 16-bit recording (and the training augmentation) would hold it; the SNR then
    is exact for every clip whose mixture stays within full scale.
    """
    _check_colour(colour)
    clips = np.asarray(clips, np.float32)
    if clips.ndim != 2:
        raise ValueError(f"a split is [n, samples], got shape {clips.shape}")
    n, length = clips.shape
    if n == 0:
        return clips.copy()
    noise = colored_noise(colour, length, condition_rng(colour, snr_db, seed), count=n)
    mixed = mix_at_snr(clips, noise, snr_db)
    return np.clip(mixed, -1.0, 1.0) if saturate else mixed
