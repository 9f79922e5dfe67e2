#!/usr/bin/env python3
"""Listen for keywords in continuous audio with a keyword-spotting model written by
kws_train.py: a WAV file of any length, or a WAV or raw audio on standard input.

Every hop it runs the deployed .tflite on the last second of audio with the
pipeline's own front end, averages the scores over time, and prints one line per
detection: the time in seconds from the start of the audio at which it fired, the
label and the averaged score. The hop, the averaging span, the threshold and the
suppression time default to what the model records (chosen on validation audio
when it was trained); each can be overridden.
"""
import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import argparse
import json
import os
import sys
import time

from common import artifacts, cli
from common.kws import audio, stream
from common.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, \
    Terminated, UserError, forget_stop, pending_stop_or, raise_pending_stop, stop_handlers

EXAMPLES = """\
  python kws_detect.py models/kws_e.tflite.zlib recording.wav
  python kws_detect.py models/kws_e.tflite.zlib recording.wav --json > detections.json
  arecord -t raw -f S16_LE -r 16000 -c 1 | python kws_detect.py models/kws_e.tflite.zlib -
"""


def parse_args(argv):
    parser = cli.Parser(description=__doc__.split("\n\n")[0],
                        epilog=f"exit status: 0 done; 2 bad input; 130 interrupted, 143 "
                               f"terminated (what was detected is printed first)\n\n"
                               f"examples:\n{EXAMPLES}",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .tflite.zlib or .tflite written by kws_train.py")
    parser.add_argument("audio", help="a 16-bit PCM WAV file (resampled to the model's "
                                      "rate when it differs; a pipe or device is read "
                                      "as it arrives), or - for standard input: a WAV, "
                                      "or raw 16-bit little-endian mono PCM at 16 kHz")
    parser.add_argument("--threshold", type=cli.probability,
                        help="fire when a keyword's averaged probability reaches this, "
                             "in [0, 1] (default: the model's)")
    parser.add_argument("--average", type=cli.positive_float,
                        metavar="SECONDS", help="average the scores over this span "
                                                "(default: the model's)")
    parser.add_argument("--suppression", type=cli.non_negative_float, metavar="SECONDS",
                        help="no second detection within this time (default: the model's)")
    parser.add_argument("--hop", type=cli.hop_seconds,
                        metavar="SECONDS", help="run the model this often, a whole "
                                                "number of samples (default: the model's)")
    parser.add_argument("--json", action="store_true",
                        help="print the detections as one JSON list at the end")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own start-up logs and warnings")
    args = parser.parse_args(argv)
    cli.quiet_libraries(args.verbose)
    return args


def settings_of(spotter, args):
    """The model's recorded settings (or the detector's defaults), overridden by the
    command line."""
    import dataclasses
    base = spotter.settings or stream.DetectorSettings()
    asked = {"threshold": args.threshold, "average_s": args.average,
             "suppression_s": args.suppression, "hop_s": args.hop}
    settings = dataclasses.replace(base, **{k: v for k, v in asked.items() if v is not None})
    stream.hop_samples(settings.hop_s, spotter.features.sample_rate)  # a UserError if not
    return settings


def audio_pieces(path, rate, recording=None):
    """The audio as float pieces at ``rate``: a WAV file (``recording``: its bytes
    mapped or read, or a pipe's ``audio.PcmStream``) a second at a time, so the lines
    come as they fire and Ctrl-C keeps them, or standard input as it arrives."""
    if isinstance(recording, audio.PcmStream):
        yield from recording.pieces(rate)
    elif path != "-":
        yield from audio.wav_pieces(path, rate, recording)
    else:
        yield from standard_input(rate).pieces(rate)


def standard_input(rate):
    """Standard input as an ``audio.PcmStream``: a WAV if it starts with a RIFF/WAVE
    header, else raw 16-bit mono PCM at ``stream.RAW_RATE``."""
    if sys.stdin is None:
        raise UserError("standard input is closed; give a WAV file or pipe audio in")
    source, head = sys.stdin.buffer, b""
    while len(head) < 12:  # enough to tell a WAV header from raw samples
        more = source.read1(12 - len(head))
        if not more:
            break
        head += more
    if audio.is_wav_start(head):
        return audio.PcmStream.wav("standard input", source, head)
    if rate != stream.RAW_RATE:
        raise UserError(f"the model listens at {rate} Hz; raw audio on standard input "
                        f"is read as {stream.RAW_RATE} Hz: give a WAV instead")
    return audio.PcmStream("standard input", source, 1, stream.RAW_RATE, head)


def write_out(text):
    """``text`` on stdout at once; a write that fails (a full disk) is a UserError,
    except a closed pipe, which ``_run`` reports in its own words."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as err:
        raise UserError(f"cannot write the detections: {err.strerror or err}") from None


def show(detection, labels):
    time_s, index, score = detection
    write_out(f"{time_s:.2f}  {labels[index]}  {score:.2f}")


def listen(spotter, settings, audio_path, recording, as_json):
    """Run the detector; returns ``(detections, listener, seconds spent)`` and the
    interruption, if any (the detections found until then are kept)."""
    from common.tflite.runtime import Runner
    runner = Runner(spotter.tflite_bytes, num_threads=1)
    expected = tuple(spotter.features.shape)
    if tuple(runner.input_shape[1:]) != expected:
        raise UserError(f"{spotter.path!r} takes input {list(runner.input_shape)}, but its "
                        f"recorded features are {list(expected)}: a damaged model")
    listener = stream.Listener(runner, spotter.features, spotter.labels, settings)
    found, start, stopped = [], time.perf_counter(), None
    try:
        for piece in audio_pieces(audio_path, spotter.features.sample_rate, recording):
            raise_pending_stop()  # a stop TensorFlow lost while the model loaded
            for detection in listener.feed(piece):
                found.append(detection)
                if not as_json:
                    show(detection, spotter.labels)
    except KeyboardInterrupt as err:  # Ctrl-C on a live stream, or SIGTERM
        stopped = err
        forget_stop()  # reported with the detections
    return found, listener, time.perf_counter() - start, stopped


def main(argv=None):
    args = parse_args(argv)
    if sys.stdout is None:
        raise UserError("standard output is closed: the detections would be lost")
    recording = None
    if args.audio != "-":  # mapped or streamed; a bad file fails before TensorFlow loads
        recording = audio.open_recording(args.audio)
    if os.path.isfile(args.model):  # read again by read_spotter: a pipe could not be
        warning = artifacts.pair_warning(artifacts.read_model(args.model), strict=True)
        if warning:
            print(warning, file=sys.stderr)
    spotter = stream.read_spotter(args.model)
    settings = settings_of(spotter, args)
    if not spotter.listens:
        print("note: this model has no background or unknown output; only the threshold "
              "rejects other sounds", file=sys.stderr)
    found, listener, spent, stopped = listen(spotter, settings, args.audio, recording,
                                             args.json)
    if args.json:
        write_out(json.dumps([{"time_s": t, "label": spotter.labels[i],
                               "score": round(s, 4)} for t, i, s in found]))
    print(f"processed {listener.seconds:.1f} s of audio in {spent:.1f} s "
          f"({listener.seconds / max(spent, 1e-9):.0f}x real time); {len(found)} "
          f"detection{'s' if len(found) != 1 else ''} (threshold {settings.threshold:g}, "
          f"averaged over {settings.average_s:g} s)", file=sys.stderr)
    if stopped is not None:
        return EXIT_TERMINATED if isinstance(stopped, Terminated) else EXIT_INTERRUPTED
    return EXIT_OK


def run(argv=None):
    """``main`` with the command-line conventions: one ``error:`` line and exit 2 for
    bad input, a closed output pipe included."""
    with stop_handlers():
        code = _run(argv)
    try:
        sys.stdout.flush()
    except (AttributeError, ValueError, OSError):  # closed, or a pipe closed early
        pass
    sys.exit(code)


def _run(argv):
    """``main``'s exit code, its errors and stops each reported in one line."""
    try:
        code = main(argv)
        raise_pending_stop()  # a stop whose exception TensorFlow lost
    except KeyboardInterrupt as err:  # outside the listening loop
        code = _report_stop(err)
    except Exception as err:
        stop = pending_stop_or(err)  # what library code made of a stop's exception
        if isinstance(stop, KeyboardInterrupt):
            code = _report_stop(stop)
        elif isinstance(err, BrokenPipeError):
            print("error: the output pipe was closed", file=sys.stderr)
            code = EXIT_BAD_INPUT
        elif isinstance(err, UserError):
            print(f"error: {err}", file=sys.stderr)
            code = EXIT_BAD_INPUT
        else:
            raise
    return code


def _report_stop(err):
    terminated = isinstance(err, Terminated)
    print(f"error: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


if __name__ == "__main__":
    run()
