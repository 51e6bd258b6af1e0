"""Worker tasks that need a process of their own: soak runs and TF MirroredStrategy (see ``_worker``)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import hf_optim_spec as hs
import numpy as np

from testsupport.spec_args import spelled

from . import _drive, _runs


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except OSError:
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def soak_schedule() -> hs.Spec:
    """The first "factor" schedule of the registry that takes both generic step counts (get_scheduler's)."""
    return next(
        s
        for s in _drive.specs_of("schedule")
        if s.output == "factor" and {"num_warmup_steps", "num_training_steps"} <= set(s.parameters)
    )


def _soak_scenario(optimizer: hs.Spec, steps: int, seed: int) -> dict[str, Any]:
    """The optimizer's first case; the soak schedule drives its lr, unless that case computes its own lr
    (Adafactor's relative step: then that internal schedule is the one soaked)."""
    case = _drive.optimizer_case(optimizer, needs_lr=False)
    own_lr = (
        hs.validate(optimizer, hs.thaw(optimizer.cases[case]["hyperparams"]))[_drive.lr_param(optimizer).name] is None
    )
    schedule = None if own_lr else soak_schedule()
    params = (
        {**_drive.schedule_params(schedule), "num_warmup_steps": steps // 10, "num_training_steps": steps}
        if schedule is not None
        else {}
    )
    return {
        "id": f"{optimizer.id}+{schedule.id if schedule else 'own lr'}",
        "optimizer": optimizer.id,
        "opt_case": case,
        "schedule": schedule.id if schedule else None,
        "params": params,
        "base_lr": schedule.cases[0].get("base_lr") if schedule else None,
        "shapes": hs.thaw(optimizer.cases[case]["shapes"]),
        "steps": steps,
        "bounds": [],
        "seed": seed,
    }


def _growth_less_largest_jump(samples: list[int]) -> int:
    jumps = [max(b - a, 0) for a, b in itertools.pairwise(samples)]
    return sum(jumps) - max(jumps, default=0)


def _soak_one(framework: str, scn: dict[str, Any]) -> dict[str, Any]:
    steps = scn["steps"]
    shapes = scn["shapes"]
    rng = np.random.default_rng(scn["seed"])
    # A noisy quadratic, as in training: gradient = (param - target) + noise, the noise recycled from 64 draws.
    # (Gradients that ignore the parameters would be a biased random walk: with a recycled sequence, Adafactor's
    # relative step, which scales each update by RMS(param), grows the parameters exponentially, to inf in
    # ~45,000 steps, in every implementation.)
    targets = [rng.standard_normal(shape).astype(np.float32) for shape in shapes.values()]
    grads = [np.float32(0.1) * rng.standard_normal((64, *shape)).astype(np.float32) for shape in shapes.values()]
    if framework == "torch":
        import torch

        run = _runs.TorchRun(scn)
        noise = [[torch.from_numpy(g[i]) for g in grads] for i in range(64)]
        target_tensors = [torch.from_numpy(x) for x in targets]
        params = list(run.named.values())

        def step(t: int) -> None:
            for p, target, n in zip(params, target_tensors, noise[t % 64]):
                p.grad = p.detach() - target + n
            run.optimizer.step()
            if run.scheduler is not None:
                run.scheduler.step()

        def finite() -> bool:
            return all(bool(torch.isfinite(p).all()) for p in params)

        def lr() -> float:
            if run.scheduler is not None:
                return float(run.scheduler.get_last_lr()[0])
            return float(run.optimizer.get_lr()[0])  # Adafactor's own (relative-step) lr
    else:
        import tensorflow as tf

        run = _runs.TfRun(scn)
        variables = run.model.params
        noise = [[tf.constant(g[i]) for g in grads] for i in range(64)]
        target_tensors = [tf.constant(x) for x in targets]

        @tf.function
        def apply(*ns: Any) -> None:
            gs = [v - target + n for v, target, n in zip(variables, target_tensors, ns)]
            run.optimizer.apply_gradients(zip(gs, variables))

        def step(t: int) -> None:
            apply(*noise[t % 64])

        def finite() -> bool:
            return all(bool(np.isfinite(v.numpy()).all()) for v in variables)

        def lr() -> float:
            return float(run.optimizer.learning_rate.numpy())

    warm = max(steps // 10, 1)
    times = np.zeros(steps)  # preallocated: a growing list of floats would itself grow RSS by ~1.6 MiB
    # RSS at every tenth from the end of the warm-up (lazy state, tracing and allocator pools exist by then): a
    # leak grows in each interval, a one-time allocation in one
    samples = []
    lrs = []
    for t in range(steps):
        if t >= warm and (t - warm) % warm == 0:
            samples.append(rss_bytes())
        start = time.process_time()  # CPU time: the work of a step, not the shared machine's other load
        step(t)
        times[t] = time.process_time() - start
        if t % max(steps // 50, 1) == 0:
            lrs.append(lr())
    rss_before, rss_after = samples[0], rss_bytes()
    tenth = max(steps // 10, 1)
    # each tenth's fastest step: the work of a step where nothing else slowed it (in CPU time too, another process
    # on the other core slows a step through the shared cache and memory: medians of a torch soak's tenths, about a
    # second each, drifted x1.81 in a fresh-clone run with no change in the work); a step whose work grows makes
    # every step of a later tenth slower, its fastest one too
    first = float(times[tenth : 2 * tenth].min())  # the first tenth after the warm-up tenth
    last = float(times[-tenth:].min())
    return {
        "steps": steps,
        "rss_before_mib": rss_before / 2**20,
        "rss_after_mib": rss_after / 2**20,
        "rss_growth_mib": (rss_after - rss_before) / 2**20,
        "rss_samples_mib": [round(x / 2**20, 3) for x in [*samples, rss_after]],
        # growth with the largest single jump between samples left out: a leak grows in every interval, a one-time
        # allocation (the heap taking one more arena) in one
        "rss_growth_less_largest_jump_mib": _growth_less_largest_jump([*samples, rss_after]) / 2**20,
        "fastest_step_ms_first": first * 1e3,
        "fastest_step_ms_last": last * 1e3,
        "drift_ratio": last / first,
        "finite": finite() and all(np.isfinite(lrs)),
        "total_s": float(times.sum()),
    }


def soak(task: dict[str, Any]) -> dict[str, Any]:
    framework = task["framework"]
    out = {}
    for index, optimizer in enumerate(_drive.specs_of("optimizer")):
        scn = _soak_scenario(optimizer, task["steps"], task["seed"] + index)
        out[scn["id"]] = _soak_one(framework, scn)
    return {"framework": framework, "runs": out}


# --------------------------------------------------------------------------- TF MirroredStrategy


def tf_mirrored(task: dict[str, Any]) -> dict[str, Any]:
    """AdamWeightDecay + GradientAccumulator under MirroredStrategy (2 logical CPUs) vs one device."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import hf_optim_tf
    import keras

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    spec = hs.get("adam_weight_decay")  # the optimizer the issue names for this check
    case = spec.cases[_first_case_with(spec, "exclude_from_weight_decay")]
    hyper = spelled(spec, hs.thaw(case["hyperparams"]), "tf", lambda r: r, pairs_as_tuples=True)
    shapes = {name.replace("/", "_"): tuple(shape) for name, shape in case["shapes"].items()}
    init = _drive.init_params(task["seed"], shapes)
    global_batch, accum, steps = 8, task["accumulation"], task["steps"]
    in_dim = 5

    def data(step: int, micro: int) -> np.ndarray:
        rng = np.random.default_rng([task["seed"], step, micro])
        return rng.standard_normal((global_batch, in_dim)).astype(np.float32)

    projections = {
        name: np.random.default_rng([task["seed"], i])
        .standard_normal((in_dim, int(np.prod(shape) or 1)))
        .astype(np.float32)
        for i, (name, shape) in enumerate(shapes.items())
    }

    def run(strategy: tf.distribute.Strategy) -> dict[str, np.ndarray]:
        with strategy.scope():
            variables = [keras.Variable(init[name], name=name) for name in shapes]
            optimizer = hf_optim_tf.AdamWeightDecay(**hyper)
            accumulator = hf_optim_tf.GradientAccumulator()
            optimizer.build(variables)
        proj = {name: tf.constant(p) for name, p in projections.items()}

        def loss_fn(x: tf.Tensor) -> tf.Tensor:
            total = tf.constant(0.0)
            for v, name in zip(variables, shapes):
                flat = tf.reshape(v, [-1])
                pred = tf.tanh(tf.matmul(x, proj[name]) * flat)  # (local batch, numel)
                total += tf.reduce_sum(tf.square(pred - 0.1))
            return total / global_batch / accum  # sum over the local examples / global batch

        @tf.function
        def accumulate(x: Any) -> None:
            def replica(local: tf.Tensor) -> None:
                with tf.GradientTape() as tape:
                    loss = loss_fn(local)
                accumulator(tape.gradient(loss, variables))

            strategy.run(replica, args=(x,))

        @tf.function
        def apply() -> None:
            def replica() -> None:
                optimizer.apply_gradients(zip(accumulator.gradients, variables))
                accumulator.reset()

            strategy.run(replica)

        replicas = strategy.num_replicas_in_sync
        per = global_batch // replicas
        for step in range(steps):
            for micro in range(accum):
                batch = data(step, micro)
                x = strategy.experimental_distribute_values_from_function(
                    lambda ctx, b=batch: tf.constant(
                        b[ctx.replica_id_in_sync_group * per : (ctx.replica_id_in_sync_group + 1) * per]
                    )
                )
                accumulate(x)
            apply()
        return {name: v.numpy().copy() for name, v in zip(shapes, variables)} | {
            "iterations": np.asarray(int(optimizer.iterations.numpy()))
        }

    mirrored = run(tf.distribute.MirroredStrategy(devices=devices[:2]))
    single = run(tf.distribute.OneDeviceStrategy(devices[0]))
    tol = spec.tol("float32")
    diffs = {name: float(np.max(np.abs(mirrored[name].astype(np.float64) - single[name]))) for name in shapes}
    limits = {name: tol.atol + tol.rtol * float(np.max(np.abs(single[name]))) for name in shapes}
    moved = {name: float(np.max(np.abs(single[name] - init[name]))) for name in shapes}
    return {
        "replicas": len(devices[:2]),
        "case": case["description"],
        "steps": steps,
        "accumulation": accum,
        "iterations": [int(mirrored["iterations"]), int(single["iterations"])],
        "max_abs_diff": diffs,
        "limit": limits,
        "moved": moved,
        "bitwise": all(np.array_equal(mirrored[n], single[n]) for n in shapes),
    }


def _first_case_with(spec: hs.Spec, name: str) -> int:
    """First float32 case that sets ``name`` to a truthy value (decay on: the include/exclude path is exercised)."""
    for index, case in enumerate(spec.cases):
        if case.get("dtype", "float32") == "float32" and case["hyperparams"].get(name):
            if not any(hs.is_schedule_ref(v) for v in case["hyperparams"].values()):
                return index
    raise LookupError(name)


def fuzz_state(task: dict[str, Any]) -> dict[str, Any]:
    """Malformed-checkpoint batches (``_fuzz_torch`` / ``_fuzz_keras``): one report per item."""
    reports = []
    for item in task["items"]:
        if item["framework"] == "torch":
            from . import _fuzz_torch as fuzz

            if item["route"] == "load_state_dict":
                reports.append(fuzz.run_schedule_batch(item["seed"], item["count"]))
                continue
        else:
            from . import _fuzz_keras as fuzz  # type: ignore[no-redef]
        reports.append(fuzz.run_batch(item["optimizer"], item["route"], item["dtype"], item["seed"], item["count"]))
    return {"reports": reports}


HANDLERS = {"soak": soak, "tf_mirrored": tf_mirrored, "fuzz_state": fuzz_state}
