"""Mixed precision, both frameworks, every optimizer of the registry.

* fp16 loss scaling (torch ``GradScaler`` + ``hf_optim_torch._amp.scaler_step``; Keras ``LossScaleOptimizer`` +
  ``hf_optim_tf._amp.apply_scaled_gradients``): steps with inf gradients are skipped and advance neither the
  optimizer state nor the schedule; the run equals, bit for bit, a plain run that only sees the applied steps
  (the scale is a power of two, so scaling and unscaling are exact).
* bf16 parameters with fp32 math (``fp32_math=True`` where it is an option; Adafactor always): the bf16 run
  equals, bit for bit, an emulation that computes the step in fp32 and rounds what is stored in bf16 (the
  parameter, and each state tensor the optimizer keeps in bf16) once per step, to nearest or, with
  ``stochastic_rounding=True``, with the spec's stochastic rounding (``hf_optim_spec.rounding``, the same bits in
  every framework). Per-op bf16 arithmetic (each intermediate rounded) fails this.
"""

from __future__ import annotations

import copy
from typing import Any

import hf_optim_spec as hs
import numpy as np
import pytest
from hf_optim_spec.rounding import round_stochastic, rounding_bits, rounding_key

from reliability import _drive, _runs, _tasks
from reliability.conftest import SEED
from testsupport.compare import bitwise_differences

STEPS = 10
SKIPPED = {2, 3, 7}  # steps whose gradients hold an inf
SCALE = 2.0**8


def _scenario(optimizer: hs.Spec, steps: int = 2 * STEPS) -> dict[str, Any]:
    return _tasks._soak_scenario(optimizer, steps, SEED)


def _grads(scn: dict[str, Any], t: int) -> list[np.ndarray]:
    return list(_drive.grads_at(scn["seed"], t, scn["shapes"]).values())


OPTIMIZERS = [s.id for s in _drive.specs_of("optimizer")]


# --------------------------------------------------------------------------- fp16 loss scaling


@pytest.mark.parametrize("spec_id", OPTIMIZERS)
def test_torch_skipped_step_advances_neither_state_nor_schedule(spec_id: str) -> None:
    import torch
    from hf_optim_torch._amp import scaler_step

    scn = _scenario(hs.get(spec_id))
    scaled, plain = _runs.TorchRun(scn), _runs.TorchRun(scn)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=10_000)
    applied_steps = 0
    for t in range(STEPS):
        grads = _grads(scn, t)
        # copies: state_dict() would share the live state tensors, so a before/after comparison could not fail
        before = scaled.snapshot(), scaled.final_state(), copy.deepcopy(scaled.checkpoint()["scheduler"])
        loss_scale = float(scaler.scale(torch.ones(())))  # what scaler.scale(loss).backward() multiplies by
        for p, g in zip(scaled.named.values(), grads):
            big = g * np.float32(loss_scale)
            if t in SKIPPED:
                big.flat[0] = np.inf
            p.grad = torch.from_numpy(big)
        applied = scaler_step(scaler, scaled.optimizer, scaled.scheduler)
        assert applied == (t not in SKIPPED)
        if not applied:
            after = scaled.snapshot(), scaled.final_state(), scaled.checkpoint()["scheduler"]
            problems = bitwise_differences(before[0], after[0], "skip") + bitwise_differences(
                before[1], after[1], "skip"
            )
            assert not problems, f"step {t}: a skipped step changed params, lr or state:\n" + "\n".join(problems)
            assert before[2] == after[2], "a skipped step advanced the schedule"
            continue
        for p, g in zip(plain.named.values(), grads):
            p.grad = torch.from_numpy(g)
        plain.optimizer.step()
        if plain.scheduler is not None:
            plain.scheduler.step()
        applied_steps += 1
        problems = bitwise_differences(plain.snapshot(), scaled.snapshot(), f"{spec_id} step {t}")
        problems += bitwise_differences(plain.final_state(), scaled.final_state(), f"{spec_id} state {t}")
        assert not problems, "\n".join(problems)
    assert applied_steps == STEPS - len(SKIPPED)


