"""The one measuring path: ``measure`` runs a .tflite on a split for training runs
(validation and test), baselines, search trials and ``--evaluate`` alike, with the
settings resolved once from the command line (``MeasureSettings``)."""
import dataclasses

from common import artifacts, results
from common.errors import UserError

SEARCH_LATENCY_RUNS = 30  # a search times each trial briefly: its error is validation's


@dataclasses.dataclass(frozen=True)
class MeasureSettings:
    """How ``measure`` runs: ``micro`` (the same figures under TensorFlow Lite Micro),
    the latency runs and the pause between them, the seed of the latency input, and
    ``extras`` (the task's measurements beyond its score: latency, reports)."""
    micro: bool = False
    latency_runs: int = 100
    latency_pause: float = 0.1
    seed: int = 0
    extras: bool = True

    @classmethod
    def from_args(cls, args):
        """The settings the command line asks for (a task without latency flags gets
        the defaults)."""
        return cls(micro=bool(getattr(args, "micro", False)),
                   latency_runs=getattr(args, "latency_runs", cls.latency_runs),
                   latency_pause=getattr(args, "latency_pause", cls.latency_pause),
                   seed=args.seed)

    def for_search(self):
        """Inside the search: fewer latency runs, no pause."""
        return dataclasses.replace(self, latency_runs=SEARCH_LATENCY_RUNS,
                                   latency_pause=0.0)

    def score_only(self):
        """The task's score on the desktop interpreter and the sizes, nothing else
        (choosing among seeds on validation)."""
        return dataclasses.replace(self, micro=False, extras=False)


def measure(task, tflite_bytes, data, recipe, split, settings, sizes=None):
    """``(metrics, details)`` of the .tflite on ``split``: the task's figures from the
    desktop interpreter (these judge the budget), its probes (timing, reports; not
    when ``settings.extras`` is off), with ``settings.micro`` the same figures under
    TensorFlow Lite Micro with the arena it used, the op list and how often its
    outputs agree with the desktop interpreter's, and last the sizes (``sizes``, else those of
    ``tflite_bytes`` and its zlib compression)."""
    from common.tflite.runtime import Runner
    x, y = task.inputs(data, recipe, split)
    runner = Runner(tflite_bytes)
    if tuple(runner.input_shape[1:]) != tuple(x.shape[1:]):
        raise UserError(f"the model takes input {list(runner.input_shape)}, but the "
                        f"version's {split} inputs are {list(x.shape[1:])}")
    outputs = runner.predict(x)
    metrics, details = task.score(outputs, y, data)
    details["io"] = {"input_shape": list(runner.input_shape),
                     "input_quantization": [float(v) for v in runner.input["quantization"]],
                     "output_quantization": [float(v) for v in
                                             runner.output["quantization"]]}
    for probe in task.probes if settings.extras else ():
        if probe.runs_on(split):
            extra, extra_details = probe.measure(runner, data, recipe, split, settings)
            # a probe writing a key the score or another probe wrote is a bug (issue 16)
            metrics = results.record(("the measured metrics", metrics), (probe.name, extra))
            details = results.record(("the measured details", details),
                                     (probe.name, extra_details))
    if settings.micro:
        from common.tflite import micro
        device = micro.MicroRunner(tflite_bytes)
        micro_outputs = device.predict(x)
        micro_metrics, _ = task.score(micro_outputs, y, data)
        metrics.update({f"micro_{k}": v for k, v in micro_metrics.items()},
                       arena_bytes=device.arena_bytes())
        details["micro"] = {"ops": micro.op_names(tflite_bytes),
                            "agreement": micro.agreement(outputs, micro_outputs,
                                                         task.classifier)}
    metrics.update(sizes or artifacts.sizes(tflite_bytes, artifacts.compress(tflite_bytes)))
    return metrics, details
