"""Fresh-process worker: ``python -m reliability._worker TASK.json`` (tasks batch many checks per process).

Tasks:

* ``resume``: restore many checkpoints (torch state_dicts; ``.keras`` files; ``tf.train.Checkpoint``) in this
  fresh process, continue each run to its end and compare it bit for bit with the uninterrupted run.
* ``soak``: a long run of one optimizer with a schedule; RSS and step times.
* ``tf_mirrored``: MirroredStrategy on two logical CPUs vs one device (AdamWeightDecay + GradientAccumulator).

The report (JSON) goes to ``task["report"]``.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any


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
