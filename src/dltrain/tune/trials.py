"""What a trial is to dltrain: the states that count, surplus trials, and the study's counts.

Exactly N trials finish however many workers race for the last ones: the study's first N
active trials by number run, and a worker that asked after them marks its trial ``surplus``
(failed without running, left out of every count and of trials.csv)."""

from __future__ import annotations

STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")
ACTIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # what takes one of the N places
SURPLUS_ATTR = "surplus"
NETWORK_ATTR = "network"  # the hidden layers the trial trained, as people write them ("306 relu, 64 relu")
FOLDS_ATTR = "cv_values"  # under tune.cv: the metric on each fold
SPREAD_ATTR = "cv_spread"  # … and its spread over the folds (the trial's value is their mean)


class SurplusTrial(Exception):
    """Another worker started the study's last trial first; this one is not run."""


def is_surplus(trial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS_ATTR))


def trial_counts(study) -> dict:
    """Trials by state (COMPLETE, PRUNED, RUNNING, WAITING, FAIL), surplus trials left out."""
    counts = dict.fromkeys(STATES, 0)
    for trial in study.get_trials(deepcopy=False):
        if not is_surplus(trial):
            counts[trial.state.name] += 1
    return counts


def finished_count(counts: dict) -> int:
    """Finished trials: complete or pruned (a pruned trial counts with its last value)."""
    return counts["COMPLETE"] + counts["PRUNED"]


def is_surplus_number(study, number: int, n_trials: int) -> bool:
    """Whether trial ``number`` comes after the study's first ``n_trials`` active ones."""
    earlier = [
        other for other in study.get_trials(deepcopy=False) if other.number < number and other.state.name in ACTIVE
    ]
    return len(earlier) >= n_trials


def complete_trials(study, direction: str) -> list:
    """The complete trials, best first (ties: the earlier trial first)."""
    sign = -1 if direction == "maximize" else 1
    return sorted(
        (trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"),
        key=lambda trial: (sign * trial.value, trial.number),
    )
