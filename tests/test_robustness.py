"""The robustness report (issue 18): each perturbation does what it says on a known
signal, the report is reproducible from its seed, and a KWS run reports it."""
import json

import numpy as np
import pytest

import kws_train
from common.kws import audio, robustness, speech
from conftest import LABELS
from test_model_guards import kws_argv, run_cli, tone_dataset

RATE = 16000
T = np.arange(RATE) / RATE


def tone(hz, amplitude=0.1):
    return (amplitude * np.sin(2 * np.pi * hz * T)).astype(np.float32)


def db(ratio):
    return 20 * np.log10(ratio)


def rms(x):
    return np.sqrt(np.mean(np.square(x, dtype=np.float64)))


def tone_level(x, hz):
    """Amplitude of the ``hz`` component of a 1 s clip (integer Hz: one rFFT bin)."""
    return 2 * np.abs(np.fft.rfft(x)[int(hz)]) / len(x)


def test_level_gain_is_measured_back_and_loud_clips_saturate():
    x = np.stack([tone(440, 0.01), tone(440, 0.5)])
    quiet = robustness.perturb_split(x, RATE, "quiet_20db")
    loud = robustness.perturb_split(x, RATE, "loud_20db")
    assert db(rms(quiet[1]) / rms(x[1])) == pytest.approx(-20.0, abs=0.01)
    assert db(rms(loud[0]) / rms(x[0])) == pytest.approx(20.0, abs=0.01)
    assert np.abs(loud[1]).max() == 1.0 and np.mean(np.abs(loud[1]) == 1.0) > 0.5


def test_shift_moves_a_click_by_250_ms_and_cuts_at_the_edges():
    x = np.zeros((2, RATE), np.float32)
    x[0, 8000] = 1.0
    x[1, 2000] = 1.0  # 125 ms in: moved 250 ms earlier it leaves the clip
    early = robustness.perturb_split(x, RATE, "early_250ms")
    late = robustness.perturb_split(x, RATE, "late_250ms")
    assert np.flatnonzero(early[0]).tolist() == [4000]
    assert np.flatnonzero(late[0]).tolist() == [12000]
    assert np.flatnonzero(late[1]).tolist() == [6000]
    assert not early[1].any()


