"""Noise at a measured SNR: coloured noise, mixing, the fixed-seed noisy splits, and
the noise-robust training augmentation (docs/spec.md, "Device figures")."""
import numpy as np
import pytest

from common.kws import noise, speech

RATE = 16000
SLOPES = {"white": 0.0, "pink": -1.0, "brown": -2.0}  # log10 power per decade of f


def sine(freq, amplitude=0.3, samples=RATE):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(samples) / RATE)
            ).astype(np.float32)


def measured_snr(clip, noisy):
    """The spec's SNR, measured back: the noise is what mixing added (inf if nothing)."""
    clip, noisy = np.asarray(clip, np.float64), np.asarray(noisy, np.float64)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.mean(clip ** 2, axis=-1)
                             / np.mean((noisy - clip) ** 2, axis=-1))


def log_fit(psd, samples, low=50.0, high=6000.0):
    """Least-squares slopes of log10 power vs log10 frequency over [low, high] Hz, one
    per row of ``psd`` (``[..., samples // 2 + 1]``, a power spectrum)."""
    f = np.fft.rfftfreq(samples, 1 / RATE)
    band = (f >= low) & (f <= high)
    x = np.log10(f[band]) - np.log10(f[band]).mean()
    y = np.log10(psd[..., band])
    return (y - y.mean(axis=-1, keepdims=True)) @ x / (x @ x)


