"""compress.tune_report: the trials table (best first, short names, a limit) and the state counts."""

from __future__ import annotations

from compress.tune_report import count_states, format_trials_table

ROWS = [
    {"number": 0, "state": "COMPLETE", "value": 0.71, "params": {"optim.lr": 1e-4, "loss.name": "bce"},
     "epochs": 2, "duration_s": 12.3},
    {"number": 1, "state": "PRUNED", "value": None, "params": {"optim.lr": 3e-3, "loss.name": "focal",
                                                               "loss.params.gamma": 2.0}, "epochs": 1,
     "duration_s": None},
    {"number": 2, "state": "COMPLETE", "value": 0.83, "params": {"optim.lr": 5e-4, "loss.name": "focal",
                                                                 "loss.params.gamma": 1.5}, "epochs": 2,
     "duration_s": 20.0},
    {"number": 3, "state": "FAIL", "value": float("nan"), "params": {"optim.lr": 9e-2, "loss.name": "bce"},
     "epochs": 0, "duration_s": 1.0},
]


def test_trials_table_puts_the_best_first_then_by_score():
    lines = format_trials_table(ROWS, best=2).splitlines()
    assert lines[0].split() == ["trial", "state", "macro_roc_auc", "epochs", "sec", "lr", "name", "gamma"]
    assert [line.split()[0] for line in lines[1:]] == ["2*", "0", "1", "3"]
    assert lines[1].split() == ["2*", "complete", "0.8300", "2", "20", "0.0005", "focal", "1.5"]
    assert lines[3].split()[:5] == ["1", "pruned", "-", "1", "-"]  # no value, no duration
    assert lines[4].split()[:3] == ["3", "fail", "-"]  # a NaN objective shows as no value


def test_trials_table_keeps_full_keys_where_short_names_clash_and_stops_at_the_limit():
    rows = [{"number": i, "state": "COMPLETE", "value": 0.5 + i / 10, "params": {"optim.lr": 0.1, "head.lr": 0.2},
             "epochs": 1, "duration_s": 1.0} for i in range(4)]
    text = format_trials_table(rows, best=3, limit=2)
    assert text.splitlines()[0].split()[-2:] == ["optim.lr", "head.lr"]
    assert [line.split()[0] for line in text.splitlines()[1:3]] == ["3*", "2"]
    assert text.splitlines()[-1] == "... 2 more trials in tune.json"


def test_counts_by_state():
    assert count_states(ROWS) == {"complete": 2, "pruned": 1, "fail": 1}
