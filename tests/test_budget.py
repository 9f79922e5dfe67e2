from common.budget import Limit, budget_holds, check_budget

LIMITS = (Limit("t_mae", 0.5), Limit("rh_mae", 1.8), Limit("zlib_bytes", 2000))


def test_all_verdicts_are_returned_not_only_the_first_failure():
    verdicts = check_budget(LIMITS, {"t_mae": 0.6, "rh_mae": 1.9, "zlib_bytes": 1999})
    assert [v["ok"] for v in verdicts] == [False, False, True]
    assert not budget_holds(verdicts)


def test_limits_are_strict():
    verdicts = check_budget(LIMITS, {"t_mae": 0.5, "rh_mae": 1.0, "zlib_bytes": 2000})
    assert [v["ok"] for v in verdicts] == [False, True, False]


def test_lower_bounds_and_passing_budget():
    limits = (Limit("accuracy", 0.9, below=False), Limit("total_ms", 40))
    assert budget_holds(check_budget(limits, {"accuracy": 0.9013, "total_ms": 8.0}))
    assert not budget_holds(check_budget(limits, {"accuracy": 0.9, "total_ms": 8.0}))


def test_unmeasured_metric_fails():
    verdicts = check_budget(LIMITS, {"t_mae": 0.1, "rh_mae": 0.1})
    assert verdicts[2]["measured"] is None and not verdicts[2]["ok"]