@pytest.mark.parametrize("spec_id", OPTIMIZERS)
def test_keras_skipped_step_advances_neither_state_nor_schedule(spec_id: str) -> None:
    import keras
    import tensorflow as tf
    from hf_optim_tf._amp import apply_scaled_gradients

    scn = _scenario(hs.get(spec_id))
    scaled, plain = _runs.TfRun(scn), _runs.TfRun(scn)
    lso = keras.optimizers.LossScaleOptimizer(scaled.optimizer, initial_scale=SCALE, dynamic_growth_steps=10_000)
    lso.build(scaled.model.params)
    for t in range(STEPS):
        grads = _grads(scn, t)
        before = scaled.snapshot(), scaled.final_state()
        scale = np.float32(lso.scale_loss(1.0))  # what opt.scale_loss(loss) multiplies by
        bad = [g * scale for g in grads]
        if t in SKIPPED:
            bad[0].flat[0] = np.inf
        applied = bool(apply_scaled_gradients(lso, zip([tf.constant(g) for g in bad], scaled.model.params)))
        assert applied == (t not in SKIPPED)
        if not applied:
            after = scaled.snapshot(), scaled.final_state()
            problems = bitwise_differences(before[0], after[0], "skip") + bitwise_differences(
                before[1], after[1], "skip"
            )
            assert not problems, f"step {t}: a skipped step changed something:\n" + "\n".join(problems)
            continue
        plain.optimizer.apply_gradients(zip([tf.constant(g) for g in grads], plain.model.params))
        problems = bitwise_differences(plain.snapshot(), scaled.snapshot(), f"{spec_id} step {t}")
        problems += bitwise_differences(plain.final_state(), scaled.final_state(), f"{spec_id} state {t}")
        assert not problems, "\n".join(problems)
    assert int(scaled.optimizer.iterations.numpy()) == STEPS - len(SKIPPED)


