import dataclasses
import io
import struct
import wave

import numpy as np
import pytest
import tensorflow as tf

from common.errors import UserError
from common.kws import audio, speech
from common.tflite.runtime import measure_latency
from conftest import tone, wav_extensible_bytes, write_wav

STFT_56 = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                              fft_length=256, resize=56)
STFT_56_LOG = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                                  fft_length=256, resize=56, log_magnitude=True)  # kws c
STFT_32 = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                              fft_length=256, resize=32)


def test_feature_shapes():
    signal = np.zeros(16000, np.float32)
    assert audio.extract(audio.FeatureConfig(), signal).shape == (49, 10, 1)
    assert audio.extract(STFT_56, signal).shape == (56, 56, 1) == STFT_56.shape
    assert audio.extract(STFT_32, signal).shape == (32, 32, 1) == STFT_32.shape
    raw = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128, fft_length=256)
    assert audio.extract(raw, signal).shape == (124, 129, 1) == raw.shape


def known_signal():
    rng = np.random.default_rng(1)
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
            + 0.05 * rng.normal(size=16000)).astype(np.float32)


def test_mfcc_matches_tensorflow_signal():
    x = known_signal()
    magnitude = tf.abs(tf.signal.stft(x, 640, 320, 640))
    mel = tf.tensordot(magnitude, tf.signal.linear_to_mel_weight_matrix(
        40, 321, 16000, 20.0, 4000.0), 1)
    expected = tf.signal.mfccs_from_log_mel_spectrograms(tf.math.log(mel + 1e-6))[:, :10]
    np.testing.assert_allclose(audio.extract(audio.FeatureConfig(), x)[..., 0],
                               expected.numpy(), atol=1e-3)


def test_stft_resize_matches_tensorflow_image_resize():
    x = known_signal()
    magnitude = tf.abs(tf.signal.stft(x, 256, 128, 256))[..., None]
    expected = tf.image.resize(magnitude, [56, 56], method="bilinear").numpy()
    np.testing.assert_allclose(audio.extract(STFT_56, x), expected, atol=1e-4)


def test_log_stft_resize_matches_tensorflow():
    x = known_signal()
    log_magnitude = tf.math.log(tf.abs(tf.signal.stft(x, 256, 128, 256)) + 1e-6)[..., None]
    expected = tf.image.resize(log_magnitude, [56, 56], method="bilinear").numpy()
    np.testing.assert_allclose(audio.extract(STFT_56_LOG, x), expected, atol=1e-4)


def test_stft_max_hz_keeps_the_bins_below_it_then_resizes():
    low = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                              fft_length=256, log_magnitude=True, max_hz=4000)
    assert low.shape == (124, 65, 1)  # 4000 Hz / 62.5 Hz per bin, and DC
    x = np.array(tone(1000), np.float32) + np.array(tone(6000), np.float32)
    full = audio.extract(dataclasses.replace(low, max_hz=0), x)[..., 0]
    cropped = audio.extract(low, x)[..., 0]
    np.testing.assert_array_equal(cropped, full[:, :65])  # the same bins, no rescaling
    assert full[:, 96].mean() > cropped.max() - 1  # 6 kHz was there, and is cut
    resized = dataclasses.replace(low, resize=40)
    expected = tf.image.resize(cropped[..., None], [40, 40], method="bilinear").numpy()
    np.testing.assert_allclose(audio.extract(resized, x), expected, atol=1e-4)
    with pytest.raises(ValueError, match="max_hz"):
        audio.FeatureConfig(kind="stft", max_hz=9000)


@pytest.mark.parametrize("size", [40, 56, 7])
def test_area_resize_matches_tensorflow_and_reads_every_frame(size):
    config = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                                 fft_length=256, log_magnitude=True, max_hz=4000,
                                 resize=size, resize_method="area")
    x = known_signal()
    log_magnitude = tf.math.log(tf.abs(tf.signal.stft(x, 256, 128, 256))[:, :65] + 1e-6)
    expected = tf.image.resize(log_magnitude[..., None], [size, size], method="area")
    np.testing.assert_allclose(audio.extract(config, x), expected.numpy(), atol=1e-4)
    weights = audio.area_matrix(124, size)
    assert (weights.sum(axis=0) > 0).all()  # no frame is skipped
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="resize_method"):
        dataclasses.replace(config, resize_method="nearest")


