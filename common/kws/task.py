"""The keyword spotter as the pipeline runs it: ``KeywordSpotting``, its flags, data,
training, the metadata it writes into and checks in the ``.tflite``, scoring, the
JSON fields and the printed summary."""
import os

import numpy as np

from common import artifacts, cli, pipeline
from common.errors import UserError
from common.kws import features, negatives, reports, speech, stream, synth, train
from common.kws.search_space import SEARCH_SPACE
from common.pipeline import Column, Probe

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class KeywordSpotting(pipeline.Task):
    name = "kws"
    classifier = True
    columns = (Column("accuracy", "accuracy", ".2%"),
               Column("correct", "correct", "{}/{clips}"),
               Column("10 dB", "accuracy_10db", ".2%"), Column("5 dB", "accuracy_5db", ".2%"),
               Column("stream hits", "stream_hit_rate", ".1%"),
               Column("FA/h stream", "stream_fa_per_hour", "g"),
               Column("FA/h speech", "speech_fa_per_hour", "g"),
               Column("FA/h noise", "noise_fa_per_hour", "g"),
               Column(".tflite B", "tflite_bytes"), Column(".tflite.zlib B", "zlib_bytes"),
               Column("inference ms", "inference_ms"), Column("total ms", "total_ms"))
    search_space = SEARCH_SPACE

    def __init__(self, recipes=None, description=None, examples=None):
        super().__init__(recipes, description, examples)
        self.teachers = train.Teachers()
        self.listening_minutes = stream.DEFAULT_MINUTES  # set from --listening-minutes
        # printed in this order; the reports run on the test split, latency on every
        # split measured with extras (search trials too)
        self.probes = (
            Probe("noise", reports.noise_report, reports.noise_lines),
            Probe("robustness", reports.robustness_report, reports.robustness_lines),
            Probe("listening", self.listening_report, reports.listening_lines),
            Probe("confusion", lines=reports.confusion_lines),
            Probe("latency", reports.timing, reports.latency_lines, splits=None))

    def listening_report(self, runner, data, recipe, split, settings):
        """``reports.listening_report`` over ``--listening-minutes`` of made audio."""
        return reports.listening_report(runner, data, recipe, split,
                                        self.listening_minutes)

    def add_arguments(self, parser):
        parser.add_argument("--split-dir", default=os.path.join(PROJECT, "data"),
                            help="folder with kws_{train,val,test}_split.txt "
                                 "(default: the project's data/)")
        parser.add_argument("--latency-runs", type=cli.positive_int, default=100,
                            help="timed runs per latency measurement (default: 100)")
        parser.add_argument("--latency-pause", type=cli.non_negative_float, default=0.1,
                            help="seconds between timed runs, as the course's script "
                                 "(default: 0.1)")
        parser.add_argument("--listening-minutes", type=cli.non_negative_float,
                            metavar="M",
                            help="run the listening report (the detector on made test "
                                 "audio: a stream of every test clip, M minutes of noise "
                                 "and M of noise with other sounds) and choose a "
                                 "listening version's detector settings on validation "
                                 "audio made the same way, its keyword-free part M/3 "
                                 f"(default: {stream.DEFAULT_MINUTES:g} for e, 0 = off "
                                 "for a-d; 0 for e records the detector's defaults)")
        parser.add_argument("--negatives", metavar="DIR",
                            help="a listening version (e) also trains on this folder of "
                                 "your own non-keyword audio: WAV files of any length, "
                                 "cut into 1-s pieces; those under a folder named "
                                 "_background_noise_ are background, the rest unknown "
                                 "speech (recorded in the JSON with a checksum)")

    def load(self, args, recipe, evaluating=None):
        """The clips of every split (under --evaluate: the test split, with the label
        order the model records)."""
        if not os.path.isdir(os.path.join(args.data_dir, speech.DATASET_FOLDER)):
            from common.download import download_and_extract
            download_and_extract(speech.URL, args.data_dir,
                                 os.path.join(args.data_dir, speech.DATASET_FOLDER),
                                 not args.no_download, quiet=args.quiet)
        labels, splits = None, speech.SPLITS
        self.listening_minutes = reports.listening_minutes(args, recipe)
        if evaluating is not None:
            from common.tflite import tflite_file
            labels = tflite_file.read_labels(evaluating.tflite_bytes, evaluating.path)
            features.check_features(evaluating, recipe.features, args.version)
            listens = negatives.listens(labels)
            if listens != (recipe.negatives is not None):
                raise UserError(f"{evaluating.path!r} {'has' if listens else 'lacks'} "
                                f"background and unknown outputs, version {args.version} "
                                f"{'does not' if listens else 'does'}; evaluate it with "
                                "the version that made it")
            # the listening report chooses the detector's settings on validation audio
            # when the model records none (versions a-d); the test list is checked first
            if self.listening_minutes and not stream.recorded_settings(
                    evaluating.tflite_bytes, evaluating.path):
                splits = ("test", "val")
            else:
                splits = ("test",)
        if args.negatives is not None and evaluating is not None:
            raise UserError("--negatives trains; --evaluate measures a given model")
        if args.negatives is not None and recipe.negatives is None:
            raise UserError(f"--negatives trains a listening version; version "
                            f"{args.version} has no background or unknown output (use e)")
        if self.listening_minutes or (recipe.negatives and recipe.negatives.synthesizes
                                      and evaluating is None):
            synth.require_all()  # a missing engine fails before the data is loaded
        corpus = speech.Corpus(args.data_dir, args.split_dir, args.seed, splits, labels,
                               negatives.NON_KEYWORDS if recipe.negatives else (),
                               args.negatives)
        corpus.load(recipe.features.sample_rate)
        if evaluating is None:
            corpus.user_negatives(recipe.features.sample_rate)  # bad folders fail early
        return corpus

    def train(self, recipe, data, seed, verbose):
        return train.train(recipe, data, seed, verbose, self.teachers)

    def finish_model(self, tflite_bytes, data, recipe):
        """Record the label order and the feature configuration in the file itself
        (``tflite_file``): --evaluate reads both."""
        from common.tflite import tflite_file
        tflite_bytes = tflite_file.with_metadata(
            tflite_file.with_labels(tflite_bytes, data.labels), features.METADATA,
            features.features_text(recipe.features))
        if recipe.negatives is None:
            return tflite_bytes
        settings = stream.DetectorSettings()
        if self.listening_minutes:
            settings = reports.choose_detector(tflite_bytes, data, recipe,
                                               self.listening_minutes)
        return tflite_file.with_metadata(tflite_bytes, stream.DETECTOR_METADATA,
                                         settings.to_text())

    def inputs(self, data, recipe, split):
        return getattr(data.data(recipe), split)

    def output_names(self, data):
        return data.labels

    def input_notes(self, data, recipe):
        return recipe.features.describe()

    def check_c_export(self, recipe):
        from common.kws import c_bundle
        c_bundle.check_recipe(recipe)

    def c_bundle(self, stem, tflite_bytes):
        from common.kws import c_bundle
        return c_bundle.files_for(stem, tflite_bytes)

    def score(self, outputs, y, data):
        """Accuracy and the confusion matrix, outputs read in the label order."""
        if outputs.shape[1] != len(data.labels):
            raise UserError(f"the model has {outputs.shape[1]} outputs but records "
                            f"{len(data.labels)} labels")
        predicted = outputs.argmax(axis=1)
        confusion = np.zeros((len(data.labels),) * 2, np.int64)
        np.add.at(confusion, (y, predicted), 1)
        return ({"accuracy": round(float((predicted == y).mean()), 4),
                 "correct": int((predicted == y).sum()), "clips": len(y)},
                {"confusion": confusion.tolist()})

    def describe(self, data, recipe):
        clips = data.load(recipe.features.sample_rate)
        return {
            "labels": data.labels,
            "model_io": f"input: {recipe.quantization} {list(recipe.features.shape)} "
                        "features (quantize with the input tensor's scale and zero "
                        "point); output: logits in label order (also recorded in the "
                        "model's 'labels' metadata)",
            "data": {"split_lists_sha256": {
                         s: artifacts.sha256_file(speech.split_list_path(data.split_dir, s))
                         for s in speech.SPLITS},
                     "clips_sha256": clips.sha256,
                     "clips": {s: len(clips.splits[s][1]) for s in speech.SPLITS},
                     **({"negatives": self.negatives_record(data, recipe)}
                        if recipe.negatives else {})}}

    def negatives_record(self, data, recipe):
        """What the made negatives and ``--negatives`` added to training."""
        features = data.data(recipe)
        counts = {split: {name: int((getattr(features, split)[1]
                                     == data.labels.index(name)).sum())
                          for name in negatives.NON_KEYWORDS} for split in ("train", "val")}
        user = data.user_negatives(recipe.features.sample_rate)
        if user:
            examples = int(stream.keyword_mask(data.labels)[features.train[1]].sum())
            user = {**user[2], "pieces_used": min(user[2]["pieces"], negatives.user_cap(
                recipe.negatives, examples))}
        return {"examples": counts, "user_folder": user,
                "synthesized": [sp.record for (split, _), sp in sorted(
                    data.speech.items(), key=lambda kv: kv[0][0])]}
