"""What a study is for: the search (metric, features, space) and the experiment (the data files'
content, the target, the task). A study continues only what it was made for."""

from __future__ import annotations

from ..data.cache import file_sha256
from ..data.prepare import data_path
from ..errors import ConfigError
from .space import SearchPlan
from .storage import StudyPlace

SEARCH_ATTR = "search"
METRIC_ATTR = "metric"
EXPERIMENT_ATTR = "experiment"


def experiment_of(plan: SearchPlan, task: str) -> dict:
    """The experiment's fingerprint: SHA-256 of the CSVs the trials read, the target and the task."""
    spec = plan.config.data
    files = {"data.train": spec.train}
    if isinstance(spec.validation, str):
        files["data.validation"] = spec.validation
    return {
        "config": str(plan.config_path),
        "files": {
            key: {"path": value, "sha256": file_sha256(data_path(plan.base_dir, value))} for key, value in files.items()
        },
        "target": spec.target,
        "task": task,
    }


def _described(experiment: dict) -> str:
    files = ", ".join(
        f"{key} {entry['path']} (sha256 {entry['sha256'][:12]}…)" for key, entry in experiment["files"].items()
    )
    return f"{experiment['config']}: {files}, target {experiment['target']!r}, task {experiment['task']}"


def _same(stored: dict, current: dict) -> bool:
    digests = {key: entry["sha256"] for key, entry in stored.get("files", {}).items()}
    return (
        digests == {key: entry["sha256"] for key, entry in current["files"].items()}
        and stored.get("target") == current["target"]
        and stored.get("task") == current["task"]
    )


def check_study_identity(study, plan: SearchPlan, place: StudyPlace, experiment: dict):
    """Record what a new study is for; refuse to continue one made for another search or experiment."""
    signature = plan.space_signature()
    stored_search, stored_experiment = study.user_attrs.get(SEARCH_ATTR), study.user_attrs.get(EXPERIMENT_ATTR)
    if stored_search is not None and stored_search != signature:
        raise ConfigError(
            f"{plan.config_path}: study {place.study_name!r} in {place.shown_storage} was made for "
            "another tune.metric, tune.features, tune.space or tune.cv; keep them as they were to continue "
            "it, or start a new study with another --out or --study"
        )
    if isinstance(stored_experiment, dict) and not _same(stored_experiment, experiment):
        raise ConfigError(
            f"study {place.study_name!r} in {place.shown_storage} belongs to another experiment: it was made "
            f"by {_described(stored_experiment)}; this is {_described(experiment)}. A study continues only "
            "its own data, target and task: give this one its own study with --study NAME or another --out"
        )
    if stored_search is None:
        study.set_user_attr(SEARCH_ATTR, signature)
        study.set_user_attr(METRIC_ATTR, plan.tune.metric)
    if stored_experiment is None:
        study.set_user_attr(EXPERIMENT_ATTR, experiment)