def test_resample_keeps_a_tone_and_length():
    t48 = np.arange(48000) / 48000
    out = audio.resample(np.sin(2 * np.pi * 440 * t48).astype(np.float32), 48000, 16000)
    assert len(out) == 16000
    t16 = np.arange(16000) / 16000
    np.testing.assert_allclose(out[200:-200], np.sin(2 * np.pi * 440 * t16)[200:-200],
                               atol=5e-3)
    # a tone above the new Nyquist rate is filtered out, not aliased
    high = audio.resample(np.sin(2 * np.pi * 11000 * t48).astype(np.float32), 48000, 16000)
    assert np.abs(high[200:-200]).max() < 0.05
    assert len(audio.resample(np.zeros(16000, np.float32), 16000, 8000)) == 8000


MFCC_MEAN = audio.FeatureConfig(remove_mean=True)
STFT_40_MEAN = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                                   fft_length=256, resize=40, log_magnitude=True,
                                   max_hz=4000.0, resize_method="area", remove_mean=True)
MFCC_GATED = dataclasses.replace(MFCC_MEAN, mean_gate_db=30.0)
STFT_40_GATED = dataclasses.replace(STFT_40_MEAN, mean_gate_db=30.0)


@pytest.mark.parametrize("config", [audio.FeatureConfig(), MFCC_MEAN, STFT_40_MEAN,
                                    MFCC_GATED, STFT_40_GATED])
def test_microphone_path_equals_training_path_on_the_same_clip(config):
    clip16 = known_signal()
    # the deployed path resamples first; feeding it a 48 kHz version of the clip
    # must give the features training computed from the 16 kHz clip
    clip48 = audio.resample(clip16, 16000, 48000)
    served = audio.from_microphone(config, clip48)
    trained = audio.extract(config, clip16)
    assert np.corrcoef(served.ravel(), trained.ravel())[0, 1] > 0.99


STFT_NO_RESIZE = dataclasses.replace(STFT_40_GATED, resize=0)


@pytest.mark.parametrize("config, hop, by_frame", [
    (audio.FeatureConfig(), 1600, True), (MFCC_GATED, 1600, True),
    (STFT_NO_RESIZE, 1280, True), (STFT_40_GATED, 1280, False),  # a resize mixes frames
    (audio.FeatureConfig(), 1000, False)])                       # not whole frame steps
