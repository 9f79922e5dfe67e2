"""The robustness report's perturbations: ways a user's audio differs from the
dataset's other than noise (level, word position, room, microphone, speaking rate,
vocal tract). The same functions are the training augmentation's talker, room and
microphone ingredients (``speech.Perturbation``), drawn there per example.

Each perturbation is a pure numpy function ``f(clips, rate, rng, **params)`` on a
batch of 1 s clips ``[n, samples]`` (float32) at ``rate`` Hz, returning a new batch
of the same shape; ``rng`` is used only by those that draw something per clip.
``CONDITIONS`` is the report's recipe as data: ``(name, function, params)``;
``perturb_split`` applies one condition with a generator seeded by ``REPORT_SEED``
and the condition's name only, so every model is measured on the same clips and a
condition's clips do not depend on which others are computed.

Every result is saturated to [-1, 1], as a 16-bit recording would hold it.
Reverberation, tilt and warp are scaled back to the clip's original RMS first, so
they measure colouring, not level; the telephone band passes its band at unity gain.
"""
import zlib

import numpy as np

from common.kws import audio

REPORT_SEED = 1818
_CHUNK = 64  # clips transformed at once: bounds the FFT temporaries' memory


def _saturate(x):
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _rms(x):
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True))


def _match_rms(y, x):
    """``y`` scaled to ``x``'s RMS, per clip (a silent ``y`` stays silent)."""
    ry, rx = _rms(y), _rms(x)
    return y * np.divide(rx, ry, out=np.zeros_like(ry), where=ry > 0)


def _chunks(clips, transform):
    """``transform(x, rows)`` applied to ``clips[rows]`` a chunk at a time."""
    clips = np.asarray(clips, np.float32)
    return np.concatenate([transform(clips[i:i + _CHUNK], slice(i, i + _CHUNK))
                           for i in range(0, len(clips), _CHUNK)] or [clips.copy()])


# --- level, position ---------------------------------------------------------

def level(clips, rate, rng, db):
    """Gain of ``db`` dB, saturated to [-1, 1] (+20 dB clips most words)."""
    return _saturate(np.asarray(clips, np.float32) * np.float32(10.0 ** (db / 20.0)))


def shift(clips, rate, rng, seconds):
    """The clip moved ``seconds`` later (negative: earlier), cut at the clip's edges,
    zero-filled: a word 250 ms early loses its start if it began in the first 250 ms."""
    clips = np.asarray(clips, np.float32)
    s = int(round(seconds * rate))
    out = np.zeros_like(clips)
    if s >= 0:
        out[:, s:] = clips[:, :clips.shape[1] - s]
    else:
        out[:, :s] = clips[:, -s:]
    return out


# --- room ----------------------------------------------------------------------

def room_impulse_response(rt60_s, drr_db, rate, rng):
    """A synthetic room impulse response, ``rt60_s`` long (float64): a unit
    direct-path impulse at sample 0, then Gaussian noise whose energy decays 60 dB
    in ``rt60_s`` (amplitude ``10 ** (-3 t / rt60_s)``), scaled so that the direct
    energy over the tail's is ``drr_db`` dB."""
    n = max(2, int(round(rt60_s * rate)))
    t = np.arange(1, n) / rate
    tail = rng.standard_normal(n - 1) * 10.0 ** (-3.0 * t / rt60_s)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail ** 2))
    return np.concatenate([[1.0], tail])


def reverb(clips, rate, rng, rt60_s, drr_db):
    """Each clip convolved with its own ``room_impulse_response`` (drawn from
    ``rng``), cut to the clip's length (the tail past 1 s is lost, as in a 1 s
    window), scaled back to the clip's RMS."""
    def transform(x, rows):
        n, length = x.shape
        irs = np.stack([room_impulse_response(rt60_s, drr_db, rate, rng) for _ in x])
        size = 1 << int(np.ceil(np.log2(length + irs.shape[1] - 1)))
        y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(irs, size), size)[:, :length]
        return _saturate(_match_rms(y, x))
    return _chunks(clips, transform)


# --- microphone ----------------------------------------------------------------

def _spectral_gain(clips, rate, gain, keep_rms):
    """The clips through a zero-phase FFT-domain filter on each clip's whole-length
    rFFT: ``gain(freqs, rows)`` gives the linear gains ``[len(rows) or 1, bins]`` of
    the clips ``rows``; with ``keep_rms`` the result is scaled back to the clip's RMS."""
    def transform(x, rows):
        freqs = np.fft.rfftfreq(x.shape[1], 1.0 / rate)
        y = np.fft.irfft(np.fft.rfft(x) * gain(freqs, rows), x.shape[1])
        return _saturate(_match_rms(y, x) if keep_rms else y)
    return _chunks(clips, transform)