def test_scaler_step_with_a_disabled_scaler_always_steps() -> None:
    import torch
    from hf_optim_torch._amp import scaler_step

    p = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([p], lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    p.grad = torch.ones(2)
    assert scaler_step(torch.amp.GradScaler("cpu", enabled=False), optimizer, scheduler) is True
    assert torch.equal(p.detach(), torch.full((2,), 0.5)) and scheduler.last_epoch == 1


# --------------------------------------------------------------------------- bf16 params, fp32 math

ROUNDING_SEED = 9
ROUNDINGS = ("nearest", "stochastic")


def _low_precision_options(spec: hs.Spec, rounding: str) -> dict[str, Any]:
    """fp32 math where the optimizer makes it optional (its default keeps transformers' per-op rounding), plus
    stochastic rounding of the parameters when asked."""
    options: dict[str, Any] = {"fp32_math": True} if "fp32_math" in spec.parameters else {}
    if rounding == "stochastic":
        options.update(stochastic_rounding=True, rounding_seed=ROUNDING_SEED)
    return options


def _stochastic_bf16(values: np.ndarray, index: int, step: int) -> np.ndarray:
    """float32 ``values`` stochastically rounded to bf16 as the spec defines it (returned as float32)."""
    bits = rounding_bits(rounding_key(ROUNDING_SEED, index, step), np.arange(values.size, dtype=np.int64))
    return round_stochastic(values.astype(np.float64), bits.reshape(values.shape)).astype(np.float32)


def _bf16_round_torch(t: Any) -> Any:
    import torch

    return t.to(torch.bfloat16).to(torch.float32)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("spec_id", OPTIMIZERS)
def test_torch_bf16_params_are_updated_with_fp32_math(spec_id: str, rounding: str) -> None:
    """bf16 run == float32 run whose parameter (and each state tensor kept in bf16) is rounded once per step."""
    import torch

    spec = hs.get(spec_id)
    scn = {**_scenario(spec), "extra": _low_precision_options(spec, rounding)}
    low, emu = _runs.TorchRun(scn), _runs.TorchRun(scn)
    with torch.no_grad():
        for p, q in zip(low.named.values(), emu.named.values()):
            p.data = p.data.to(torch.bfloat16)
            q.copy_(_bf16_round_torch(q))
    for t in range(STEPS):
        for p, q, g in zip(low.named.values(), emu.named.values(), _grads(scn, t)):
            p.grad = torch.from_numpy(g).to(torch.bfloat16)
            q.grad = _bf16_round_torch(torch.from_numpy(g))
        low.optimizer.step()
        emu.optimizer.step()
        with torch.no_grad():  # store what the bf16 run stores in bf16, rounded once per step
            for index, (p, q) in enumerate(zip(low.named.values(), emu.named.values())):
                if rounding == "nearest":
                    q.copy_(_bf16_round_torch(q))
                else:
                    q.copy_(torch.from_numpy(_stochastic_bf16(q.numpy(), index, t + 1)))
                for key, value in low.optimizer.state[p].items():
                    if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
                        emu.optimizer.state[q][key].copy_(_bf16_round_torch(emu.optimizer.state[q][key]))
        if low.scheduler is not None:
            low.scheduler.step()
            emu.scheduler.step()
        for name, p, q in zip(low.named, low.named.values(), emu.named.values()):
            p32, q32 = p.detach().float(), q.detach()
            assert torch.isfinite(p32).all()
            diff = float((p32 - q32).abs().max())
            assert torch.equal(p32, q32), f"{spec_id} step {t}: {name} differs from fp32 math by {diff}"


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("spec_id", OPTIMIZERS)
def test_keras_bf16_variables_are_updated_with_fp32_math(spec_id: str, rounding: str) -> None:
    """The Keras twin of the torch test: a float32 run rounded once per step is what the bf16 run stores."""
    import tensorflow as tf

    spec = hs.get(spec_id)
    scn = {**_scenario(spec), "extra": _low_precision_options(spec, rounding)}
    low = _runs.TfRun(scn, param_dtype="bfloat16", init_dtype="bfloat16")
    emu = _runs.TfRun(scn, param_dtype="float32", init_dtype="bfloat16")
    low.build_optimizer()
    emu.build_optimizer()
    low_state = {v.path.split("/", 1)[-1]: v for v in low.optimizer.variables}
    for t in range(STEPS):
        grads = _grads(scn, t)
        low.optimizer.apply_gradients(zip([tf.constant(g, tf.bfloat16) for g in grads], low.model.params))
        rounded = [tf.cast(tf.cast(g, tf.bfloat16), tf.float32) for g in grads]
        emu.optimizer.apply_gradients(zip(rounded, emu.model.params))
        for index, v in enumerate(emu.model.params):
            if rounding == "nearest":
                v.assign(tf.cast(tf.cast(v, tf.bfloat16), v.dtype))
            else:
                v.assign(_stochastic_bf16(v.numpy(), index, t + 1))
        params = {id(v) for v in emu.model.params}
        for v in emu.optimizer.variables:
            twin = low_state.get(v.path.split("/", 1)[-1])
            if id(v) not in params and twin is not None and twin.dtype == "bfloat16":
                v.assign(tf.cast(tf.cast(v, tf.bfloat16), v.dtype))
        for name, a, b in zip(scn["shapes"], low.model.params, emu.model.params):
            a32 = tf.cast(a, tf.float32).numpy()
            assert np.isfinite(a32).all()
            diff = float(np.max(np.abs(a32 - b.numpy())))
            assert np.array_equal(a32, b.numpy()), f"{spec_id} step {t}: {name} differs from fp32 math by {diff}"


# --------------------------------------------------------------------------- real float16 training


def _fp16_batches(steps: int, overflow: set[int]) -> list[np.ndarray]:
    """Inputs of a tiny regression; at the ``overflow`` steps large enough that the float16 forward overflows."""
    rng = np.random.default_rng(SEED)
    batches = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(steps)]
    return [x * np.float32(1e5) if t in overflow else x for t, x in enumerate(batches)]


