"""Audio front end: WAV reading, resampling, and the MFCC / STFT features.

One numpy implementation serves training and the deployed latency measurement, so
there is no train/serve skew. It reproduces TensorFlow's ``tf.signal`` MFCC and
``tf.image.resize`` (bilinear, half-pixel centres) without needing TensorFlow at
inference time; the tests check both against TensorFlow.
"""
import io
import math
import mmap
import os
import stat
import struct
import wave
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from common import artifacts
from common.errors import UserError

DATASET_RATE = 16000
CLIP_SECONDS = 1.0
MIC_RATE = 48000  # the latency benchmark's microphone rate
REPLACE = "replace it with a 16-bit mono PCM WAV (e.g. extract the dataset again)"
ANY_WAV_HINT = "give a 16-bit PCM WAV file"  # where any rate and channel count will do
WAVE_FORMAT_PCM, WAVE_FORMAT_EXTENSIBLE = 1, 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM, 00000001-0000-0010-8000-00aa00389b71, as stored in a file
PCM_SUBFORMAT = bytes.fromhex("0100000000001000800000aa00389b71")


def read_file(path, mapped=False):
    """The bytes of an audio file (``mapped``: memory-mapped when it is a regular
    file, see ``artifacts.read_input``). Raises UserError for a missing or unreadable
    file or a folder."""
    return artifacts.read_input(path, "WAV file", "check the path", REPLACE, mapped)


def _chunks(content):
    """``(name, offset of its header)`` of each chunk of a RIFF/WAVE file whose header
    lies within ``content``, in order (none for another file)."""
    if content[:4] + content[8:12] != b"RIFFWAVE":
        return
    pos = 12  # the chunks follow "RIFF", the RIFF size and "WAVE"
    while pos + 8 <= len(content):
        name, size = struct.unpack_from("<4sI", content, pos)
        yield name, pos
        pos += 8 + size + size % 2  # chunks are padded to an even size


def _data_chunk(content):
    """The offset of the ``data`` chunk's header in a RIFF/WAVE file, or None (not a
    RIFF/WAVE file, or no ``data`` chunk in its bytes)."""
    return next((pos for name, pos in _chunks(content) if name == b"data"), None)


def _extensible_as_pcm(path, header):
    """Python 3.11's ``wave`` rejects WAVE_FORMAT_EXTENSIBLE headers ("unknown format:
    65534") even when their sub-format is PCM. Such a file is a plain PCM file with a
    longer ``fmt `` chunk: return its header with the format tag set to PCM (``wave``
    skips the extra fields). Another header is returned unchanged."""
    pos = next((pos for name, pos in _chunks(header) if name == b"fmt "), None)
    if pos is None or pos + 10 > len(header) or \
            struct.unpack_from("<H", header, pos + 8)[0] != WAVE_FORMAT_EXTENSIBLE:
        return header
    if header[pos + 32:pos + 48] != PCM_SUBFORMAT:  # the SubFormat GUID
        raise UserError(f"{path!r} is a WAVE_FORMAT_EXTENSIBLE file whose samples are "
                        "not PCM; clips must be 16-bit PCM")
    return header[:pos + 8] + struct.pack("<H", WAVE_FORMAT_PCM) + header[pos + 10:]


UNKNOWN_SIZES = (0, 0xFFFFFFFF)
MAX_CHUNK_SIZE = 0xFFFFFFFF  # a RIFF size field's 32 bits: a longer file's size is counted


def _streamed_sizes(header, file_size):
    """A writer that streams (to a pipe, or before it knows the length) leaves the
    RIFF and ``data`` chunk sizes at 0 or 0xFFFFFFFF. Such a ``data`` chunk holds the
    rest of the file: return the header (up to and with the ``data`` chunk's header)
    with those sizes set from the file's size, at most 32 bits' worth, for ``wave``
    to parse (``read_pcm`` counts the samples from the file's size). Another header
    is returned unchanged."""
    fixed = bytearray(header)
    if struct.unpack_from("<I", header, 4)[0] in UNKNOWN_SIZES:
        struct.pack_into("<I", fixed, 4, min(file_size - 8, MAX_CHUNK_SIZE))
    data = len(header) - 8
    if _streamed(header, data) and file_size > len(header):
        struct.pack_into("<I", fixed, data + 4, min(file_size - len(header),
                                                    MAX_CHUNK_SIZE))
    return bytes(fixed)