def band(clips, rate, rng, low_hz, high_hz):
    """A brick-wall band-pass in the FFT domain over the whole clip (the telephone
    band, 300-3400 Hz): every bin outside ``[low_hz, high_hz]`` is zeroed, the band
    passes at unity gain (a telephone line; its RMS is not restored)."""
    return _spectral_gain(clips, rate, lambda f, rows: ((f >= low_hz) & (f <= high_hz))
                          .astype(np.float64)[None], keep_rms=False)


def tilt_gain_db(freqs, db_per_octave, pivot_hz=1000.0, floor_hz=100.0):
    """Gain in dB of a spectral tilt: ``db_per_octave * log2(f / pivot_hz)``, flat
    below ``floor_hz`` (so DC and rumble are not boosted without bound)."""
    octaves = np.log2(np.maximum(freqs, floor_hz) / pivot_hz)
    return np.asarray(db_per_octave, np.float64).reshape(-1, 1) * octaves[None]


def apply_tilt(clips, rate, db_per_octave):
    """``clips`` with a spectral tilt of ``db_per_octave[i]`` on clip ``i``, scaled
    back to its RMS (a microphone's sensitivity is the level conditions' business)."""
    tilts = np.broadcast_to(np.asarray(db_per_octave, np.float64), (len(clips),))
    return _spectral_gain(clips, rate, lambda freqs, rows: 10.0 ** (
        tilt_gain_db(freqs, tilts[rows]) / 20.0), keep_rms=True)


def tilt(clips, rate, rng, max_db_per_octave):
    """A random microphone colouring: a tilt drawn per clip, uniform in
    ``+-max_db_per_octave`` dB/octave around 1 kHz."""
    return apply_tilt(clips, rate, rng.uniform(-max_db_per_octave, max_db_per_octave,
                                               len(clips)))


# --- speaker ---------------------------------------------------------------------