def spectral_slope(x):
    """The slope of the periodogram of ``x`` (``[samples]``, or ``[k, samples]``:
    the rows' periodograms averaged)."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    return log_fit(np.mean(np.abs(np.fft.rfft(x, axis=-1)) ** 2, axis=0), x.shape[1])


# --- mixing -------------------------------------------------------------------------

@pytest.mark.parametrize("snr", [-5.0, 0.0, 3.0, 7.5, 10.0, 20.0, 30.0])
def test_mix_at_snr_hits_the_requested_snr(snr):
    clip = sine(440)
    clip[12000:] = 0  # a padded clip: its power is over the whole second
    rng = np.random.default_rng(0)
    for colour in noise.COLOURS:
        raw = 3.0 * noise.colored_noise(colour, RATE, rng)  # any noise power
        mixed = noise.mix_at_snr(clip, raw, snr)
        assert mixed.dtype == np.float32 and mixed.shape == clip.shape
        assert abs(measured_snr(clip, mixed) - snr) < 0.01
        assert abs(noise.snr_db(clip, mixed - clip) - snr) < 0.01


def test_mix_at_snr_takes_one_snr_per_row_leaves_silence_and_does_not_clip():
    clips = np.stack([sine(300), sine(1000, 0.9), np.zeros(RATE, np.float32)])
    raw = noise.colored_noise("white", RATE, np.random.default_rng(1), count=3)
    snrs = np.array([25.0, -5.0, 10.0])
    mixed = noise.mix_at_snr(clips, raw, snrs)
    np.testing.assert_allclose(measured_snr(clips[:2], mixed[:2]), snrs[:2], atol=0.01)
    assert np.array_equal(mixed[2], clips[2])  # silent: SNR undefined, left alone
    assert np.abs(mixed[1]).max() > 1.0  # -5 dB under a 0.9 sine: the caller clips
    with pytest.raises(ValueError, match="silent noise"):
        noise.mix_at_snr(clips[0], np.zeros(RATE, np.float32), 10.0)


# --- coloured noise -----------------------------------------------------------------

@pytest.mark.parametrize("colour", noise.COLOURS)
def test_each_colour_has_its_spectral_slope(colour):
    # a few long realisations, their periodograms averaged
    x = noise.colored_noise(colour, 4 * RATE, np.random.default_rng(2), count=8)
    assert abs(spectral_slope(x) - SLOPES[colour]) < 0.1


@pytest.mark.parametrize("colour", noise.COLOURS)
@pytest.mark.parametrize("length", [RATE, 4001])
def test_colored_noise_has_unit_power(colour, length):
    one = noise.colored_noise(colour, length, np.random.default_rng(3))
    assert one.dtype == np.float32 and one.shape == (length,)
    assert abs(np.mean(one.astype(np.float64) ** 2) - 1) < 1e-5
    many = noise.colored_noise(colour, length, np.random.default_rng(3), count=5)
    assert many.dtype == np.float32 and many.shape == (5, length)
    np.testing.assert_allclose(np.mean(many.astype(np.float64) ** 2, axis=1), 1, atol=1e-5)
    assert abs(np.mean(many.astype(np.float64))) < 1e-3  # no DC
    assert not np.allclose(many[0], many[1])  # independent realisations
    np.testing.assert_array_equal(many[0], one)  # rows are consecutive draws
    with pytest.raises(ValueError, match="colour"):
        noise.colored_noise("purple", length, np.random.default_rng(3))


# --- the fixed-seed noisy splits ------------------------------------------------------

def small_split():
    rng = np.random.default_rng(4)
    clips = np.stack([sine(200 + 50 * i, rng.uniform(0.02, 0.2)) for i in range(6)])
    clips[2, 8000:] = 0
    clips[4] = 0  # a silent clip
    return clips


def test_noisy_split_is_reproducible_from_the_seed():
    clips = small_split()
    a = noise.noisy_split(clips, "pink", 10, noise.REPORT_SEED)
    assert a.dtype == np.float32 and a.shape == clips.shape
    assert np.array_equal(a, noise.noisy_split(clips.copy(), "pink", 10, noise.REPORT_SEED))
    assert not np.allclose(a, noise.noisy_split(clips, "pink", 10, noise.REPORT_SEED + 1))
    # one condition's noise does not depend on which conditions were computed before
    fresh = {}
    for colour, snr in reversed(noise.REPORT_CONDITIONS):
        fresh[colour, snr] = noise.noisy_split(clips, colour, snr, noise.REPORT_SEED)
    for colour, snr in noise.REPORT_CONDITIONS:
        assert np.array_equal(noise.noisy_split(clips, colour, snr, noise.REPORT_SEED),
                              fresh[colour, snr])
    assert not np.allclose(fresh["white", 10], fresh["pink", 10])
    # each condition's generator is seeded by (seed, colour, SNR): all streams differ
    streams = {noise.condition_rng(colour, snr, seed).random()
               for colour, snr in noise.REPORT_CONDITIONS + (("white", -5), ("white", 2.5))
               for seed in (noise.REPORT_SEED, 0)}
    assert len(streams) == 2 * (len(noise.REPORT_CONDITIONS) + 2)
    assert not np.allclose(fresh["white", 10] - clips,
                           np.sqrt(10) * (fresh["white", 20] - clips))  # not one noise


def test_noisy_split_mixes_its_colour_at_its_snr():
    clips = small_split()
    audible = np.any(clips != 0, axis=1)
    for colour, snr in noise.REPORT_CONDITIONS:
        noisy = noise.noisy_split(clips, colour, snr, noise.REPORT_SEED)
        np.testing.assert_allclose(measured_snr(clips[audible], noisy[audible]), snr,
                                   atol=0.01)
        assert not noisy[~audible].any()  # silence stays silent
        assert abs(spectral_slope(noisy[audible] - clips[audible]) - SLOPES[colour]) < 0.1
    loud = np.tile(sine(440, 0.99), (2, 1))
    assert np.abs(noise.noisy_split(loud, "white", 0, 0)).max() == 1.0  # as a WAV holds it
    assert np.abs(noise.noisy_split(loud, "white", 0, 0, saturate=False)).max() > 1.0


# --- the training augmentation ---------------------------------------------------------

PLAIN = dict(max_shift_s=0.0, gain_range=(1.0, 1.0))  # so that out - clip is the noise


def tones(n, amplitude=0.05):
    """Clip i is a sine of 100 + 5 i Hz: a whole number of cycles in 1 s, so a
    circularly shifted clip (background speech) keeps all its power in that bin."""
    return np.stack([sine(100 + 5 * i, amplitude) for i in range(n)])


def kinds_of_noise(clips, out):
    """For each row: ("clean", None), ("speech", index of the background clip) or
    ("colour", fitted spectral slope), and the SNR of what was added."""
    added = out.astype(np.float64) - clips
    psd = np.abs(np.fft.rfft(added, axis=-1)) ** 2
    peak = np.argmax(psd, axis=-1)
    tonal = psd[np.arange(len(psd)), peak] > 0.99 * psd.sum(axis=-1)  # another clip
    with np.errstate(divide="ignore", invalid="ignore"):  # a clean row: log10(0)
        slopes = log_fit(psd, clips.shape[1])
    clean = ~added.any(axis=-1)
    kinds = [("clean", None) if c else ("speech", (p - 100) / 5) if t else ("colour", s)
             for c, t, p, s in zip(clean, tonal, peak, slopes)]
    return kinds, measured_snr(clips, out)


def test_augment_is_seeded():
    clips = tones(64, 0.3)
    before = clips.copy()
    aug = speech.Augmentation(copies=1)
    a = speech.augment(clips, aug, np.random.default_rng(5), 16000)
    assert a.dtype == np.float32 and a.shape == clips.shape
    assert np.array_equal(a, speech.augment(clips, aug, np.random.default_rng(5), 16000))
    assert not np.allclose(a, speech.augment(clips, aug, np.random.default_rng(6), 16000))
    assert np.array_equal(clips, before)  # the input is not modified


@pytest.mark.parametrize("snr_range", [(0.0, 20.0), (-5.0, 3.0)])
def test_augment_mixes_noise_kinds_in_their_proportions_at_snrs_in_range(snr_range):
    n = 1200
    clips = tones(n)
    aug = speech.Augmentation(copies=1, snr_db_range=snr_range, **PLAIN)
    assert (aug.clean_fraction, aug.speech_fraction, aug.colours) == (
        0.2, 0.25, ("white", "pink", "brown"))  # the documented defaults
    out = speech.augment(clips, aug, np.random.default_rng(7), 16000)
    assert np.abs(out).max() <= 1.0
    kinds, snrs = kinds_of_noise(clips, out)
    kind = np.array([k for k, _ in kinds])
    noisy = kind != "clean"
    assert abs(np.mean(~noisy) - aug.clean_fraction) < 0.04
    # every noisy example at an SNR in the range, spread over all of it
    low, high = snr_range
    assert np.all((snrs[noisy] > low - 0.01) & (snrs[noisy] < high + 0.01))
    assert snrs[noisy].min() < low + 0.5 and snrs[noisy].max() > high - 0.5
    assert abs(np.mean(snrs[noisy]) - (low + high) / 2) < 0.1 * (high - low)
    # background speech: another clip of the batch, in about speech_fraction of them
    speech_rows = np.flatnonzero(kind == "speech")
    assert abs(len(speech_rows) / noisy.sum() - aug.speech_fraction) < 0.05
    background = np.array([kinds[i][1] for i in speech_rows])
    assert np.all(background == np.round(background)) and np.all(background != speech_rows)
    background = background.astype(int)
    assert len(set(background)) > 0.5 * len(speech_rows)  # not one clip
    assert len(set((background - speech_rows) % n)) > 0.5 * len(speech_rows)  # nor a rule
    # randomly shifted: the background tone's phase is not its clip's
    bins = 100 + 5 * background
    phase = np.angle(np.fft.rfft(out[speech_rows].astype(np.float64) - clips[speech_rows])
                     [np.arange(len(bins)), bins]
                     / np.fft.rfft(clips[background])[np.arange(len(bins)), bins])
    assert np.mean(np.abs(phase) > 0.1) > 0.8
    # coloured noise: each example's slope is one colour's, the colours about equal
    slopes = np.array([kinds[i][1] for i in np.flatnonzero(kind == "colour")])
    nearest = np.round(-slopes)
    assert np.all(np.abs(slopes + nearest) < 0.25) and set(nearest) == {0, 1, 2}
    assert np.all(np.abs(np.bincount(nearest.astype(int)) / len(slopes) - 1 / 3) < 0.07)


def test_augment_snr_is_relative_to_the_example_after_its_gain():
    clips = tones(200)
    aug = speech.Augmentation(copies=1, max_shift_s=0.0, gain_range=(0.5, 0.5),
                              clean_fraction=0.0, snr_db_range=(12.0, 12.0))
    out = speech.augment(clips, aug, np.random.default_rng(11), 16000)
    np.testing.assert_allclose(measured_snr(0.5 * clips, out), 12.0, atol=0.01)


def test_augment_draws_only_the_given_colours_and_fractions():
    clips = tones(300)
    aug = speech.Augmentation(copies=1, colours=("brown",), speech_fraction=0.0,
                              clean_fraction=0.0, snr_db_range=(5.0, 5.0), **PLAIN)
    kinds, snrs = kinds_of_noise(clips, speech.augment(clips, aug, np.random.default_rng(8),
                                                       16000))
    assert all(k == "colour" and abs(slope + 2) < 0.25 for k, slope in kinds)
    np.testing.assert_allclose(snrs, 5.0, atol=0.01)
    aug = speech.Augmentation(copies=1, clean_fraction=1.0, **PLAIN)
    assert np.array_equal(speech.augment(clips, aug, np.random.default_rng(8), 16000), clips)


def test_augment_leaves_silence_silent_and_a_silent_background_is_not_used():
    clips = np.zeros((4, RATE), np.float32)
    clips[0] = sine(440, 0.05)
    # every example noisy, all background speech: but clip 0's candidates are silent
    aug = speech.Augmentation(copies=1, clean_fraction=0.0, speech_fraction=1.0,
                              snr_db_range=(10.0, 10.0), **PLAIN)
    out = speech.augment(clips, aug, np.random.default_rng(9), 16000)
    assert not out[1:].any()
    kinds, snrs = kinds_of_noise(clips[:1], out[:1])
    assert kinds[0][0] == "colour" and abs(snrs[0] - 10.0) < 0.01


def test_augment_clips_to_full_scale():
    clips = np.tile(np.sign(sine(440)) * 0.99, (50, 1)).astype(np.float32)
    aug = speech.Augmentation(copies=1, clean_fraction=0.0, snr_db_range=(0.0, 0.0))
    out = speech.augment(clips, aug, np.random.default_rng(10), 16000)
    assert np.abs(out).max() == 1.0


def test_augmentation_is_hashable_and_checked():
    aug = speech.Augmentation(copies=2, colours=["pink", "white"], snr_db_range=[0, 10])
    assert aug.colours == ("pink", "white") and aug.snr_db_range == (0, 10)
    assert hash(aug) == hash(speech.Augmentation(copies=2, colours=("pink", "white"),
                                                 snr_db_range=(0, 10)))
    with pytest.raises(ValueError, match="colours"):
        speech.Augmentation(colours=("purple",))
    with pytest.raises(ValueError, match="snr_db_range"):
        speech.Augmentation(snr_db_range=(20.0, 0.0))
    with pytest.raises(ValueError, match="clean_fraction"):
        speech.Augmentation(clean_fraction=1.5)