def _streamed(content, data):
    """Whether the ``data`` chunk at ``data`` has an unknown size (0 or 0xFFFFFFFF)."""
    return struct.unpack_from("<I", content, data + 4)[0] in UNKNOWN_SIZES


def read_pcm(path, content=None, hint=REPLACE):
    """``(int16 samples [frames, channels], sample rate)`` of a 16-bit PCM WAV (plain
    or WAVE_FORMAT_EXTENSIBLE, its sizes possibly left unknown by a streaming writer);
    ``content``, when given, is the file's bytes already read or mapped (``path`` then
    only names it in errors); ``hint`` ends each error (what to do instead). Only the
    header is parsed (by ``wave``): the samples are a read-only view of ``content``,
    so a mapped recording is not read into memory.

    Raises UserError for a missing, empty, truncated or non-WAV file, a folder, one
    without samples, or one with another sample format.
    """
    if content is None:
        content = read_file(path)
    frames, channels, rate, offset = _pcm_layout(path, content, hint)
    return _pcm_view(content, frames, channels, offset), rate


def _pcm_view(content, frames, channels, offset):
    return np.frombuffer(content, "<i2", frames * channels, offset).reshape(frames,
                                                                            channels)


def _pcm_layout(path, content, hint):
    """``(frames, channels, rate, offset of the first sample)`` of ``read_pcm``'s
    file, its errors raised."""
    if not content:
        raise UserError(f"{path!r} is empty (0 bytes); {hint}")
    data = _data_chunk(content)  # without one, what wave makes of the first MiB
    header = bytes(content[:data + 8] if data is not None else content[:1 << 20])
    channels, rate, frames = _parse_header(path, header, len(content), hint)
    held = (len(content) - len(header)) // (2 * channels)
    if data is not None and _streamed(content, data):
        frames = held  # the rest of the file, over 4 GiB too
    if frames == 0:
        raise UserError(f"{path!r} holds no samples (a WAV header only); {hint}")
    if held < frames:
        raise UserError(f"{path!r} is truncated: its header promises {frames} samples, "
                        f"it holds {held}; {hint}")
    return frames, channels, rate, len(header)


MIN_RATE, MAX_RATE = 1000, 384000  # Hz: what recorders write; outside, a damaged header


def _parse_header(path, header, size, hint):
    """``(channels, sample rate, frames the header promises)`` of a 16-bit PCM WAV:
    ``header`` is its bytes up to and with the ``data`` chunk's header (or its first
    bytes, if it has none), ``size`` the file's byte count (None: a stream, of unknown
    length). Raises UserError as ``read_pcm`` does."""
    try:
        if _data_chunk(header) is not None:
            header = _streamed_sizes(_extensible_as_pcm(path, header),
                                     len(header) + MAX_CHUNK_SIZE if size is None else size)
        with wave.open(io.BytesIO(header), "rb") as w:
            channels, width, rate, frames = (w.getnchannels(), w.getsampwidth(),
                                             w.getframerate(), w.getnframes())
    except EOFError:
        raise UserError(f"{path!r} is not a readable WAV file (it ends inside its "
                        f"header{'' if size is None else f', {size} bytes'}); "
                        f"{hint}") from None
    except wave.Error as err:
        raise UserError(f"{path!r} is not a readable WAV file ({err}); {hint}") from None
    if width != 2:
        raise UserError(f"{path!r} has {8 * width}-bit samples, not 16-bit PCM; {hint}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise UserError(f"{path!r} says it is sampled at {rate} Hz, outside {MIN_RATE}-"
                        f"{MAX_RATE} Hz: a damaged header; {hint}")
    return channels, rate, frames


def read_wav(path, expected_rate=DATASET_RATE, content=None):
    """A dataset clip: a 16-bit mono PCM WAV at ``expected_rate`` (``read_pcm``) as
    float32 in [-1, 1]. Raises UserError as ``read_pcm`` does, and for another
    sample rate or channel count."""
    samples, rate = read_pcm(path, content)
    if samples.shape[1] != 1:
        raise UserError(f"{path!r} has {samples.shape[1]} channels; clips must be mono")
    if rate != expected_rate:
        raise UserError(f"{path!r} is sampled at {rate} Hz; clips must be {expected_rate} Hz")
    return samples[:, 0].astype(np.float32) / 32768.0