def test_a_stream_s_features_a_hop_at_a_time_are_each_second_s_features(config, hop,
                                                                       by_frame):
    """What the detector feeds the model: computed from the new frames only where that
    can be exact, and then the features of the whole second all the same."""
    rng = np.random.default_rng(3)
    signal = (0.05 * rng.standard_normal(16000 * 3)).astype(np.float32)
    signal[20000:28000] += known_signal()[:8000]
    sliding = audio.SlidingFeatures(config, hop)
    assert sliding.by_frame == by_frame
    padded = np.concatenate([np.zeros(16000, np.float32), signal])
    for end in range(16000 + hop, len(padded) + 1, hop):
        pushed = sliding.push(padded[end - hop:end])
        whole = audio.extract(config, padded[end - 16000:end])
        np.testing.assert_allclose(pushed, whole, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("config", [MFCC_MEAN, STFT_40_MEAN])
def test_mean_removal_is_the_plain_features_minus_their_mean_over_time(config):
    x = known_signal()
    plain = audio.extract(dataclasses.replace(config, remove_mean=False), x)[..., 0]
    removed = audio.extract(config, x)[..., 0]
    # the definition, written out: every column minus its mean over the frames
    expected = plain - plain.sum(axis=0) / plain.shape[0]
    np.testing.assert_allclose(removed, expected, atol=1e-4)
    np.testing.assert_allclose(removed.mean(axis=0), 0.0, atol=1e-4)
    assert np.abs(removed).max() > 0.1  # not everything removed


@pytest.mark.parametrize("config", [audio.FeatureConfig(), STFT_40_MEAN])
def test_frame_level_moves_by_the_gain_in_db(config):
    plain = dataclasses.replace(config, remove_mean=False)
    x = known_signal() * 0.5
    level = audio.frame_level_db(plain, audio.extract(plain, x)[..., 0])
    louder = audio.frame_level_db(plain, audio.extract(plain, x * 10 ** (6 / 20))[..., 0])
    np.testing.assert_allclose(louder - level, 6.0, atol=0.05)


def word_in_room_noise(start):
    """A 0.3 s broadband 'word' at ``start`` samples over room noise 50 dB below it."""
    rng = np.random.default_rng(3)
    x = (0.003 * rng.normal(size=16000)).astype(np.float32)
    x[start:start + 4800] += (0.3 * rng.normal(size=4800)).astype(np.float32)
    return x


def independent_frame_level_db(config, x):
    """A frame's level written out: the mean over its bins of 20 log10(value + 1e-6),
    the values being the mel-weighted magnitudes (MFCC) or the STFT magnitudes, the
    latter area-resized to the image's rows as the front end does."""
    magnitude = audio.stft_magnitude(x, config.frame_length, config.frame_step,
                                     config.fft_length)
    if config.kind == "mfcc":
        values = magnitude @ audio.mel_matrix(config.num_mel_bins, magnitude.shape[1],
                                              config.sample_rate, config.lower_hz,
                                              config.upper_hz)
        return (20 * np.log10(values + 1e-6)).mean(axis=1)
    db = 20 * np.log10(magnitude[:, :config.stft_bins] + 1e-6).mean(axis=1)
    return audio.area_matrix(len(db), config.resize) @ db


@pytest.mark.parametrize("config", [MFCC_MEAN, STFT_40_MEAN])
def test_gated_mean_is_taken_over_the_frames_near_the_loudest(config):
    gated = dataclasses.replace(config, mean_gate_db=30.0)
    plain = audio.extract(dataclasses.replace(config, remove_mean=False),
                          word_in_room_noise(6000))[..., 0]
    level = independent_frame_level_db(config, word_in_room_noise(6000))
    np.testing.assert_allclose(audio.frame_level_db(config, plain), level, atol=1e-3)
    loud = level >= level.max() - 30.0
    assert 0 < loud.sum() < len(loud) // 2  # the word's frames only, not the room's
    expected = plain - plain[loud].sum(axis=0) / loud.sum()
    np.testing.assert_allclose(audio.extract(gated, word_in_room_noise(6000))[..., 0],
                               expected, atol=1e-4)


def test_gated_mean_ignores_the_silence_a_moved_word_leaves():
    """A word moved 200 ms (10 frames) earlier, the clip's end zero-filled as the
    robustness report does: over every frame, the digital silence drags the mean
    down and every frame of the word changes; over the frames within 30 dB of the
    loudest, the word's frames stay as they were."""
    x = word_in_room_noise(6000)
    moved = np.concatenate([x[3200:], np.zeros(3200, np.float32)])
    word = slice(18, 26)  # frames wholly inside the word (samples 6000-10800)
    for gate_db, unchanged in ((30.0, True), (0.0, False)):
        config = audio.FeatureConfig(remove_mean=True, mean_gate_db=gate_db)
        before = audio.extract(config, x)[word]
        after = audio.extract(config, moved)[word.start - 10:word.stop - 10]
        assert np.allclose(before, after, atol=1e-3) == unchanged


def test_mean_removal_needs_log_features_and_a_gate_of_zero_or_more():
    with pytest.raises(ValueError, match="log features"):
        audio.FeatureConfig(kind="stft", remove_mean=True)
    for gate in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="mean_gate_db"):
            audio.FeatureConfig(remove_mean=True, mean_gate_db=gate)
    with pytest.raises(ValueError, match="remove_mean=True"):
        audio.FeatureConfig(mean_gate_db=30.0)  # a gate on nothing