def schroeder_rt60(h, rate):
    """RT60 from the energy decay curve (Schroeder's backward integral), a line
    fitted from -5 to -25 dB (T20) extrapolated to 60 dB."""
    edc = np.cumsum((h ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = (edc_db <= -5) & (edc_db >= -25)
    slope = np.polyfit(np.flatnonzero(fit) / rate, edc_db[fit], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60, drr", [(0.3, 0.0), (0.7, -3.7)])
def test_room_impulse_response_decays_in_its_rt60(rt60, drr):
    rng = np.random.default_rng(0)
    for _ in range(3):
        h = robustness.room_impulse_response(rt60, drr, RATE, rng)
        assert h[0] == 1.0  # the direct path first
        assert schroeder_rt60(h, RATE) == pytest.approx(rt60, rel=0.10)
        assert 10 * np.log10(1.0 / np.sum(h[1:] ** 2)) == pytest.approx(drr, abs=1e-6)


def test_reverb_keeps_the_rms_and_smears_a_click():
    x = np.zeros((1, RATE), np.float32)
    x[0, 1000] = 0.5
    y = robustness.perturb_split(x, RATE, "reverb_700ms")
    assert rms(y) == pytest.approx(rms(x), rel=1e-3)
    assert np.flatnonzero(np.abs(y[0]) > 1e-3)[0] == 1000  # nothing before the click
    assert np.count_nonzero(np.abs(y[0, 1001:]) > 1e-4) > 0.3 * RATE * 0.7


def test_telephone_band_passes_300_to_3400_hz_only():
    x = (tone(100) + tone(1000) + tone(6000))[None]
    y = robustness.perturb_split(x, RATE, "telephone")[0]
    assert db(tone_level(y, 1000) / tone_level(x[0], 1000)) == pytest.approx(0, abs=1.0)
    for hz in (100, 6000):
        assert db(tone_level(y, hz) / tone_level(x[0], hz)) <= -20


def test_tilt_changes_two_tones_by_db_per_octave():
    x = (tone(500) + tone(2000))[None]
    y = robustness.apply_tilt(x, RATE, [6.0])[0]
    before = db(tone_level(x[0], 2000) / tone_level(x[0], 500))
    after = db(tone_level(y, 2000) / tone_level(y, 500))
    assert after - before == pytest.approx(12.0, abs=0.1)  # 2 octaves at 6 dB/octave
    assert rms(y) == pytest.approx(rms(x), rel=1e-3)
    drawn = np.random.default_rng(1).uniform(-6, 6, 4)  # tilt() draws one per clip
    tilted = robustness.tilt(np.repeat(x, 4, 0), RATE, np.random.default_rng(1), 6.0)
    for clip, slope in zip(tilted, drawn):
        ratio = db(tone_level(clip, 2000) / tone_level(clip, 500))
        assert ratio - before == pytest.approx(2 * slope, abs=0.1)


def active_span(x, threshold=0.25):
    on = np.flatnonzero(x > threshold)
    return on[0], on[-1] + 1


@pytest.mark.parametrize("name, factor", [("fast_1.15x", 1.15), ("slow_0.85x", 0.85)])
def test_speaking_rate_changes_the_active_part_by_the_factor(name, factor):
    x = np.zeros((1, RATE), np.float32)
    x[0, 4000:12000] = 0.5
    y = robustness.perturb_split(x, RATE, name)[0]
    start, end = active_span(y)
    assert end - start == pytest.approx(8000 / factor, abs=3)
    assert (start + end) / 2 == pytest.approx(8000, abs=3)  # centred, as it was


@pytest.mark.parametrize("name, factor", [("warp_up_10pct", 1.1), ("warp_down_10pct", 0.9)])
def test_mel_warp_moves_a_tone_peak_by_the_expected_bins(name, factor):
    y = robustness.perturb_split(tone(1000)[None], RATE, name)[0]
    spectrum = audio.stft_magnitude(y, 1024, 256, 1024)[4:-4].mean(axis=0)
    expected = robustness.mel_warp_hz(1000, factor) * 1024 / RATE  # 74.1 / 54.8
    assert abs(expected - 64) > 9  # the tone's own bin is 64: a move of ~10 bins
    assert abs(spectrum.argmax() - expected) <= 1
    peak = spectrum[int(round(expected)) - 2:int(round(expected)) + 3]
    assert np.sum(peak ** 2) > 0.9 * np.sum(spectrum ** 2)  # one clean partial
    assert rms(y) == pytest.approx(rms(tone(1000)), rel=1e-3)


def test_report_is_reproducible_from_its_seed():
    clips = np.random.default_rng(5).uniform(-0.3, 0.3, (3, RATE)).astype(np.float32)
    for name in robustness.NAMES:
        first = robustness.perturb_split(clips, RATE, name)
        assert first.shape == clips.shape and first.dtype == np.float32
        assert np.array_equal(first, robustness.perturb_split(clips.copy(), RATE, name))
    for name in ("reverb_300ms", "tilt_6db"):  # the conditions that draw per clip
        assert not np.array_equal(robustness.perturb_split(clips, RATE, name),
                                  robustness.perturb_split(clips, RATE, name, seed=1))
        # a condition's draws do not depend on the batch around a clip beyond its
        # position: the first clip alone gets what it got in the batch
        assert np.array_equal(robustness.perturb_split(clips[:1], RATE, name),
                              robustness.perturb_split(clips, RATE, name)[:1])


def test_kws_run_reports_robustness_in_json_and_summary(tmp_path, capsys):
    data_dir = tone_dataset(tmp_path / "speech", {"train": 4, "val": 2, "test": 2})
    out = tmp_path / "out"
    code, stdout = run_cli(kws_train.main, ["--version", "b", *kws_argv(
        data_dir, out, "--epochs", "2", "--alpha", "0.05", "--listening-minutes", "0")],
        capsys)
    assert code in (0, 3)
    report = json.loads((out / "kws_b.json").read_text())
    metrics = report["metrics"]
    accuracy = {name: metrics[f"robust_{name}"] for name in robustness.NAMES}
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())
    assert metrics["robust_worst"] == min(accuracy.values())
    text = json.dumps(report)
    assert '"robustness"' in text
    details = next(v for v in _walk(report) if isinstance(v, dict) and "robustness" in v)
    assert details["robustness"]["accuracy"] == accuracy
    assert details["robustness"]["seed"] == robustness.REPORT_SEED
    assert "robustness (test split, seed" in stdout
    for name in robustness.NAMES:
        assert name in stdout
    assert metrics["clips"] == 2 * len(LABELS)


def _walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


# --- the training half: the same perturbations as augmentation ingredients ---------

def plain_augmentation(*perturbations, **fields):
    """An augmentation with no shift, unit gain and (unless given) no noise, so what
    the ``perturbations`` do is all that changes a clip."""
    fields = {"copies": 1, "max_shift_s": 0.0, "gain_range": (1.0, 1.0),
              "clean_fraction": 1.0, **fields}
    return speech.Augmentation(perturbations=perturbations, **fields)


@pytest.mark.parametrize("fields", [dict(kind="loudness", probability=0.5, low=0, high=1),
                                    dict(kind="level", probability=1.5, low=0, high=1),
                                    dict(kind="level", probability=0.5, low=2, high=1),
                                    dict(kind="reverb", probability=0.5, low=0, high=1)])
def test_perturbation_rejects_an_unknown_kind_probability_or_range(fields):
    with pytest.raises(ValueError):
        speech.Perturbation(**fields)


def test_each_example_gets_a_perturbation_with_its_probability_and_range():
    clips = np.tile(tone(1000), (600, 1))
    aug = plain_augmentation(speech.Perturbation("level", 0.3, -12.0, -6.0))
    out = speech.augment(clips, aug, np.random.default_rng(3), 16000)
    change = db(np.array([rms(o) for o in out]) / rms(clips[0]))
    touched = change < -0.01
    assert abs(touched.mean() - 0.3) < 0.06
    assert np.all(np.abs(change[~touched]) < 1e-4)  # the rest as they were
    assert change[touched].min() > -12.01 and change[touched].max() < -5.99
    assert change[touched].min() < -11.5 and change[touched].max() > -6.5  # the range
    assert np.array_equal(out, speech.augment(clips, aug, np.random.default_rng(3), 16000))


def test_microphone_perturbations_filter_the_noise_too():
    """The band, tilt and level are the microphone's: they come after the noise."""
    clips = np.tile(tone(1000), (20, 1))
    aug = plain_augmentation(speech.Perturbation("lowpass", 1.0, 2000.0, 2000.0),
                             speech.Perturbation("highpass", 1.0, 300.0, 300.0),
                             clean_fraction=0.0, speech_fraction=0.0,
                             colours=("white",), snr_db_range=(0.0, 0.0))
    out = speech.augment(clips, aug, np.random.default_rng(4), 16000)
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64), axis=1)) ** 2
    outside = spectrum[:, 2001:].sum(1) + spectrum[:, :300].sum(1)
    assert np.all(outside < 1e-6 * spectrum.sum(1))  # the white noise is band-limited
    # and was added: at 0 dB the tone's power spread over 8000 bins, 1/8000 of its bin's
    assert np.all(spectrum[:, 1100:1900].mean(1) > 1e-5 * spectrum[:, 1000])