def pad_or_cut(signal, length):
    """Zero-pad a shorter clip at the end, cut a longer one."""
    signal = np.asarray(signal, np.float32)[:length]
    return np.pad(signal, (0, length - len(signal)))


@lru_cache(maxsize=None)
def _resample_filter(up, down):
    """The anti-aliasing low-pass filter scipy's ``resample_poly`` designs: a Kaiser
    (beta 5) windowed sinc with cutoff at the lower Nyquist rate, gain ``up``."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = np.arange(-half_len, half_len + 1, dtype=np.float64)
    h = np.sinc(taps / max_rate) * np.kaiser(2 * half_len + 1, 5.0)
    return (h * (up / h.sum())).astype(np.float32), half_len


def _up_down(from_rate, to_rate):
    """The resampling ratio ``to_rate / from_rate`` in lowest terms: ``(up, down)``."""
    g = math.gcd(from_rate, to_rate)
    return to_rate // g, from_rate // g


@lru_cache(maxsize=None)
def _polyphase(up, down):
    """``_resample_filter`` split into its ``up`` phases: row ``p`` holds taps ``p,
    p + up, p + 2 up, ...`` (zero-padded to one length), reversed to be dotted with
    the input samples they weigh, oldest first; and the filter's half length."""
    h, half_len = _resample_filter(up, down)
    taps = -(-len(h) // up)
    phases = np.zeros(taps * up, np.float32)
    phases[:len(h)] = h
    return np.ascontiguousarray(phases.reshape(taps, up).T[:, ::-1]), half_len


def resample(signal, from_rate, to_rate):
    """Polyphase (rational ``up/down``) resampling with a zero-phase FIR filter: each
    output sample is computed from the input samples its filter phase weighs (about
    ``len(filter) / up``), none of the ``up - 1`` zeros between them. Output length is
    ``ceil(len * up / down)``, as with ``scipy.signal.resample_poly``.
    """
    up, down = _up_down(from_rate, to_rate)
    x = np.asarray(signal, np.float32)
    if up == down:
        return x
    phases, half_len = _polyphase(up, down)
    taps = phases.shape[1]
    out = np.empty(-(-len(x) * up // down), np.float32)
    # output n weighs the inputs up to (n down + half_len) // up with phase
    # (n down + half_len) % up: outputs n and n + up share a phase, a step of down apart
    last = ((len(out) - 1) * down + half_len) // up
    padded = np.pad(x, (taps - 1, max(0, last + 1 - len(x))))
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)  # [i]: up to x[i]
    for first in range(min(up, len(out))):
        at = first * down + half_len
        rows = out[first::up]
        rows[:] = windows[at // up::down][:len(rows)] @ phases[at % up]
    return out


def read_wav_any(path, content=None):
    """``(float32 mono signal in [-1, 1], sample rate)`` of a 16-bit PCM WAV of any
    length, rate and channel count (``audio.read_pcm``; channels are averaged)."""
    samples, rate = read_pcm(path, content, hint=ANY_WAV_HINT)
    return pcm_to_mono(samples), rate


def pcm_to_mono(samples):
    """int16 ``[frames, channels]`` -> float32 mono in [-1, 1] (channels averaged)."""
    return samples.astype(np.float32).mean(axis=1) / 32768.0


def wav_pieces(path, to_rate, content=None):
    """A 16-bit PCM WAV of any length, rate and channel count as float32 mono pieces
    of about a second at ``to_rate`` whose concatenation is ``resample_long`` of
    ``read_wav_any``. The file is memory-mapped and converted a piece at a time, so
    memory does not grow with its length. ``content``: the file already mapped or
    read. Raises UserError as ``read_pcm`` does."""
    if content is None:
        content = read_file(path, mapped=True)
    if isinstance(content, mmap.mmap):
        _check_size(path, content, len(content))  # shrunk since it was mapped?
    frames, channels, rate, offset = _pcm_layout(path, content, ANY_WAV_HINT)
    samples = _pcm_view(content, frames, channels, offset)
    if isinstance(content, mmap.mmap):
        samples = _SizeChecked(path, content, samples, offset)
    return resample_blocks(samples, rate, to_rate, to_rate, pcm_to_mono)


STREAM_READ_BYTES = 3200  # 100 ms of 16 kHz 16-bit mono: a live stream is read this often
STREAM_HEADER_BYTES = 1 << 20  # a WAV read as it arrives must reach its samples in this


def is_wav_start(head):
    """Whether ``head`` (a stream's first 12 bytes or more) begins a RIFF/WAVE file."""
    return head[:4] + head[8:12] == b"RIFFWAVE"


class PcmStream:
    """16-bit little-endian PCM read from ``source`` (a binary file with ``read1``: a
    pipe, a FIFO, a device) as it arrives: ``channels`` interleaved, at ``rate`` Hz;
    ``start``: its bytes already read; ``size``: its byte count (None: until the
    source ends). ``name`` names it in errors."""

    def __init__(self, name, source, channels, rate, start=b"", size=None):
        self.name, self.source, self.channels, self.rate = name, source, channels, rate
        self.start, self.size = start, size

    @classmethod
    def wav(cls, name, source, start=b""):
        """The samples of a 16-bit PCM WAV on ``source``, its header read from it (after
        ``start``) and checked now; a UserError as ``read_pcm`` for a bad one."""
        head = start
        while _data_chunk(head) is None and len(head) < STREAM_HEADER_BYTES and \
                (len(head) < 12 or is_wav_start(head)):  # /dev/zero: refused at once
            more = source.read1(STREAM_HEADER_BYTES - len(head))
            if not more:
                break
            head += more
        data = _data_chunk(head)
        if data is None:
            _pcm_layout(name, head, ANY_WAV_HINT)  # raises, saying what is wrong
            raise UserError(f"{name!r} has no data chunk in its first "
                            f"{STREAM_HEADER_BYTES >> 20} MiB; {ANY_WAV_HINT}")
        header = bytes(head[:data + 8])
        channels, rate, frames = _parse_header(name, header, None, ANY_WAV_HINT)
        size = None if _streamed(header, data) else frames * 2 * channels
        if size == 0:
            raise UserError(f"{name!r} holds no samples (a WAV header only); "
                            f"{ANY_WAV_HINT}")
        return cls(name, source, channels, rate, head[data + 8:], size)

    def pieces(self, to_rate):
        """Float32 mono pieces at ``to_rate`` as the samples arrive (``resample_stream``
        in blocks of 0.1 s); a WAV that ends before the samples its header promises
        is a UserError at its end."""
        return resample_stream(self._mono(), self.rate, to_rate, to_rate // 10)

    def _mono(self):
        frame, done, data = 2 * self.channels, 0, self.start
        while True:
            if self.size is not None:
                data = data[:self.size - done]  # what follows the samples is not audio
            whole = len(data) // frame * frame  # a frame split between two reads waits
            if whole:
                yield pcm_to_mono(np.frombuffer(data[:whole], "<i2").reshape(
                    -1, self.channels))
            done, data = done + whole, data[whole:]
            if done == self.size:
                return
            more = self.source.read1(STREAM_READ_BYTES)  # what has arrived, up to 100 ms
            if not more:
                break
            data += more
        if self.size is not None:
            raise UserError(f"{self.name!r} is truncated: its header promises "
                            f"{self.size // frame} samples, it held {done // frame}; "
                            f"{ANY_WAV_HINT}")


def open_recording(path):
    """A WAV file to listen to, checked before anything slow: a regular file mapped
    (``read_file``); anything else (a pipe, ``<(...)``, a FIFO, a device) a
    ``PcmStream`` read as it arrives, its header read now, so memory stays bounded
    however long or endless it is."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG  # read_file says what is wrong
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        content = read_file(path, mapped=True)
        _pcm_layout(path, content, ANY_WAV_HINT)
        return content
    try:
        source = open(path, "rb")
    except OSError as err:
        raise UserError(f"cannot read WAV file {path!r}: {err.strerror or err}") from None
    return PcmStream.wav(path, source)


class _SizeChecked:
    """A mapped recording's samples, each slice checked against the file's size
    before it is read: reading the pages of a file that shrank since it was mapped
    kills the process (SIGBUS); here it is a UserError (unless the file shrinks
    between the check and the read)."""

    def __init__(self, path, mapped, samples, offset):
        self.path, self.mapped, self.samples, self.offset = path, mapped, samples, offset

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, frames):
        """``frames``: a slice with a stop, as ``resample_blocks`` takes them."""
        _, last, _ = frames.indices(len(self.samples))
        _check_size(self.path, self.mapped, self.offset + last * self.samples.strides[0])
        return self.samples[frames]


def _check_size(path, mapped, needed):
    """A UserError unless the mapped file still holds ``needed`` bytes."""
    if mapped.size() < needed:
        raise UserError(f"{path!r} shrank while it was being read (to {mapped.size()} "
                        "bytes); give a file no one is rewriting")


def resample_long(signal, from_rate, to_rate, block_outputs=16000):
    """``resample`` of a recording of any length, in blocks (the one-shot
    version's temporaries grow with the length times the up-sampling factor); each
    block is computed with enough context that the result is the one-shot one."""
    signal = np.asarray(signal, np.float32)
    if from_rate == to_rate:
        return signal
    return np.concatenate(list(resample_blocks(signal, from_rate, to_rate, block_outputs)))


def resample_blocks(samples, from_rate, to_rate, block_outputs=16000,
                    to_float=lambda block: np.asarray(block, np.float32)):
    """``resample_long``'s blocks of at most ``block_outputs`` samples, in order, each
    read from ``samples`` (any array sliced along its first axis) through
    ``to_float`` only when it is needed."""
    pieces = (to_float(samples[start:start + block_outputs])
              for start in range(0, len(samples), block_outputs))
    return resample_stream(pieces, from_rate, to_rate, block_outputs)


def resample_stream(pieces, from_rate, to_rate, block_outputs=16000):
    """``resample_long`` of the concatenation of ``pieces`` (float32 arrays as they
    come: a recording a piece at a time, or a live stream), in blocks of at most
    ``block_outputs`` samples, each yielded once the input its filter reaches has
    come: the memory held does not grow with the length of the stream."""
    up, down = _up_down(from_rate, to_rate)
    if up == down:
        yield from pieces
        return
    _, half_len = _resample_filter(up, down)
    per_block = max(1, block_outputs // up)           # input blocks of per_block * down
    step_in, step_out = per_block * down, per_block * up
    context = -(-(half_len // up + 2) // down) * down  # the filter's reach, in whole
    held, lo, start = np.zeros(0, np.float32), 0, 0    # multiples of down; held: the
    #                                                    input from index lo on

    def block(end):
        """The outputs of the inputs from ``start`` on, ``end`` inputs having come."""
        first = max(0, start - context)
        out = resample(held[first - lo:start + step_in + context - lo], from_rate, to_rate)
        skip = (start - first) * up // down  # exact: start - first is a multiple of down
        return out[skip:skip + min(step_out, -(-end * up // down) - start * up // down)]
    for piece in pieces:
        held = np.concatenate([held, piece])
        while lo + len(held) >= start + step_in + context:  # the block's reach has come
            yield block(lo + len(held))
            start += step_in
            drop = max(0, start - context) - lo
            held, lo = held[drop:], lo + drop
    end = lo + len(held)
    while start < end:  # the last blocks, the signal taken as zero after its end
        yield block(end)
        start += step_in


@dataclass(frozen=True)
class FeatureConfig:
    """How a 1 s clip becomes the model's input image."""
    kind: str = "mfcc"              # "mfcc" or "stft"
    sample_rate: int = 16000
    frame_length: int = 640
    frame_step: int = 320
    fft_length: int = 640
    num_mel_bins: int = 40
    lower_hz: float = 20.0
    upper_hz: float = 4000.0
    num_mfccs: int = 10
    resize: int = 0                 # STFT only: side of the square image (0 = no resize)
    log_magnitude: bool = False     # STFT only: log(|X| + 1e-6) instead of |X|
    max_hz: float = 0.0             # STFT only: keep the bins up to max_hz (0: all)
    resize_method: str = "bilinear"  # STFT only: "bilinear" or "area" (RESIZE_MATRICES)
    remove_mean: bool = False       # per-utterance mean removal (``remove_clip_mean``)
    mean_gate_db: float = 0.0       # with remove_mean: the mean over the frames within
    #                                 this many dB of the loudest (0: over every frame)

    def __post_init__(self):
        if self.kind not in ("mfcc", "stft"):
            raise ValueError(f"feature kind must be 'mfcc' or 'stft', got {self.kind!r}")
        if self.frame_length > self.fft_length:
            raise ValueError("frame_length must not exceed fft_length")
        if not 0 <= self.max_hz <= self.sample_rate / 2:
            raise ValueError(f"max_hz must be in [0, {self.sample_rate / 2}], got "
                             f"{self.max_hz}")
        if self.remove_mean and self.kind == "stft" and not self.log_magnitude:
            raise ValueError("remove_mean needs log features (a gain is a constant only "
                             "on a log scale): set log_magnitude=True")
        if not self.mean_gate_db >= 0:  # NaN too
            raise ValueError(f"mean_gate_db must be a number >= 0, got {self.mean_gate_db}")
        if self.mean_gate_db and not self.remove_mean:
            raise ValueError("mean_gate_db gates the mean removal: set remove_mean=True")
        if self.resize_method not in RESIZE_MATRICES:
            raise ValueError(f"resize_method must be one of {sorted(RESIZE_MATRICES)}, "
                             f"got {self.resize_method!r}")

    def describe(self):
        """The front end in words, a line each: what a firmware computes from the
        microphone's samples to make the model's input (``extract``)."""
        rows, cols = self.shape[:2]
        lines = [f"{CLIP_SECONDS:g} s of {self.sample_rate} Hz mono audio, 16-bit samples "
                 f"/ 32768 ({self.clip_samples} samples, a shorter clip zero-padded at "
                 "the end)",
                 f"frames of {self.frame_length} samples every {self.frame_step} "
                 f"({self.num_frames}, no padding), periodic Hann window, |rfft| of "
                 f"{self.fft_length} points"]
        if self.kind == "mfcc":
            lines += [f"{self.num_mel_bins} HTK-mel triangular filters {self.lower_hz:g}-"
                      f"{self.upper_hz:g} Hz (tf.signal.linear_to_mel_weight_matrix), "
                      "ln(x + 1e-6)",
                      f"the first {self.num_mfccs} DCT-II coefficients, c_k = sum_n "
                      f"2 cos(pi k (2n + 1) / {2 * self.num_mel_bins}) x_n / "
                      f"sqrt({2 * self.num_mel_bins}) (not orthonormal: "
                      "tf.signal.mfccs_from_log_mel_spectrograms)"]
        else:
            kept = (f" up to {self.max_hz:g} Hz ({self.stft_bins} bins)" if self.max_hz
                    else "")
            lines.append(f"the magnitudes{kept}" + (", ln(x + 1e-6)"
                                                    if self.log_magnitude else ""))
            if self.resize:
                lines.append(f"resized to {self.resize}x{self.resize} "
                             f"({self.resize_method}, both axes)")
        if self.remove_mean and self.mean_gate_db:
            level = (f"its first coefficient / sqrt({2 * self.num_mel_bins})"
                     if self.kind == "mfcc" else "the mean of its values")
            lines += [f"each column less its mean over the rows within "
                      f"{self.mean_gate_db:g} dB of the loudest row",
                      f"(a row's level in dB, taken before the subtraction: 20 / ln(10) "
                      f"x {level}; frame_level_db)"]
        elif self.remove_mean:
            lines.append("each column less its mean over every row")
        lines.append(f"the input image: {rows} rows (time) x {cols} columns, row-major")
        return lines

    @property
    def clip_samples(self):
        return int(self.sample_rate * CLIP_SECONDS)

    @property
    def num_frames(self):
        return 1 + (self.clip_samples - self.frame_length) // self.frame_step

    @property
    def stft_bins(self):
        """The STFT bins kept: all ``fft_length // 2 + 1``, or those up to ``max_hz``."""
        bins = self.fft_length // 2 + 1
        if self.max_hz:
            bins = min(bins, int(self.max_hz * self.fft_length / self.sample_rate) + 1)
        return bins

    @property
    def shape(self):
        """The feature image's shape ``[height, width, 1]``."""
        if self.kind == "mfcc":
            return (self.num_frames, self.num_mfccs, 1)
        if self.resize:
            return (self.resize, self.resize, 1)
        return (self.num_frames, self.stft_bins, 1)


def hann_periodic(n):
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft_magnitude(signal, frame_length, frame_step, fft_length):
    """``|STFT|``, frames without padding, periodic Hann window (as ``tf.signal.stft``)."""
    frames = np.lib.stride_tricks.sliding_window_view(signal, frame_length)[::frame_step]
    return np.abs(np.fft.rfft(frames * hann_periodic(frame_length), n=fft_length)
                  ).astype(np.float32)


def _hz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


@lru_cache(maxsize=None)
def mel_matrix(num_mel_bins, num_spectrogram_bins, sample_rate, lower_hz, upper_hz):
    """Triangular HTK-mel filters, ``[spectrogram bins, mel bins]``, built exactly as
    ``tf.signal.linear_to_mel_weight_matrix`` builds them (DC bin zeroed)."""
    linear_mel = _hz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins)[1:])
    edges = np.linspace(_hz_to_mel(lower_hz), _hz_to_mel(upper_hz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    slopes_up = (linear_mel[:, None] - lower) / (center - lower)
    slopes_down = (upper - linear_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(slopes_up, slopes_down))
    return np.pad(weights, ((1, 0), (0, 0))).astype(np.float32)


@lru_cache(maxsize=None)
def dct_matrix(num_mel_bins, num_mfccs):
    """The first ``num_mfccs`` columns of the DCT-II that
    ``tf.signal.mfccs_from_log_mel_spectrograms`` applies (scaled by 1/sqrt(2N))."""
    n = np.arange(num_mel_bins)[:, None]
    k = np.arange(num_mfccs)[None, :]
    return (2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * num_mel_bins))
            / np.sqrt(2.0 * num_mel_bins)).astype(np.float32)


@lru_cache(maxsize=None)
def resize_matrix(in_size, out_size):
    """Bilinear interpolation weights ``[out, in]`` with half-pixel centres, as
    ``tf.image.resize(..., "bilinear")`` (no antialiasing)."""
    weights = np.zeros((out_size, in_size), np.float32)
    for o in range(out_size):
        src = (o + 0.5) * in_size / out_size - 0.5
        lo = math.floor(src)
        frac = src - lo
        weights[o, min(max(lo, 0), in_size - 1)] += 1.0 - frac
        weights[o, min(max(lo + 1, 0), in_size - 1)] += frac
    return weights


@lru_cache(maxsize=None)
def area_matrix(in_size, out_size):
    """Box-filter weights ``[out, in]``: each output cell is the mean of the input
    span it covers, partly covered cells weighted by their share, as
    ``tf.image.resize(..., "area")``. Shrinking 124 frames to 40, bilinear reads 2 of
    every ~3 frames; the box filter reads all of them and averages their noise."""
    weights = np.zeros((out_size, in_size), np.float32)
    scale = in_size / out_size
    for o in range(out_size):
        start, end = o * scale, (o + 1) * scale
        for i in range(math.floor(start), min(math.ceil(end), in_size)):
            weights[o, i] = min(end, i + 1) - max(start, i)
    return weights / scale


RESIZE_MATRICES = {"bilinear": resize_matrix, "area": area_matrix}


def frame_level_db(config, image):
    """Each frame's level in dB: 20 log10 of the geometric mean of its mel-weighted
    magnitudes (MFCC) or of its STFT magnitudes (log-STFT), each plus the log's 1e-6,
    i.e. its mean log value. The MFCC's first coefficient is that mean scaled by the
    DCT's sqrt(2 * num_mel_bins). A resized log-STFT's "frame" is a row of the image
    (with the area resize, the mean of the frames it covers)."""
    if config.kind == "mfcc":
        mean_log = image[:, 0] / np.sqrt(2.0 * config.num_mel_bins)
    else:
        mean_log = image.mean(axis=1)
    return mean_log * (20.0 / np.log(10.0))


# A word's loud part: the frames within this many dB of the clip's loudest (the gate
# d's mean removal ships with, and docs/robustness.md's analysis of moved words uses).
WORD_GATE_DB = 30.0


def remove_clip_mean(config, image):
    """Each feature column minus its mean over the clip's frames (axis 0, time): the
    per-utterance (cepstral) mean normalization. A fixed gain or a fixed microphone
    response multiplies every frame's spectrum by the same factors, so it adds one
    constant per column to a log spectrum and to its DCT (the MFCCs); the mean
    removal takes it out, as long as no bin sits at the log's 1e-6 floor.

    With ``config.mean_gate_db`` > 0 the mean is taken over the frames whose
    ``frame_level_db`` is within that many dB of the loudest only. Over every frame,
    the mean moves with how much of the clip is silence: a zero-filled (digital
    silence) frame sits at the log's floor (-120 dB, about 100 dB below the dataset's
    speech), so a word moved 250 ms shifts every frame's first MFCC by more than its
    spread within the clip."""
    frames = image
    if config.mean_gate_db:
        level_db = frame_level_db(config, image)
        frames = image[level_db >= level_db.max() - config.mean_gate_db]
    return image - frames.mean(axis=0, keepdims=True)


def frame_features(config, signal):
    """Each frame's features: the rows of ``extract``'s image before any resize or
    mean removal, for the frames ``frame_step`` apart that ``signal`` holds whole."""
    magnitude = stft_magnitude(signal, config.frame_length, config.frame_step,
                               config.fft_length)
    if config.kind == "mfcc":
        mel = magnitude @ mel_matrix(config.num_mel_bins, magnitude.shape[1],
                                     config.sample_rate, config.lower_hz, config.upper_hz)
        return np.log(mel + 1e-6) @ dct_matrix(config.num_mel_bins, config.num_mfccs)
    magnitude = magnitude[:, :config.stft_bins]
    return np.log(magnitude + 1e-6) if config.log_magnitude else magnitude


def whole_image(config, frames):
    """``extract``'s image from the clip's ``frame_features``: resized, mean removed."""
    image = frames
    if config.resize:
        matrix = RESIZE_MATRICES[config.resize_method]
        image = (matrix(image.shape[0], config.resize) @ image
                 @ matrix(image.shape[1], config.resize).T)
    if config.remove_mean:
        image = remove_clip_mean(config, image)
    return image[..., None].astype(np.float32)


def extract(config, signal):
    """A clip at ``config.sample_rate`` (padded or cut to 1 s) -> ``config.shape``."""
    return whole_image(config, frame_features(config,
                                              pad_or_cut(signal, config.clip_samples)))


class SlidingFeatures:
    """``extract`` of the last second of a stream, a hop at a time (silence before
    it). When no resize mixes the frames and the hop and the second are whole numbers
    of frame steps, a hop computes only its new frames and keeps the others, as a
    device's front end would; otherwise the whole second again."""

    def __init__(self, config, hop):
        self.config, self.hop = config, hop
        self.audio = np.zeros(config.clip_samples, np.float32)
        self._fresh = hop + config.frame_length - config.frame_step  # new frames' audio
        self.by_frame = (not config.resize and hop % config.frame_step == 0
                         and self._fresh <= config.clip_samples
                         and (config.clip_samples - config.frame_length)
                         % config.frame_step == 0)
        self.frames = frame_features(config, self.audio) if self.by_frame else None

    def push(self, samples):
        """The features of the second that ends with ``samples`` (``hop`` of them)."""
        self.audio = np.concatenate([self.audio[self.hop:],
                                     np.asarray(samples, np.float32)])
        if not self.by_frame:
            return extract(self.config, self.audio)
        fresh = frame_features(self.config, self.audio[-self._fresh:])
        self.frames = np.concatenate([self.frames[len(fresh):], fresh])
        return whole_image(self.config, self.frames)


def from_microphone(config, recording):
    """The deployed front end: a 48 kHz recording -> the model's input features."""
    return extract(config, resample(recording, MIC_RATE, config.sample_rate))