@pytest.mark.parametrize("config", [MFCC_MEAN, STFT_40_MEAN, MFCC_GATED, STFT_40_GATED])
def test_mean_removal_makes_the_level_irrelevant(config):
    """-20 dB and +6 dB (no clipping, no bin at the log's floor) add a constant per
    column to the log spectrum: the plain features move, the mean-removed do not."""
    x = known_signal() * 0.5  # peaks near 0.5: +6 dB stays unclipped
    for gain_db in (-20.0, 6.0):
        y = (x * 10 ** (gain_db / 20)).astype(np.float32)
        plain = dataclasses.replace(config, remove_mean=False, mean_gate_db=0.0)
        moved = np.abs(audio.extract(plain, y) - audio.extract(plain, x)).max()
        assert moved > 0.5
        np.testing.assert_allclose(audio.extract(config, y), audio.extract(config, x),
                                   atol=5e-3)


MFCC_GATED = audio.FeatureConfig(remove_mean=True, mean_gate_db=30.0)
LOG_STFT = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                               fft_length=256, resize=40, log_magnitude=True,
                               max_hz=4000.0, resize_method="area")
CHANGED_FIELD = {  # each field of the front end: a config where it matters, another value
    "sample_rate": (LOG_STFT, 8000), "frame_length": (LOG_STFT, 200),
    "frame_step": (LOG_STFT, 160), "fft_length": (LOG_STFT, 1024),
    "num_mel_bins": (MFCC_GATED, 32), "lower_hz": (MFCC_GATED, 60.0),
    "upper_hz": (MFCC_GATED, 3800.0), "num_mfccs": (MFCC_GATED, 13),
    "resize": (LOG_STFT, 32), "log_magnitude": (LOG_STFT, False),
    "max_hz": (LOG_STFT, 3000.0), "resize_method": (LOG_STFT, "bilinear"),
    "remove_mean": (audio.FeatureConfig(), True), "mean_gate_db": (MFCC_GATED, 20.0)}


@pytest.mark.parametrize("field", sorted(
    f.name for f in dataclasses.fields(audio.FeatureConfig) if f.name != "kind"))
def test_the_front_ends_description_follows_every_field(field):
    """The C header tells a firmware how to make the input (``describe``): every field
    of the front end must change the words (a new field must be described)."""
    base, value = CHANGED_FIELD[field]
    assert base.describe() != dataclasses.replace(base, **{field: value}).describe()


def test_the_description_names_the_image_and_the_mean_removal():
    plain, gated = audio.FeatureConfig().describe(), MFCC_GATED.describe()
    assert plain[-1] == gated[-1] == "the input image: 49 rows (time) x 10 columns, row-major"
    assert "within 30 dB of the loudest row" in gated[-3]
    assert gated[-2] == ("(a row's level in dB, taken before the subtraction: 20 / "
                         "ln(10) x its first coefficient / sqrt(80); frame_level_db)")
    assert not any("mean" in line for line in plain)
    assert "resized to 40x40 (area, both axes)" in LOG_STFT.describe()


def test_pad_and_cut():
    assert np.array_equal(audio.pad_or_cut(np.ones(3), 5), [1, 1, 1, 0, 0])
    assert np.array_equal(audio.pad_or_cut(np.arange(7), 4), [0, 1, 2, 3])


def test_read_wav_and_its_errors(tmp_path):
    good = str(tmp_path / "good.wav")
    write_wav(good, tone(440, 0.5))
    samples = audio.read_wav(good)
    assert samples.shape == (8000,) and np.abs(samples).max() <= 1.0
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(open(good, "rb").read()[:2000])
    stereo, slow = str(tmp_path / "stereo.wav"), str(tmp_path / "slow.wav")
    write_wav(stereo, tone(440, 0.1) * 2, channels=2)
    write_wav(slow, tone(440, 0.1, rate=8000), rate=8000)
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    for path, message in [(str(truncated), "truncated"), (stereo, "2 channels"),
                          (slow, "8000 Hz"), (str(text), "not a readable WAV"),
                          (str(tmp_path / "none.wav"), "does not exist")]:
        with pytest.raises(UserError, match=message):
            audio.read_wav(path)