def _center(signal, length):
    """Cut or zero-pad ``signal`` to ``length`` around its centre (a word in the
    middle of the clip stays there)."""
    extra = len(signal) - length
    if extra >= 0:
        return signal[extra // 2:extra // 2 + length]
    return np.pad(signal, (-extra // 2, -extra - (-extra // 2)))


def speed(clips, rate, rng, factor):
    """Speaking ``factor`` times faster by resampling (``audio.resample`` from
    ``rate * factor`` to ``rate``), like a tape played faster: the clip becomes
    ``1 / factor`` as long (and its pitch ``factor`` higher), then is cut or
    zero-padded to 1 s around its centre. ``rate * factor`` is rounded to 100 Hz."""
    clips = np.asarray(clips, np.float32)
    source = int(round(rate * factor / 100.0)) * 100
    return np.stack([_center(audio.resample(c, source, rate), clips.shape[1])
                     for c in clips]).astype(np.float32) if len(clips) else clips.copy()


WARP_FRAME, WARP_HOP = 512, 128  # the warp's STFT: 32 ms Hann frames, 75 % overlap


def mel_warp_hz(hz, factor):
    """The frequency that ``hz`` moves to when the HTK mel axis is stretched by
    ``factor``: ``mel(out) = factor * mel(hz)``."""
    mel = 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)
    return 700.0 * np.expm1(factor * mel / 1127.0)


def _stft(x):
    """Complex STFT ``[n, frames, bins]`` of clips padded by a frame at both ends."""
    padded = np.pad(x, ((0, 0), (WARP_FRAME, WARP_FRAME)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, WARP_FRAME, axis=1)
    return np.fft.rfft(frames[:, ::WARP_HOP] * audio.hann_periodic(WARP_FRAME), axis=-1)


def _istft(spectra, length):
    """Weighted overlap-add inverse of ``_stft`` (Hann synthesis window, divided by
    the summed squared window)."""
    window = audio.hann_periodic(WARP_FRAME).astype(np.float64)
    frames = np.fft.irfft(spectra, WARP_FRAME, axis=-1) * window
    n, count = spectra.shape[:2]
    total = (count - 1) * WARP_HOP + WARP_FRAME
    out, norm = np.zeros((n, total)), np.zeros(total)
    for m in range(count):
        out[:, m * WARP_HOP:m * WARP_HOP + WARP_FRAME] += frames[:, m]
        norm[m * WARP_HOP:m * WARP_HOP + WARP_FRAME] += window ** 2
    out /= np.maximum(norm, 1e-8)
    return out[:, WARP_FRAME:WARP_FRAME + length]


def warp(clips, rate, rng, factor):
    """Vocal-tract-like warp: the spectrum of every frame stretched along the mel
    axis by ``factor`` (content at mel ``m`` moves to ``factor * m``; 1.1 moves a
    1 kHz tone to 1158 Hz), timing unchanged.

    A phase vocoder: each output bin takes the magnitude interpolated at its source
    frequency (``mel_warp_hz(f, 1 / factor)``) and the source bin's instantaneous
    frequency (from its phase advance between frames) mapped through the warp; its
    phase accumulates that frequency hop by hop. Keeping the original phase instead
    would pull every partial back towards its old frequency (the phase advance
    between overlapping frames decides the frequency heard). Content warped past
    Nyquist is dropped. RMS restored."""
    bins = WARP_FRAME // 2 + 1
    hz = np.arange(bins) * rate / WARP_FRAME
    source = mel_warp_hz(hz, 1.0 / factor) * WARP_FRAME / rate  # fractional source bins
    near = np.clip(np.round(source).astype(int), 0, bins - 1)
    inside = source <= bins - 1
    expected = 2 * np.pi * np.arange(bins) * WARP_HOP / WARP_FRAME  # phase per hop

    def transform(x, rows):
        spectra = _stft(x.astype(np.float64))
        magnitude, phase = np.abs(spectra), np.angle(spectra)
        advance = np.diff(phase, axis=1, prepend=phase[:, :1]) - expected
        inst_hz = (expected + np.angle(np.exp(1j * advance))) * rate / (2 * np.pi
                                                                         * WARP_HOP)
        lo = np.clip(np.floor(source).astype(int), 0, bins - 1)
        hi = np.minimum(lo + 1, bins - 1)
        frac = np.clip(source - lo, 0.0, 1.0)
        warped = (magnitude[..., lo] * (1 - frac) + magnitude[..., hi] * frac) * inside
        out_hz = mel_warp_hz(np.maximum(inst_hz[..., near], 0.0), factor)
        steps = 2 * np.pi * out_hz * WARP_HOP / rate
        out_phase = phase[:, :1, near] + np.cumsum(steps, axis=1) - steps[:, :1]
        y = _istft(warped * np.exp(1j * out_phase), x.shape[1])
        return _saturate(_match_rms(y, x))
    return _chunks(clips, transform)


# --- the report ------------------------------------------------------------------

CONDITIONS = (
    ("quiet_20db", level, {"db": -20.0}),
    ("loud_20db", level, {"db": 20.0}),
    ("early_250ms", shift, {"seconds": -0.25}),
    ("late_250ms", shift, {"seconds": 0.25}),
    # the same source distance: the tail's energy grows with RT60 (0.7 / 0.3 = 3.7 dB)
    ("reverb_300ms", reverb, {"rt60_s": 0.3, "drr_db": 0.0}),
    ("reverb_700ms", reverb, {"rt60_s": 0.7, "drr_db": -3.7}),
    ("telephone", band, {"low_hz": 300.0, "high_hz": 3400.0}),
    ("tilt_6db", tilt, {"max_db_per_octave": 6.0}),
    ("slow_0.85x", speed, {"factor": 0.85}),
    ("fast_1.15x", speed, {"factor": 1.15}),
    ("warp_up_10pct", warp, {"factor": 1.1}),
    ("warp_down_10pct", warp, {"factor": 0.9}),
)
NAMES = tuple(name for name, _, _ in CONDITIONS)


def condition_rng(name, seed=REPORT_SEED):
    """The generator of one condition: seeded by ``(seed, crc32(name))`` only."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def perturb_split(clips, rate, name, seed=REPORT_SEED):
    """Condition ``name`` of ``CONDITIONS`` applied to a split ``[n, samples]``:
    the same arguments always give the same arrays."""
    _, function, params = CONDITIONS[NAMES.index(name)]
    clips = np.asarray(clips, np.float32)
    if clips.ndim != 2:
        raise ValueError(f"a split is [n, samples], got shape {clips.shape}")
    return function(clips, rate, condition_rng(name, seed), **params)
