"""Budgets as data, checked by one function that returns every verdict."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """One budget line: ``metric`` must be strictly below (or above) ``value``."""
    metric: str
    value: float
    below: bool = True

    def holds(self, measured):
        return measured < self.value if self.below else measured > self.value

    def describe(self):
        return f"{self.metric} {'<' if self.below else '>'} {self.value:g}"


# Device budgets a recipe may set: (metric, recipe field). Flash is the raw .tflite a
# device stores; the arena is the RAM TensorFlow Lite Micro needs (common.tflite.micro).
DEVICE_LIMITS = (("tflite_bytes", "max_flash_bytes"), ("arena_bytes", "max_arena_bytes"))


def device_limits(recipe):
    """The flash and arena limits ``recipe`` sets (None means no limit)."""
    return tuple(Limit(metric, getattr(recipe, field)) for metric, field in DEVICE_LIMITS
                 if getattr(recipe, field) is not None)


def check_budget(limits, metrics):
    """Return one verdict dict per limit (never stopping at the first failure).

    A limit whose metric was not measured fails: a budget is never passed by omission.
    """
    verdicts = []
    for limit in limits:
        measured = metrics.get(limit.metric)
        verdicts.append({
            "limit": limit.describe(),
            "measured": measured,
            "ok": measured is not None and bool(limit.holds(measured)),
        })
    return verdicts


def budget_holds(verdicts):
    return all(v["ok"] for v in verdicts)
