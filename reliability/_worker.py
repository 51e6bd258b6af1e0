"""Fresh-process worker: ``python -m reliability._worker TASK.json`` (tasks batch many checks per process).

Tasks:

* ``resume``: restore many checkpoints (torch state_dicts; ``.keras`` files; ``tf.train.Checkpoint``) in this
  fresh process, continue each run to its end and compare it bit for bit with the uninterrupted run.
* ``soak``: a long run of one optimizer with a schedule; RSS and step times.
* ``tf_mirrored``: MirroredStrategy on two logical CPUs vs one device (AdamWeightDecay + GradientAccumulator).
* ``fuzz_state``: malformed-checkpoint batches (``_fuzz_plan``, ``_fuzz_torch``, ``_fuzz_keras``).

The report (JSON) goes to ``task["report"]``. :func:`launch` runs one (the parent's side; it imports no framework).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_TASK_NUMBERS = itertools.count()  # (task files of threads launching at once get distinct names)


def worker_env(**extra: str) -> dict[str, str]:
    """This process's environment for a worker: the repository importable, a fixed hash seed, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # (TensorFlow's start-up lines would fill a crash's output)
    return {**env, **extra}


def launch(
    task: dict[str, Any], workdir: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run ``task`` in a fresh worker process (environment ``env``, default :func:`worker_env`); the finished process
    and its report, which is None when the process wrote none (it crashed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    task_path = workdir / f"task-{task['task']}-{next(_TASK_NUMBERS)}-{time.monotonic_ns()}.json"
    report_path = task_path.with_suffix(".report.json")
    task_path.write_text(json.dumps({**task, "report": str(report_path)}), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "reliability._worker", str(task_path)],
        cwd=ROOT,
        env=worker_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    ok = proc.returncode == 0 and report_path.exists()
    return proc, json.loads(report_path.read_text(encoding="utf-8")) if ok else None


def _resume(task: dict[str, Any]) -> dict[str, Any]:
    from testsupport.compare import bitwise_differences

    with open(task["expected"], "rb") as handle:
        expected = pickle.load(handle)  # written by the parent test from plain numpy arrays
    framework = task["framework"]
    problems: list[str] = []
    checked = 0
    for item in task["items"]:
        scn, k, fmt, path = item["scenario"], item["k"], item["format"], item["path"]
        where = f"{framework}:{scn['id']}@{k}[{fmt}]"
        traj, final = expected[scn["id"]]
        try:
            run = _restore(framework, scn, fmt, path)
        except Exception as error:
            problems.append(f"{where}: restore raised {type(error).__name__}: {error}")
            continue
        try:
            problems += bitwise_differences(traj[k], run.snapshot(), f"{where} right after restore")
            for t in range(k, scn["steps"]):
                run.step(t)
                problems += bitwise_differences(traj[t + 1], run.snapshot(), f"{where} step {t + 1}")
            problems += bitwise_differences(final, run.final_state(), f"{where} final state")
        except Exception as error:
            problems.append(f"{where}: continuing raised {type(error).__name__}: {error}")
        checked += 1
    return {"checked": checked, "problems": problems}


def _restore(framework: str, scn: dict[str, Any], fmt: str, path: str) -> Any:
    from reliability import _runs

    if framework == "torch":
        import torch

        run = _runs.TorchRun(scn)
        run.restore(torch.load(path, weights_only=True))
        return run
    import hf_optim_tf  # noqa: F401 - registers the package's serializable classes, as a user's import does
    import keras

    from testsupport.keras_adapter import keras_model_class

    keras_model_class()
    if fmt == "keras":
        return _runs.TfRun(scn, model=keras.saving.load_model(path))
    run = _runs.TfRun(scn)
    run.build_optimizer()
    run.tf_checkpoint().read(path).assert_consumed()
    return run


def main(argv: list[str]) -> int:
    task = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    warnings.simplefilter("error")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorflow|keras|google|absl|h5py).*")
    # Keras warns when a .keras file saved before the first step (optimizer not built yet) is loaded into a built
    # optimizer; the state is all zeros then, and the bitwise trajectory comparison checks the outcome.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer", category=UserWarning)
    # Keras on JAX without x64 asks for int64 (step counts) and gets int32, with this warning (not ours).
    warnings.filterwarnings("ignore", message="Explicitly requested dtype", category=UserWarning)
    handlers = {"resume": _resume}
    if task["task"] not in handlers:
        from reliability import _tasks

        handlers = _tasks.HANDLERS
    report = handlers[task["task"]](task)
    Path(task["report"]).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
