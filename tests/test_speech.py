"""Speech data: every example keeps its label, through the split lists and augmentation."""
import numpy as np
import pytest

from common.errors import UserError
from common.kws import audio, speech
from conftest import LABELS


def split_lines(speech_dir, split):
    return (speech_dir / f"kws_{split}_split.txt").read_text().split()


def dominant_hz(clip, rate=16000):
    return np.argmax(np.abs(np.fft.rfft(clip))) * rate / len(clip)


@pytest.mark.parametrize("splits", [speech.SPLITS, ("val", "test")])
@pytest.mark.parametrize("labels", [None, sorted(LABELS)[::-1]])  # None or a model's order
def test_every_split_indexes_labels_by_folder_name_in_one_order(speech_dir, splits, labels):
    order = labels or sorted(LABELS)
    clips = speech.load_splits(str(speech_dir), str(speech_dir), 16000, splits,
                               labels=labels)
    assert clips.labels == order and sorted(clips.splits) == sorted(splits)
    for split in splits:
        folders = [line.split("/")[-2] for line in split_lines(speech_dir, split)]
        assert folders != sorted(folders)  # shuffled, as the real lists are
        waves, y = clips.splits[split]
        assert y.tolist() == [order.index(folder) for folder in folders]
        # each row holds that clip: the fixture's tone for LABELS[k] is 300 + 250 k Hz
        # plus at most 80 Hz
        assert [order[i] for i in y] == [LABELS[round((dominant_hz(w) - 340) / 250)]
                                         for w in waves]


def test_augmented_copies_keep_the_label_of_their_clip():
    # 62.5 Hz frequency bins; clip i is a tone centred on bin 4 + 2 i
    config = audio.FeatureConfig(kind="stft", frame_length=256, frame_step=128,
                                 fft_length=256)
    n = 16
    t = np.arange(16000) / 16000
    waves = np.stack([0.5 * np.sin(2 * np.pi * (4 + 2 * i) * 62.5 * t)
                      for i in range(n)]).astype(np.float32)
    y = np.random.default_rng(0).permutation(np.arange(n) % 8)  # 2 clips a label, unsorted
    clips = speech.Clips(list(LABELS), {"train": (waves, y)}, {})
    # a row is recognised by its loudest frequency bin: keep the noise 10 dB or more
    # below the tone (at 0 dB a background clip is as loud as the clip itself, and
    # brown noise outweighs the tone's bin in the lowest ones); every kind of noise
    # (white, pink, brown, another clip) is still mixed in
    aug = speech.Augmentation(copies=2, snr_db_range=(10.0, 20.0))
    x, y_aug = speech.featurize(clips, config, aug, seed=0).train
    assert x.shape == (3 * n,) + config.shape and y_aug.shape == (3 * n,)
    clip_of_row = np.round((x[..., 0].mean(axis=1).argmax(axis=1) - 4) / 2).astype(int)
    assert np.bincount(clip_of_row, minlength=n).tolist() == [3] * n  # itself + 2 copies
    assert np.array_equal(y_aug, y[clip_of_row])
    assert not np.allclose(x[n:2 * n], x[:n])  # the copies are augmented


def test_listed_clip_that_is_a_folder_is_named_as_one(speech_dir):
    clip = speech_dir / "mini_speech_commands" / "go" / "clip4_nohash_0.wav"  # a test clip
    clip.unlink()
    clip.mkdir()
    with pytest.raises(UserError, match=r"clip4_nohash_0.wav' \(listed in .*kws_test_split"
                                        r".txt\) is a folder, not a WAV file; replace it"):
        speech.load_splits(str(speech_dir), str(speech_dir), 16000)


@pytest.mark.parametrize("spelling", ["same", "other"])
def test_a_clip_listed_twice_in_one_split_is_an_error_naming_the_line(speech_dir, spelling):
    path = speech_dir / "kws_train_split.txt"
    lines = path.read_text().splitlines()
    # line 3 again as line 7; "other": the same clip, written without './data/'
    again = lines[2] if spelling == "same" else lines[2].replace("./data/", "")
    path.write_text("\n".join(lines[:6] + [again] + lines[6:]) + "\n")
    with pytest.raises(UserError, match=rf"kws_train_split.txt' line 7: '{again}' lists "
                                        r"the clip of line 3 again \(it would count "
                                        r"twice\); remove one$"):
        speech.load_splits(str(speech_dir), str(speech_dir), 16000)
