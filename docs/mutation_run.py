#!/usr/bin/env python3
"""Plant the listening code's mutants one at a time and run the tests that should
catch each (issue 28; the tables are in docs/mutation_testing.md).

    python docs/mutation_run.py                 # every mutant
    python docs/mutation_run.py 1 2a F7         # some of them
    python docs/mutation_run.py --list          # what each one changes
    python docs/mutation_run.py --before 7      # the tests that existed before only
    python docs/mutation_run.py --guards 7      # tests/test_listening_guards.py only

Each mutant is a textual change to one source file (every ``old`` must occur there
exactly once); the file is restored whatever happens (an interrupted run included),
and the run refuses to start while the mutated files have uncommitted changes. A
mutant is caught when pytest (``-x``) exits non-zero. One pytest at a time: the
machine has two cores.
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUARDS = "tests/test_listening_guards.py"
STREAM = ["tests/test_stream.py"]
DETECT = ["tests/test_stream.py", "tests/test_detect_inputs.py"]
SYNTH = ["tests/test_synth.py"]
NEG = ["tests/test_stream.py", "tests/test_synth.py"]
ROBUST = ["tests/test_robustness.py"]
AUDIO = ["tests/test_audio.py", "tests/test_detect_inputs.py"]
# kws_detect.py end to end on the tone model: these never call the scoring rule, the
# settings' choice, the DET curve or the made negatives, so they are left out of the
# runs of the mutants planted there (they take minutes on two shared cores)
NO_CLI = ["-k", "not (detector_reads or detector_stops or detector_finds or "
          "detector_bad or ctrl_c)"]
# ... and for the made negatives and the choice of the validation audio, also the test
# that trains e on tones (no unknown speech is made for tones; it asserts only that the
# settings it records are the ones its JSON reports)
NO_MODEL = ["-k", "not (detector_reads or detector_stops or detector_finds or "
            "detector_bad or ctrl_c or listening_model)"]
# the fresh mutants off the kws_detect.py path: the same, and the guards that run it
OFF_CLI = ["-k", "not (detector_reads or detector_stops or detector_finds or "
           "detector_bad or ctrl_c or listening_model or kws_detect_listens or "
           "closed_output_pipe or interrupt_while)"]

# (id, file, [(old, new)], what a user would notice, the tests that existed before
#  [, pytest options for those])
ISSUE = [
    ("1", "kws_detect.py",
     [("base = spotter.settings or stream.DetectorSettings()",
       "base = stream.DetectorSettings()")],
     "kws_detect.py ignores the settings the model records", DETECT),
    ("2a", "common/kws/reports.py",
     [('clips.splits["val"], minutes', 'clips.splits["test"], minutes')],
     "the detector's settings are chosen on the test split's clips", NEG, NO_MODEL),
    ("2b", "common/kws/reports.py",
     [('data.synthesized("val", synth', 'data.synthesized("test", synth')],
     "the detector's settings are chosen on the test voices' speech", NEG, NO_MODEL),
    ("3", "common/kws/negatives.py",
     [("_word(clip, rate)[::-1].copy()", "_word(clip, rate).copy()")],
     "'reversed' negatives are not reversed", NEG, NO_CLI),
    ("4", "common/kws/negatives.py",
     [("b[int(len(b) * cut):]", "b[:int(len(b) * cut)]")],
     "a splice joins the first parts of both words", NEG, NO_CLI),
    ("5", "common/kws/negatives.py",
     [("np.flatnonzero(y != y[first])", "np.flatnonzero(y == y[first])")],
     "a splice joins two words of one label", NEG, NO_CLI),
    ("6", "common/kws/negatives.py",
     [("else word[-keep:]", "else word[keep:]")],
     "a partial word's end piece is the wrong part", NEG, NO_MODEL),
    ("7", "common/kws/stream.py",
     [("np.array([negatives.is_keyword(label) for label in labels])",
       "np.array([label != negatives.BACKGROUND for label in labels])")],
     "the unknown-speech output may fire", STREAM),
    ("8", "common/kws/stream.py",
     [("max(1, int(round(seconds / self.hop_s)))", "max(1, int(seconds / self.hop_s))")],
     "an averaging span of 0.3 s truncates to 2 hops", STREAM),
    ("9", "common/kws/stream.py",
     [("settings.suppression_s / settings.hop_s - 1e-6",
       "settings.suppression_s / HOP_S - 1e-6")],
     "suppression counted in the default hop, not the settings' hop", STREAM),
    ("10", "common/kws/stream.py",
     [("settings, threshold=float(threshold)), mask)", "settings), mask)")],
     "the DET curve scores every point at one threshold", STREAM, NO_CLI),
    ("11", "common/kws/stream.py",
     [("-fa if feasible else hits, threshold)", "fa if feasible else hits, threshold)")],
     "ties in the settings choice keep more false alarms", STREAM, NO_CLI),
    ("12", "common/kws/stream.py",
     [('fa = sum(p["false_alarms"] for p in point.values()) / hours',
       'fa = point["stream"]["false_alarms_per_hour"]')],
     "the false-alarm cap ignores the keyword-free recordings", STREAM, NO_CLI),
    ("13", "common/kws/audio.py",
     [("return resample_blocks(samples, rate, to_rate,",
       "return resample_blocks(samples, to_rate, to_rate,")],
     "a WAV at another rate is not resampled", AUDIO + STREAM),
    ("14", "common/kws/audio.py",
     [("done, data = done + whole, data[whole:]", "done, data = done + whole, b''")],
     "an odd byte between two stdin reads is dropped", AUDIO + STREAM),
    ("15", "kws_detect.py",
     [('print("error: the output pipe was closed", file=sys.stderr)\n'
       '            code = EXIT_BAD_INPUT',
       'print("error: the output pipe was closed", file=sys.stderr)\n'
       '            code = EXIT_OK')],
     "a closed stdout exits 0", DETECT),
    ("16", "kws_detect.py",
     [("        forget_stop()  # reported with the detections\n", "")],
     "Ctrl-C prints an extra error line", DETECT),
    ("17", "common/kws/negatives.py",
     [("peak * 10 ** (floor_db / 20)", "peak * 10 ** (floor_db / 10)")],
     "the word gate uses dB/10 instead of dB/20", NEG, NO_MODEL),
    ("18", "common/kws/audio.py",
     [("samples.astype(np.float32).mean(axis=1) / 32768.0",
       "samples.astype(np.float32).sum(axis=1) / 32768.0")],
     "a stereo WAV is summed instead of averaged", AUDIO + STREAM),
    ("19", "common/kws/robustness.py",
     [('{"rt60_s": 0.7, "drr_db": -3.7}', '{"rt60_s": 0.5, "drr_db": -3.7}')],
     "the robustness report's RT60 0.7 s changes", ROBUST),
    ("20", "common/kws/robustness.py",
     [('{"low_hz": 300.0, "high_hz": 3400.0}', '{"low_hz": 300.0, "high_hz": 3000.0}')],
     "the robustness report's 300-3400 Hz band changes", ROBUST),
    ("21", "common/kws/stream.py",
     [("start <= time_s <= end + HIT_WINDOW_S + 1e-9",
       "start <= time_s < end + HIT_WINDOW_S - 1e-9")],
     "the hit window's end is exclusive (a detection 0.75 s after the end misses)",
     STREAM, NO_CLI),
]

FRESH = [
    # stream.py: the detector, the scoring rule, the recordings, the report
    ("F1", "common/kws/stream.py",
     [("for start in range(0, len(signal) - hop + 1, hop):",
       "for start in range(hop, len(signal) - hop + 1, hop):")],
     "the offline detector skips the first hop (its times one hop off)", STREAM, OFF_CLI),
    ("F2", "common/kws/stream.py",
     [("count = np.minimum(np.arange(1, len(probs) + 1), hops)",
       "count = np.full(len(probs), hops)")],
     "smoothing divides the first hops by the whole span", STREAM, OFF_CLI),
    ("F3", "common/kws/stream.py",
     [("np.flatnonzero(score >= limit)",
       "np.flatnonzero(score > limit)")],
     "a score exactly at the threshold does not fire", STREAM, OFF_CLI),
    ("F4", "common/kws/stream.py",
     [("k - self.last_fired >= _min_gap(self.settings)",
       "k - self.last_fired > _min_gap(self.settings)")],
     "the live detector waits one hop more than the suppression", STREAM),
    ("F5", "common/kws/stream.py",
     [("found.append((round((k + 1) * settings.hop_s, 6)",
       "found.append((round(k * settings.hop_s, 6)")],
     "detections are reported one hop early", STREAM, OFF_CLI),
    ("F6", "common/kws/stream.py",
     [("if word_label == label and not hit[i]:", "if word_label == label:")],
     "a word can be hit twice", STREAM, OFF_CLI),
    ("F7", "common/kws/stream.py",
     [("wrong += other_word", "wrong += 1")],
     "every false alarm counts as a wrong label", STREAM, OFF_CLI),
    ("F8", "common/kws/stream.py",
     [("latencies.append(time_s - words[match][1])",
       "latencies.append(time_s - words[match][0])")],
     "latency measured from the word's start", STREAM, OFF_CLI),
    ("F9", "common/kws/stream.py",
     [("(t + end) / rate, int(y[i])))", "(t + end) / rate, int(y[n])))")],
     "a stream's word is scored against another clip's label", STREAM, OFF_CLI),
    ("F10", "common/kws/stream.py",
     [("free_from = t + end + int(HIT_WINDOW_S * rate)", "free_from = t + end")],
     "other speech starts inside a word's hit window", STREAM, OFF_CLI),
    ("F11", "common/kws/stream.py",
     [("        if t + len(piece) > stop:\n", "        if t > stop:\n")],
     "other speech runs over the next keyword", STREAM, OFF_CLI),
    ("F12", "common/kws/stream.py",
     [("probs[name] = hop_probabilities(runner, config, rec.signal, hop_s)",
       "probs[name] = hop_probabilities(runner, config, rec.signal, HOP_S)")],
     "the report listens at the default hop, not the settings' hop", STREAM, OFF_CLI),
    ("F13", "common/kws/stream.py",
     [("-fa if feasible else hits, threshold)", "-fa if feasible else hits, -threshold)")],
     "full ties in the settings choice keep the lower threshold", STREAM, OFF_CLI),
    ("F14", "common/kws/stream.py",
     [("feasible = fa <= VALIDATION_MAX_FA_PER_HOUR", "feasible = fa < VALIDATION_MAX_FA_PER_HOUR")],
     "exactly the cap's false alarms an hour is taken as over it", STREAM, OFF_CLI),
    ("F15", "common/kws/stream.py",
     [('"speech_fa_per_hour": point["speech_only"]', '"speech_fa_per_hour": point["stream"]')],
     "the report's keyword-free speech figure is the stream's", STREAM, OFF_CLI),
    ("F16", "common/kws/stream.py",
     [("inside = min(end, time_s) - max(start, time_s - window_s)",
       "inside = min(end, time_s + window_s) - max(start, time_s)")],
     "a false alarm is blamed on the sound after it", STREAM, OFF_CLI),
    ("F17", "common/kws/stream.py",
     [('/ hours["speech_only"], 3)', '/ hours["stream"], 3)')],
     "a keyword's speech false alarms an hour use the stream's hours", STREAM, OFF_CLI),
    ("F18", "common/kws/stream.py",
     [("self.history = (self.history + [probs])[-span:]",
       "self.history = (self.history + [probs])[-span - 1:]")],
     "the live detector averages one hop more than the span", STREAM),
    # negatives.py: the made negatives and the coverage labelling
    ("F19", "common/kws/negatives.py",
     [("return max(whole)[1]", "return min(whole)[1]")],
     "a window holding two whole keywords is labelled the earlier", SYNTH + STREAM, OFF_CLI),
    ("F20", "common/kws/negatives.py",
     [("if any(share > MOSTLY_ABSENT for", "if any(share > 0.5 for")],
     "a window holding 35-50 % of a keyword is labelled unknown speech", SYNTH + STREAM,
     OFF_CLI),
    ("F21", "common/kws/negatives.py",
     [("inside(start, end) > 0 for start, end in speech_spans)",
       "inside(start, end) > 1 for start, end in speech_spans)")],
     "a window of other speech is labelled background", SYNTH + STREAM, OFF_CLI),
    ("F22", "common/kws/negatives.py",
     [("end = int((word[1] + rng.uniform(0.0, 0.3)) * rate)",
       "end = int((word[0] + rng.uniform(0.0, 0.3)) * rate)")],
     "the windows meant to end just after a keyword end at its start", SYNTH + STREAM,
     OFF_CLI),
    ("F23", "common/kws/negatives.py",
     [("        if label is not None:\n            waves.append(",
       "        if label:\n            waves.append(")],
     "windows of the first keyword (label 0) are dropped", SYNTH + STREAM, OFF_CLI),
    ("F24", "common/kws/negatives.py",
     [("room = max(0, start - pause)", "room = max(0, start + pause)")],
     "speech put before a word runs into the word", SYNTH + STREAM, OFF_CLI),
    ("F25", "common/kws/negatives.py",
     [("[labels.index(speech.utterances[i].label) for i in picks]",
       "[unknown_index for i in picks]")],
     "synthesized keywords are labelled unknown speech", SYNTH + STREAM, OFF_CLI),
    ("F26", "common/kws/negatives.py",
     [("np.asarray(y)[rows]))", "np.asarray(y)[rows[::-1]]))")],
     "a keyword with speech beside it gets another clip's label", SYNTH + STREAM, OFF_CLI),
    ("F27", "common/kws/negatives.py",
     [("parts.append(cut_windows(recording, n, rng, labels.index(BACKGROUND),\n"
       "                                 unknown_index))",
       "parts.append(cut_windows(recording, n, rng, unknown_index,\n"
       "                                 labels.index(BACKGROUND)))")],
     "stream windows' background and unknown labels swapped", SYNTH + STREAM, OFF_CLI),
    ("F28", "common/kws/negatives.py",
     [("[background_index] * n_silence + [unknown_index] * n_unknown",
       "[unknown_index] * n_silence + [background_index] * n_unknown")],
     "made silence labelled unknown and unknown speech background", STREAM, OFF_CLI),
    ("F29", "common/kws/negatives.py",
     [("kind = kinds[int(rng.integers(len(kinds)))]", "kind = kinds[0]")],
     "only the first kind of unknown speech is ever made", STREAM, OFF_CLI),
    ("F30", "common/kws/negatives.py",
     [("if len(piece) * 2 >= length:", "if len(piece) >= length:")],
     "a user's file's last piece of 0.5-1 s is dropped", STREAM, OFF_CLI),
    ("F31", "common/kws/negatives.py",
     [("level = 10 ** (rng.uniform(*aug.silence_dbfs) / 20)",
       "level = 10 ** (rng.uniform(*aug.silence_dbfs) / 10)")],
     "made silence at the wrong levels (dB/10)", STREAM, OFF_CLI),
    ("F32", "common/kws/negatives.py",
     [("(level * 10 ** (rng.uniform(*gain_db) / 20) / rms)",
       "(level * 10 ** (rng.uniform(*gain_db) / 20))")],
     "other speech is not brought to the keywords' level", SYNTH + STREAM, OFF_CLI),
    # synth.py: the voices, the cache, the lexicon
    ("F33", "common/kws/synth.py",
     [('"val": (FLITE, ("awb", "slt"))', '"val": (FLITE, ("awb", "rms"))')],
     "validation hears one of the test voices", SYNTH, OFF_CLI),
    ("F34", "common/kws/synth.py",
     [('"voices": VOICES[split], "words_sha256"', '"words_sha256"')],
     "the synthesis cache key misses the voices", SYNTH, OFF_CLI),
    ("F35", "common/kws/synth.py",
     [("if word.startswith(keyword) or sound.startswith(kp):",
       "if word == keyword or sound == kp:")],
     "words that begin with a keyword are spoken as other speech", SYNTH, OFF_CLI),
    ("F36", "common/kws/synth.py",
     [('if u.kind != "keyword"]', 'if u.kind == "word"]')],
     "the phrases are dropped from the other speech", SYNTH + STREAM, OFF_CLI),
    # robustness.py
    ("F37", "common/kws/robustness.py",
     [("s = int(round(seconds * rate))", "s = int(round(-seconds * rate))")],
     "early and late shifts swapped", ROBUST, OFF_CLI),
    ("F38", "common/kws/robustness.py",
     [("[:, :length]\n        return _saturate(_match_rms(y, x))",
       "[:, :length]\n        return _saturate(y)")],
     "reverberation changes the level", ROBUST, OFF_CLI),
    ("F39", "common/kws/robustness.py",
     [("source = int(round(rate * factor / 100.0)) * 100",
       "source = int(round(rate / factor / 100.0)) * 100")],
     "slow and fast speech swapped", ROBUST, OFF_CLI),
    ("F40", "common/kws/robustness.py",
     [("rng.uniform(-max_db_per_octave, max_db_per_octave,",
       "rng.uniform(0, max_db_per_octave,")],
     "the microphone tilt only ever brightens", ROBUST, OFF_CLI),
    # kws_detect.py
    ("F41", "kws_detect.py",
     [("{time_s:.2f}  {labels[index]}  {score:.2f}", "{time_s:.2f}  {labels[index - 1]}  {score:.2f}")],
     "the printed line names the wrong keyword", DETECT),
    ("F42", "kws_detect.py",
     [("asked.items() if v is not None}", "asked.items() if v}")],
     "--suppression 0 (or --threshold 0) on the command line is ignored", DETECT),
    ("F43", "kws_detect.py",
     [("return EXIT_TERMINATED if isinstance(stopped, Terminated) else EXIT_INTERRUPTED",
       "return EXIT_INTERRUPTED if isinstance(stopped, Terminated) else EXIT_TERMINATED")],
     "Ctrl-C exits 143 and SIGTERM 130", DETECT),
    ("F44", "kws_detect.py",
     [("    if not spotter.listens:\n", "    if spotter.listens:\n")],
     "the 'no background output' note shown for the wrong models", DETECT),
    # train.py: mining and its windows
    ("F45", "common/kws/train.py",
     [(".max(axis=1) >= threshold)", ".max(axis=1) > threshold)")],
     "a window exactly at the mining threshold is not mined", SYNTH, OFF_CLI),
    ("F46", "common/kws/train.py",
     [("for end in range(length, len(signal) + 1, hop)])",
       "for end in range(length, len(signal), hop)])")],
     "the mining stream's last window is never listened to", SYNTH, OFF_CLI),
    ("F47", "common/kws/train.py",
     [("unknown = data.labels.index(negatives.UNKNOWN)",
       "unknown = data.labels.index(negatives.BACKGROUND)")],
     "mined windows labelled background, not unknown speech", SYNTH, OFF_CLI),
    ("F48", "common/kws/train.py",
     [('speech=data.synthesized("train", negs.synth_plan))',
       'speech=data.synthesized("val", negs.synth_plan))')],
     "mining listens to the validation voices", SYNTH, OFF_CLI),
    ("F49", "common/kws/train.py",
     [("                                keywords=False,\n",
       "                                keywords=True,\n")],
     "mining listens to a stream with keywords (real keywords mined as unknown)", SYNTH, OFF_CLI),
    ("F50", "common/kws/train.py",
     [("np.random.default_rng([MINING_SEED, seed, round_index])",
       "np.random.default_rng([MINING_SEED, seed])")],
     "every mining round listens to the same audio", SYNTH, OFF_CLI),
]

MUTANTS = {m[0]: m for m in ISSUE + FRESH}


def plant(path, changes):
    text = open(path).read()
    mutated = text
    for old, new in changes:
        count = mutated.count(old)
        if count != 1:
            raise SystemExit(f"{path}: {old!r} occurs {count} times, not once")
        mutated = mutated.replace(old, new)
    return text, mutated


def run(ident, tests, extra=()):
    path, changes, what = MUTANTS[ident][1:4]
    full = os.path.join(ROOT, path)
    dirty = subprocess.run(["git", "diff", "--quiet", "--", path], cwd=ROOT).returncode
    if dirty:
        raise SystemExit(f"{path} has uncommitted changes: commit or stash them first")
    original, mutated = plant(full, changes)
    start = time.time()
    try:
        with open(full, "w") as f:
            f.write(mutated)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x",
                               "-p", "no:cacheprovider", *extra, *tests],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        with open(full, "w") as f:
            f.write(original)
    failed = [line.split(" ")[1] for line in done.stdout.splitlines()
              if line.startswith("FAILED ") or line.startswith("ERROR ")]
    return {"id": ident, "what": what, "caught": done.returncode != 0,
            "by": failed[:1], "seconds": round(time.time() - start, 1),
            "tail": done.stdout.strip().splitlines()[-1:]}


def main(argv):
    if "--list" in argv:
        for ident, path, changes, what, *_ in MUTANTS.values():
            print(f"{ident:>4}  {path}: {what}")
            for old, new in changes:
                print(f"      - {old!r}\n      + {new!r}")
        return 0
    before = "--before" in argv  # the tests that existed before, without the guards
    guards = "--guards" in argv  # the guards alone
    ids = [a for a in argv if not a.startswith("--")] or list(MUTANTS)
    for ident in ids:
        mutant = MUTANTS[ident]
        if guards:
            result = run(ident, [GUARDS])
        else:
            tests = mutant[4] if before else mutant[4] + [GUARDS]
            result = run(ident, tests, mutant[5] if len(mutant) > 5 else ())
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