def read_direct(path):
    return audio.read_wav(path)


def read_like_load_clips(path):
    """speech.load_clips reads the bytes itself and passes them as ``content=``."""
    clips, _ = speech.load_clips([path], 16000)
    return clips[0]


READERS = [read_direct, read_like_load_clips]


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("leading_chunk", [b"", b"JUNK\x03\x00\x00\x00abc\x00"])
def test_extensible_pcm_wav_reads_like_plain_pcm(tmp_path, read, leading_chunk):
    samples = tone(440, 0.5)
    plain, extensible = str(tmp_path / "plain.wav"), tmp_path / "extensible.wav"
    write_wav(plain, samples)
    extensible.write_bytes(wav_extensible_bytes(samples, leading_chunk=leading_chunk))
    assert np.array_equal(read(str(extensible)), read(plain))


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("kwargs, message", [
    (dict(subformat=3, bits=32), "WAVE_FORMAT_EXTENSIBLE file whose samples are not PCM"),
    (dict(channels=2), "2 channels"),
    (dict(bits=24), "24-bit samples"),
    (dict(rate=8000), "8000 Hz"),
])
def test_extensible_wav_that_is_not_16_bit_mono_pcm_is_rejected(tmp_path, read, kwargs,
                                                                 message):
    path = tmp_path / "x.wav"
    path.write_bytes(wav_extensible_bytes(tone(440, 0.1), **kwargs))
    with pytest.raises(UserError, match=message) as err:
        read(str(path))
    assert "np." not in str(err.value)


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("case, message", [
    ("empty", r"is empty \(0 bytes\); replace it"),
    ("header_only", r"holds no samples \(a WAV header only\); replace it"),
    ("cut_in_header", r"not a readable WAV file \(it ends inside its header, 30 bytes\)"),
    ("folder", "is a folder, not a WAV file; replace it"),
])
def test_empty_headerless_and_folder_wavs_are_rejected(tmp_path, read, case, message):
    path = tmp_path / "clip.wav"
    if case == "folder":
        path.mkdir()
    else:
        write_wav(str(path), tone(440, 0.1) if case == "cut_in_header" else [])
        path.write_bytes(path.read_bytes()[:{"empty": 0, "cut_in_header": 30}.get(case)])
    with pytest.raises(UserError, match=message) as err:
        read(str(path))
    assert "np." not in str(err.value) and "()" not in str(err.value)


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
@pytest.mark.parametrize("stray_byte", [b"", b"\x7f"])
@pytest.mark.parametrize("riff_too", [False, True])
def test_streamed_wav_with_unknown_data_size_holds_the_rest_of_the_file(
        tmp_path, read, size, stray_byte, riff_too):
    """Streaming writers leave the data chunk's size (some the RIFF size too) at 0 or
    0xFFFFFFFF: the samples are the rest of the file, trimmed to whole samples."""
    plain, streamed = str(tmp_path / "plain.wav"), tmp_path / "streamed.wav"
    write_wav(plain, tone(440, 1.0))
    content = bytearray(open(plain, "rb").read())
    data = content.index(b"data")
    content[data + 4:data + 8] = struct.pack("<I", size)
    if riff_too:
        content[4:8] = struct.pack("<I", size)
    streamed.write_bytes(bytes(content) + stray_byte)
    samples = read(str(streamed))
    assert samples.shape == (16000,)
    assert np.array_equal(samples, read(plain))


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_a_streamed_wav_over_4_gib_is_counted_from_the_file_size(tmp_path, size):
    """Hours of 48 kHz stereo from a streaming writer: a size no 32-bit field holds.
    The file is sparse (no disk used) and mapped (no memory used)."""
    path = tmp_path / "long.wav"
    write_wav(str(path), tone(440, 0.1))
    content = bytearray(path.read_bytes())
    data = content.index(b"data")
    content[4:8] = content[data + 4:data + 8] = struct.pack("<I", size)
    total = (1 << 32) + 4098  # 4 GiB and a stray byte beyond whole samples
    with open(path, "wb") as f:
        f.write(content)
        f.truncate(total)
    samples, rate = audio.read_pcm(str(path), audio.read_file(str(path), mapped=True))
    assert samples.shape == ((total - data - 8) // 2, 1) and rate == 16000
    assert samples[0, 0] == struct.unpack_from("<h", content, data + 8)[0]


def test_augment_is_seeded_and_bounded():
    clips = np.tile(known_signal(), (4, 1))
    aug = speech.Augmentation(copies=1)
    a = speech.augment(clips, aug, np.random.default_rng(3), 16000)
    b = speech.augment(clips, aug, np.random.default_rng(3), 16000)
    assert np.array_equal(a, b) and a.shape == clips.shape and np.abs(a).max() <= 1.0
    assert not np.array_equal(a, clips)


def test_latency_checker_returns_positive_figures(tmp_path):
    from common.kws import model as kws_model
    from common.tflite import optimize
    config = audio.FeatureConfig()
    model = kws_model.ds_cnn(0.05, config.shape, (2, 1))
    tflite = optimize.convert(model, "float")
    rng = np.random.default_rng(0)
    result = measure_latency(tflite, lambda: rng.uniform(-1, 1, 48000).astype(np.float32),
                             lambda r: audio.from_microphone(config, r), runs=7,
                             warmup=2, num_threads=1)
    assert result["threads"] == 1
    for kind in ("inference", "total"):
        assert result[kind]["runs"] == 7
        assert 0 < result[kind]["median_ms"] <= result[kind]["p90_ms"]
    assert result["total"]["mean_ms"] > result["inference"]["mean_ms"]


def wav_with_rate(rate, samples=(0.1, -0.1) * 800):
    """A 16-bit mono WAV whose header says ``rate`` (any 32-bit value)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.asarray(np.array(samples) * 32767, "<i2").tobytes())
    content = bytearray(buffer.getvalue())
    content[24:28] = struct.pack("<I", rate)  # the fmt chunk's sample rate
    return bytes(content)


class a_stream:
    """``content`` as a pipe gives it: in reads of any size (here 1 to 999 bytes),
    a frame split between two of them."""

    def __init__(self, content):
        self.content, self.rng = io.BytesIO(content), np.random.default_rng(9)

    def read1(self, size):
        return self.content.read(min(size, int(self.rng.integers(1, 1000))))


@pytest.mark.parametrize("rate", [0, 999, 384001, 4_000_000_000])
def test_a_sample_rate_outside_1_khz_to_384_khz_is_a_damaged_header(tmp_path, rate):
    """0 Hz divided by zero in the resampler; 4 GHz made 0.0 s of audio, exit 0."""
    path = tmp_path / "x.wav"
    path.write_bytes(wav_with_rate(rate))
    with pytest.raises(UserError, match=f"sampled at {rate} Hz, outside 1000-384000 Hz"):
        audio.read_pcm(str(path), hint=audio.ANY_WAV_HINT)
    with pytest.raises(UserError, match=f"sampled at {rate} Hz, outside"):
        audio.PcmStream.wav("x", a_stream(wav_with_rate(rate)))
    for fine in (1000, 384000):  # the range's ends are recordings
        path.write_bytes(wav_with_rate(fine))
        assert audio.read_pcm(str(path))[1] == fine


def zero_stuffed_reference(x, from_rate, to_rate):
    """The textbook resampler, in float64, output by output: the whole filter over the
    signal with up - 1 zeros inserted between its samples, every down-th sample kept
    (the zeros' terms left out: they add nothing)."""
    up, down = audio._up_down(from_rate, to_rate)
    h, half_len = audio._resample_filter(up, down)
    out = []
    for n in range(-(-len(x) * up // down)):
        centre = n * down  # in the zero-stuffed signal; its sample q sits at q * up
        q = np.arange(max(0, -(-(centre - half_len) // up)),
                      min(len(x), (centre + half_len) // up + 1))
        out.append(np.dot(x[q], h[half_len + centre - q * up].astype(np.float64)))
    return np.array(out)


@pytest.mark.parametrize("rates", [(44100, 16000), (22050, 16000), (11025, 16000),
                                   (48000, 16000), (8000, 16000), (16000, 44100),
                                   (16000, 8000)])
def test_the_polyphase_resampler_is_the_zero_stuffed_filter(rates):
    x = np.random.default_rng(5).standard_normal(int(rates[0] * 0.3) + 7)
    got = audio.resample(x.astype(np.float32), *rates)
    assert np.allclose(got, zero_stuffed_reference(x, *rates), atol=1e-5)


def test_a_stream_resampled_as_it_comes_equals_the_recording_resampled():
    x = np.random.default_rng(7).standard_normal(44100 * 3 + 5).astype(np.float32)
    pieces = np.split(x, [1, 2, 500, 3000, 50000, 50001, 90000])
    streamed = list(audio.resample_stream(iter(pieces), 44100, 16000, 1600))
    assert max(len(p) for p in streamed) <= 1600
    assert np.array_equal(np.concatenate(streamed),
                          audio.resample_long(x, 44100, 16000, block_outputs=1600))


@pytest.mark.parametrize("size", [None, 0, 0xFFFFFFFF])
def test_a_wav_on_a_pipe_is_the_wav_file(tmp_path, size):
    """kws_detect reads a pipe, a FIFO or standard input as it arrives (its header
    too), not whole: the same pieces as the file's, whatever the data size says."""
    path = str(tmp_path / "rec.wav")
    rng = np.random.default_rng(8)
    write_wav(path, list(rng.uniform(-0.9, 0.9, 44100 * 2 * 2 + 2)), rate=44100,
              channels=2)
    content = bytearray(open(path, "rb").read())
    if size is not None:  # a streaming writer's unknown sizes
        data = content.index(b"data")
        content[4:8] = content[data + 4:data + 8] = struct.pack("<I", size)
    tail = b"LIST\x04\x00\x00\x00abcd" if size is None else b"\x01"  # a chunk; a stray byte
    pcm = audio.PcmStream.wav("rec", a_stream(bytes(content) + tail), b"")
    streamed = np.concatenate(list(pcm.pieces(16000)))
    whole, rate = audio.read_wav_any(path)
    assert np.allclose(streamed, audio.resample_long(whole, rate, 16000), atol=1e-6)
    if size is None:  # its header's size: what follows is not audio; less is truncated
        cut = a_stream(bytes(content[:-100]))
        with pytest.raises(UserError, match="truncated: its header promises 88201"):
            list(audio.PcmStream.wav("rec", cut).pieces(16000))


class Endless:
    """A pipe that never ends (``/dev/zero``, or a WAV header then endless samples),
    counting the bytes read from it."""

    def __init__(self, head=b""):
        self.head, self.given = head, 0

    def read1(self, size):
        chunk = (self.head + bytes(size))[:size]
        self.head = self.head[size:]
        self.given += len(chunk)
        return chunk


def test_an_endless_stream_is_read_as_it_is_used_never_whole():
    with pytest.raises(UserError, match="does not start with RIFF"):
        audio.PcmStream.wav("/dev/zero", Endless())  # refused from its first bytes
    header = bytearray(wav_with_rate(16000, samples=()))
    header[4:8] = header[40:44] = struct.pack("<I", 0xFFFFFFFF)
    source = Endless(bytes(header))
    pieces = audio.PcmStream.wav("endless", source).pieces(16000)
    heard = sum(len(next(pieces)) for _ in range(200))
    assert heard >= 16000 * 3  # seconds of silence, read a little ahead of use only
    assert source.given <= len(header) + 2 * heard + audio.STREAM_HEADER_BYTES
