"""``simple_evaluate`` with the ``tokendiff`` backend, writing what ``lm_eval --output_path`` writes: the
results JSON (``<output_path>/<model>/results_<date>.json``), the per-document samples with
``log_samples``, and beside them ``requests_<date>.jsonl``: each ``loglikelihood`` request's nats, Monte Carlo
standard error and draws (lm-eval's results hold only the log-likelihood)."""

from __future__ import annotations

import json
from pathlib import Path

from tokendiff.errors import TokenDiffError

__all__ = ["run_harness"]


def _task_manager(tasks: list[str], include_path: str | None):
    """lm-eval's task index: the folder's tasks alone when they are all there (indexing lm-eval's thousands of
    built-in tasks takes ~10 s), else the built-in ones too; an unknown task is a one-line error."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise TokenDiffError(f"include_path={include_path!r} is not a directory of task YAML files")
    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or set(tasks) - set(manager.all_tasks):
        manager = TaskManager(include_path=include_path)
    missing = sorted(set(tasks) - set(manager.all_tasks))
    if missing:
        where = f" or in {include_path}" if include_path else "; give include_path=<folder of task YAMLs>"
        raise TokenDiffError(f"unknown task {missing[0]!r}: not one of lm-eval's tasks{where}")
    return manager


def run_harness(
    lm,
    tasks: list[str],
    *,
    include_path: str | None = None,
    output_path: str | None = None,
    limit: float | None = None,
    num_fewshot: int | None = None,
    log_samples: bool = False,
    model_args: dict | None = None,
    seed: int = 0,
) -> dict | None:
    """Evaluate ``lm`` on ``tasks``; print lm-eval's table and return its results (None on ranks but 0)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.utils import make_table

    manager = _task_manager(tasks, include_path)
    tracker = EvaluationTracker(output_path=output_path) if output_path else None
    results = simple_evaluate(
        model=lm, model_args=model_args or {}, tasks=tasks, task_manager=manager, limit=limit,
        num_fewshot=num_fewshot, log_samples=log_samples,
        evaluation_tracker=tracker, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed,
    )  # fmt: skip
    logs = getattr(lm, "requests_log", None)
    if logs is not None and getattr(lm, "world_size", 1) > 1:  # every process's requests (a collective call)
        gathered = lm.gather_object(logs)
        if gathered is not None:  # the harness repeats a process's last request to even out the counts: once each
            unique = {(r["task"], r["doc_id"], r["choice"]): r for part in gathered for r in part}
            logs = sorted(unique.values(), key=lambda r: (r["task"], r["doc_id"], r["choice"]))
    if results is None:
        return None
    samples = results.pop("samples", None)
    if tracker is not None:
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"] if samples else []:
            tracker.save_results_samples(task_name=task, samples=samples[task])
        folder = Path(output_path) / str(tracker.general_config_tracker.model_name_sanitized)
        if folder.is_dir() and logs:
            with open(folder / f"requests_{tracker.date_id}.jsonl", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in logs)
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    return results