@pytest.mark.parametrize("spec_id", OPTIMIZERS)
def test_torch_float16_autocast_training_skips_exactly_the_overflowing_steps(spec_id: str) -> None:
    """A real fp16 forward (``torch.autocast(float16)``) whose overflow makes inf gradients: GradScaler skips
    those steps, and ``scaler_step`` leaves parameters, optimizer state and schedule exactly as they were."""
    import torch
    from hf_optim_torch import get_linear_schedule_with_warmup
    from hf_optim_torch._amp import scaler_step

    from reliability import _construct

    spec = hs.get(spec_id)
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    kwargs = _construct.base_kwargs("torch", spec)
    optimizer = _construct.factory("torch", spec)(list(model.named_parameters()), **kwargs)
    with_lr = optimizer.defaults.get("lr") is not None  # Adafactor's relative step has no lr to schedule
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, 2 * STEPS) if with_lr else None
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    applied_count = 0
    for t, x in enumerate(_fp16_batches(STEPS, SKIPPED)):
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(torch.from_numpy(x))
        loss = out.float().pow(2).mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        before = (
            [p.detach().clone() for p in model.parameters()],
            copy.deepcopy(optimizer.state_dict()["state"]),
            None if scheduler is None else scheduler.state_dict()["last_epoch"],
        )
        applied = scaler_step(scaler, optimizer, scheduler)
        assert applied == (t not in SKIPPED), f"step {t}: applied={applied}, loss={float(loss)}"
        after_params = list(model.parameters())
        moved = any(not torch.equal(a, b) for a, b in zip(before[0], after_params))
        assert moved == applied, f"step {t}: parameters moved={moved}, applied={applied}"
        if not applied:
            state = optimizer.state_dict()["state"]
            assert state.keys() == before[1].keys(), "a skipped step created state"
            for key, entries in state.items():
                for name, value in entries.items():
                    old = before[1][key][name]
                    same = torch.equal(value, old) if isinstance(value, torch.Tensor) else value == old
                    assert same, f"step {t}: a skipped step changed state {key}/{name}"
            if scheduler is not None:
                assert scheduler.state_dict()["last_epoch"] == before[2], "a skipped step advanced the schedule"
        applied_count += applied
    steps = {int(s["step"]) for s in optimizer.state.values()}
    assert steps == {applied_count}, f"optimizer steps {steps}, applied {applied_count}"
    if scheduler is not None:
        assert scheduler.last_epoch == applied_count


@pytest.mark.parametrize("spec_id", OPTIMIZERS)
def test_keras_mixed_float16_training_skips_exactly_the_overflowing_steps(spec_id: str) -> None:
    """A real ``mixed_float16`` layer (float16 compute, float32 variables) under ``LossScaleOptimizer``: the
    overflowing steps are skipped and change no variable, no optimizer state and no ``iterations``."""
    import keras
    import tensorflow as tf
    from hf_optim_tf._amp import apply_scaled_gradients

    from reliability import _construct

    spec = hs.get(spec_id)
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(4, dtype="mixed_float16")
    layer.build((None, 8))
    inner = _construct.construct("tf", spec, _construct.base_kwargs("tf", spec))
    lso = keras.optimizers.LossScaleOptimizer(inner, initial_scale=SCALE, dynamic_growth_steps=10_000)
    variables = layer.trainable_variables
    lso.build(variables)
    applied_count = 0
    for t, x in enumerate(_fp16_batches(STEPS, SKIPPED)):
        with tf.GradientTape() as tape:
            out = layer(tf.constant(x))
            loss = tf.reduce_mean(tf.square(tf.cast(out, "float32")))
            scaled = lso.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        before = [v.numpy().copy() for v in variables], [v.numpy().copy() for v in inner.variables]
        applied = bool(apply_scaled_gradients(lso, zip(grads, variables)))
        assert applied == (t not in SKIPPED), f"step {t}: applied={applied}, loss={float(loss)}"
        moved = any(not np.array_equal(a, v.numpy()) for a, v in zip(before[0], variables))
        assert moved == applied, f"step {t}: variables moved={moved}, applied={applied}"
        if not applied:
            for old, v in zip(before[1], inner.variables):
                assert np.array_equal(old, v.numpy()), f"step {t}: a skipped step changed {v.path}"
        applied_count += applied
    assert int(inner.iterations.numpy()) == applied_count