BEFORE_NOISE = {"speed", "warp", "reverb"}  # the talker and the room; the rest: the mic


@pytest.mark.parametrize("kind", ["speed", "warp", "reverb", "lowpass", "highpass", "tilt",
                                  "level"])
def test_each_kind_joins_before_or_after_the_noise(kind, monkeypatch):
    seen = []

    def stub(x, rate, rng, value):
        seen.append(x.copy())
        return x
    assert speech.PERTURBATIONS[kind][1] == (kind in BEFORE_NOISE)
    monkeypatch.setitem(speech.PERTURBATIONS, kind, (stub, speech.PERTURBATIONS[kind][1]))
    clips = np.tile(tone(1000), (3, 1))
    speech.augment(clips, plain_augmentation(
        speech.Perturbation(kind, 1.0, 1.0, 1.0), clean_fraction=0.0, speech_fraction=0.0,
        snr_db_range=(0.0, 0.0)), np.random.default_rng(0), 16000)
    assert len(seen) == 3
    clean = [np.array_equal(x[0], clips[0]) for x in seen]
    assert all(clean) if kind in BEFORE_NOISE else not any(clean)


def test_talker_and_room_perturbations_are_the_reports_functions():
    clip = tone(500)[None]
    speed = speech.augment(clip, plain_augmentation(
        speech.Perturbation("speed", 1.0, 0.93, 0.93)), np.random.default_rng(0), 16000)
    # the factor on the 0.05 grid (source rates at multiples of 800 Hz)
    np.testing.assert_allclose(speed, robustness.speed(clip, RATE, None, 0.95), atol=1e-6)
    warp = speech.augment(clip, plain_augmentation(
        speech.Perturbation("warp", 1.0, 1.1, 1.1)), np.random.default_rng(0), 16000)
    np.testing.assert_allclose(warp, robustness.warp(clip, RATE, None, 1.1), atol=1e-6)
    click = np.zeros((1, RATE), np.float32)
    click[0, 100] = 0.5
    room = speech.augment(click, plain_augmentation(
        speech.Perturbation("reverb", 1.0, 0.3, 0.3)), np.random.default_rng(0), 16000)[0]
    assert np.count_nonzero(np.abs(room[100:]) > 1e-4) > 0.2 * RATE  # a 0.3 s tail
    assert np.abs(room[:100]).max() < 1e-6  # nothing before the click
    # one source distance: 0.7 s has a direct-to-reverberant ratio of -3.7 dB
    room = speech.augment(click, plain_augmentation(
        speech.Perturbation("reverb", 1.0, 0.7, 0.7)), np.random.default_rng(0), 16000)[0]
    assert 10 * np.log10(room[100] ** 2 / np.sum(room[101:] ** 2)) == pytest.approx(
        -3.68, abs=0.05)


def test_the_recipes_perturbations_reach_the_augmented_copies():
    waves = np.tile(tone(1000, 0.3), (6, 1))
    clips = speech.Clips(["a"], {"train": (waves, np.zeros(6, np.int64))}, {})
    config = audio.FeatureConfig()
    plain = speech.featurize(clips, config, plain_augmentation(), 0)
    quiet = speech.featurize(clips, config, plain_augmentation(
        speech.Perturbation("level", 1.0, -30.0, -30.0)), 0)
    assert np.array_equal(plain.train[0][:6], quiet.train[0][:6])  # the originals
    assert not np.allclose(plain.train[0][6:], quiet.train[0][6:])  # the copies
