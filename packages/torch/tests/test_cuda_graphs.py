"""A step captured into a CUDA graph (``torch.cuda.graph``) and replayed does what the eager steps do.

A replay repeats the device work the step dispatched while it was captured, with the Python numbers of that moment.
So a captured step is correct at every replay exactly when each step dispatches the same ops with the same
non-tensor arguments, reads nothing back to the host, and leaves no host-side record that a replay would make stale.
The CPU tests check that with torch's dispatch (every aten op of two consecutive captured steps, recorded), on CPU
tensors standing in for a capture (``_path_choice._stream_capturing`` patched), so that they run on every machine;
``test_graph_replays_equal_eager_steps`` captures and replays a real graph where a CUDA device is present
(``benchmarks/cuda_check.sh`` runs this file on a lent GPU machine).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import hf_optim_torch
import pytest
import torch
from hf_optim_torch import _native, _path_choice, _step_count
from torch.utils._python_dispatch import TorchDispatchMode

Build = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def _tensor_lr(device: torch.device) -> torch.Tensor:
    """The configurations' lr as a tensor on the parameters' device (what a scheduler updates in place)."""
    return torch.tensor(1e-2, device=device)


#: optimizer configurations a capture takes: name -> builder(params, device). Without ``foreach`` a captured step
#: takes the for-loop on CPU (the multi-tensor path on CUDA, which the ``foreach`` ones take here)
CAPTURED: dict[str, Callable[[list[torch.Tensor], torch.device], torch.optim.Optimizer]] = {
    "AdamW": lambda ps, d: hf_optim_torch.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "AdamW tensor lr": lambda ps, d: hf_optim_torch.AdamW(ps, lr=_tensor_lr(d), weight_decay=0.1),
    "AdamW foreach": lambda ps, d: hf_optim_torch.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=True),
    "AdamW tensor lr foreach": lambda ps, d: hf_optim_torch.AdamW(ps, lr=_tensor_lr(d), weight_decay=0.1, foreach=True),
    "AdamWeightDecay": lambda ps, d: hf_optim_torch.AdamWeightDecay(ps, learning_rate=1e-2, weight_decay_rate=0.1),
    "AdamWeightDecay foreach": lambda ps, d: hf_optim_torch.AdamWeightDecay(
        ps, learning_rate=1e-2, weight_decay_rate=0.1, foreach=True
    ),
    "Adafactor": lambda ps, d: hf_optim_torch.Adafactor(ps),
    "Adafactor tensor lr": lambda ps, d: hf_optim_torch.Adafactor(
        ps, lr=_tensor_lr(d), relative_step=False, scale_parameter=False, beta1=0.9, weight_decay=0.1
    ),
    "Adafactor tensor lr foreach": lambda ps, d: hf_optim_torch.Adafactor(
        ps, lr=_tensor_lr(d), relative_step=False, beta1=0.9, weight_decay=0.1, foreach=True
    ),
    "Adafactor foreach": lambda ps, d: hf_optim_torch.Adafactor(ps, foreach=True, warmup_init=True),
}
SHAPES = [(4, 3), (3,), (5, 2), (1, 6)]


def _plain(value: Any) -> Any:
    """An op argument as what a replay repeats: a tensor by its layout (its values are read on the device), anything
    else by its value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device.type)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.memory_format)):
        return value
    return type(value).__name__


class _Recorder(TorchDispatchMode):
    """Every aten op dispatched inside, with its non-tensor arguments, and every read of a tensor's values by the
    host: ``item`` and ``float()`` dispatch ``aten._local_scalar_dense``; ``tolist`` and ``numpy`` of a CPU tensor
    dispatch nothing (on CUDA they copy to the host), so they are recorded here as ``host read: tolist``. A tensor
    made from host data (``torch.tensor``: ``aten.lift_fresh``, on CUDA a copy from the host, which a capture refuses)
    and a copy between devices count as host transfers too."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, Any, Any]] = []
        self._patch = pytest.MonkeyPatch()

    def __enter__(self) -> _Recorder:
        for name in ("tolist", "numpy"):
            read = getattr(torch.Tensor, name)

            def recorded(tensor: torch.Tensor, *args: Any, _read: Any = read, _name: str = name, **kwargs: Any) -> Any:
                self.ops.append((f"host read: {_name}", (), ()))
                return _read(tensor, *args, **kwargs)

            self._patch.setattr(torch.Tensor, name, recorded)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._patch.undo()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        self.ops.append((str(func), _plain(args), _plain(sorted(kwargs.items()))))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source, target = args[1 if func is torch.ops.aten.copy_.default else 0], kwargs.get("device", args[0])
            if getattr(target, "device", target) not in (None, source.device):
                self.ops.append(("host transfer: between devices", (), ()))
        return func(*args, **kwargs)

    def host_transfers(self) -> list[str]:
        """What the step read back to the host or sent from it."""
        marks = ("host read", "host transfer", "_local_scalar_dense", "lift_fresh")
        return [op[0] for op in self.ops if any(mark in op[0] for mark in marks)]


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """``capture["on"] = True``: the steps on CPU tensors run as if a CUDA stream were capturing them."""
    state = {"on": False}
    monkeypatch.setattr(_path_choice, "_stream_capturing", lambda device: state["on"])
    return state


def _model(device: str = "cpu", seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def _twin(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the parameters, with copies of their gradients."""
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, twin):
        q.grad = p.grad.clone()
    return twin


def _new_gradients(params: list[torch.Tensor], seed: int) -> None:
    generator = torch.Generator(device=params[0].device).manual_seed(seed)
    for p in params:
        p.grad.copy_(torch.randn(p.shape, generator=generator, device=p.device))


def _take_the_captured_path(optimizer: torch.optim.Optimizer) -> None:
    """Make an eager optimizer take the path its captured twin takes: not the fused one; the multi-tensor one where
    it was asked for or is the device's default."""
    for group in optimizer.param_groups:
        group.update(foreach=_path_choice.use_foreach(group["foreach"], group["params"]), fused=False)


def _recorded_step(optimizer: torch.optim.Optimizer) -> _Recorder:
    recorder = _Recorder()
    with recorder:
        optimizer.step()
    return recorder


@pytest.mark.parametrize("name", CAPTURED)
def test_a_captured_step_repeats_its_device_work(name: str, capture: dict[str, bool]) -> None:
    """Two consecutive captured steps dispatch the same ops with the same Python numbers and read nothing back (so a
    graph of one replays the other), and compute what the eager steps of their path compute, bit for bit."""
    params = _model()
    twin = _twin(params)
    optimizer, eager = CAPTURED[name](params, torch.device("cpu")), CAPTURED[name](twin, torch.device("cpu"))
    for seed in range(3):  # eager warm-up: the state exists
        _new_gradients(params, seed)
        _new_gradients(twin, seed)
        optimizer.step()
        eager.step()
    _take_the_captured_path(eager)
    recorded = []
    capture["on"] = True
    for seed in (3, 4):
        _new_gradients(params, seed)
        _new_gradients(twin, seed)
        recorded.append(_recorded_step(optimizer))
        eager.step()
    assert recorded[0].host_transfers() == recorded[1].host_transfers() == [], "a captured step used the host"
    first, second = recorded[0].ops, recorded[1].ops
    assert first == second, next(pair for pair in zip(first, second) if pair[0] != pair[1])
    for p, q in zip(params, twin):
        assert torch.equal(p, q)
        assert all(torch.equal(a, b) for a, b in zip(optimizer.state[p].values(), eager.state[q].values()))


@pytest.mark.parametrize("name", ["AdamW", "Adafactor"])
def test_the_fused_paths_would_replay_one_steps_numbers(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why a capture leaves the fused paths: outside a capture, their consecutive steps differ in the Python numbers
    they hand the kernel (the step size; Adafactor's beta2t and lr), which a graph would freeze (Adafactor's torch-ops
    two-pass path, which CUDA takes for tensors of 64M elements or more: the native CPU kernel is switched off
    here)."""
    monkeypatch.setitem(_native._state, "adafactor", None)
    optimizer = CAPTURED[name](_model(), torch.device("cpu"))
    for _ in range(3):
        optimizer.step()
    first, second = _device_work(_recorded_step(optimizer).ops), _device_work(_recorded_step(optimizer).ops)
    assert len(first) == len(second)
    assert first != second


def _device_work(ops: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """The ops without the host's reads of counters (which a step makes where its host mirror of them is not
    current: under the recording mode, in-place ops on views move no version counter)."""
    return [op for op in ops if op[0] != "aten._local_scalar_dense.default" and not op[0].startswith("host read")]


def test_an_eager_step_after_replays_reads_the_counters_the_replays_advanced(capture: dict[str, bool]) -> None:
    """The host mirror of the step counters (what the fused paths' step sizes come from) cannot see a replay, which
    changes no version counter: once captured, the counters are read from the device at every use, so an eager step
    between replays takes the step size of their count, as an optimizer loaded from the same state does."""
    params = _model()
    optimizer = hf_optim_torch.AdamW(params, lr=1e-2, weight_decay=0.1)  # fused when eager
    optimizer.step()
    optimizer.step()
    steps = [optimizer.state[p]["step"] for p in params]

    def replays(count: int) -> None:  # as far as the counters go: no version counter of theirs changes
        for step in steps:
            step.data.add_(count)

    capture["on"] = True
    optimizer.step()
    capture["on"] = False
    replays(2)
    optimizer.step()  # eager, between replays
    replays(3)
    assert _step_count.host_steps(steps) == [float(step) for step in steps] == [9.0] * len(params)
    twin = _twin(params)
    loaded = hf_optim_torch.AdamW(twin, lr=1e-2, weight_decay=0.1)
    loaded.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    optimizer.step()
    loaded.step()
    for p, q in zip(params, twin):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda ps: hf_optim_torch.AdamW(ps, fused=True), "`fused=True` cannot be captured"),
        (lambda ps: hf_optim_torch.Adafactor(ps, fused=True), "`fused=True` cannot be captured"),
        (
            lambda ps: hf_optim_torch.AdamW(ps, fp32_math=True, stochastic_rounding=True),
            "`stochastic_rounding=True` cannot be captured",
        ),
    ],
)
def test_a_capture_refuses_what_a_replay_would_get_wrong(build: Build, match: str, capture: dict[str, bool]) -> None:
    params = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in _model()]  # (rounding keys: bfloat16)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer = build(params)
    optimizer.step()
    before = copy.deepcopy((params, optimizer.state_dict()))
    capture["on"] = True
    with pytest.raises(ValueError, match=match):
        optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(params, before[0]))
    assert str(optimizer.state_dict()) == str(before[1])


def test_a_capture_refuses_a_tensor_lr_on_another_device(capture: dict[str, bool]) -> None:
    params = _model()
    optimizer = hf_optim_torch.AdamW(params, lr=torch.tensor(1e-2))
    optimizer.step()
    optimizer.param_groups[0]["lr"] = torch.empty((), device="meta")  # (a CPU lr beside CUDA parameters, on CUDA)
    capture["on"] = True
    with pytest.raises(ValueError, match=r"a tensor `lr` must be on the parameters' device .* Received: lr on meta"):
        optimizer.step()


def test_a_capture_needs_every_state_tensor(capture: dict[str, bool]) -> None:
    """State a step would create (a first moment switched on after the warm-up) is refused, not recorded: every
    replay would make it zeros again."""
    params = _model()
    optimizer = hf_optim_torch.Adafactor(params)
    optimizer.step()
    optimizer.param_groups[0]["beta1"] = 0.9
    before = copy.deepcopy(optimizer.state_dict())
    capture["on"] = True
    with pytest.raises(RuntimeError, match=r"parameter 0 has no state\['exp_avg'\] on its device"):
        optimizer.step()
    assert str(optimizer.state_dict()) == str(before)


def test_the_functional_optimizers_refuse_fused_while_capturing(capture: dict[str, bool]) -> None:
    params = _model()
    moments = [[torch.zeros_like(p) for p in params] for _ in range(2)]
    steps = [torch.tensor(1.0) for _ in params]
    capture["on"] = True
    with pytest.raises(ValueError, match="`fused=True` cannot be captured"):
        hf_optim_torch.adamw(
            params, [p.grad for p in params], *moments, steps, fused=True, lr=1e-3, beta1=0.9, beta2=0.999,
            eps=1e-6, weight_decay=0.0, correct_bias=True,
        )  # fmt: skip
    assert [float(s) for s in steps] == [1.0] * len(params)


def test_a_capture_needs_the_state_of_an_eager_step(capture: dict[str, bool]) -> None:
    params = _model()
    optimizer = hf_optim_torch.AdamW(params)
    capture["on"] = True
    with pytest.raises(RuntimeError, match=r"parameter 0 has no state\['step'\] on its device"):
        optimizer.step()
    assert not optimizer.state


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="captures a real CUDA graph: needs a CUDA device (benchmarks/cuda_check.sh runs it on a lent GPU machine)",
)
@pytest.mark.parametrize("name", CAPTURED)
def test_graph_replays_equal_eager_steps(name: str) -> None:
    """torch's recipe: warm-up steps on a side stream, the step captured, then each step a replay after new
    gradients are copied into the captured ones (and, with a tensor lr, a scheduler's in-place update): every
    parameter and state tensor equals that of eager steps on the captured path, bit for bit."""
    device = torch.device("cuda")
    params = _model("cuda")
    twin = _twin(params)
    optimizer, eager = CAPTURED[name](params, device), CAPTURED[name](twin, device)
    schedulers = (  # with a tensor lr (a float one is replayed as captured; Adafactor's relative step has none)
        [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1.0 / (1 + step)) for o in (optimizer, eager)]
        if isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
        else []
    )
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for seed in range(3):
            _new_gradients(params, seed)
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    for seed in range(3):
        _new_gradients(twin, seed)
        eager.step()
    _take_the_captured_path(eager)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        optimizer.step()
    for seed in range(3, 9):
        _new_gradients(params, seed)
        _new_gradients(twin, seed)
        graph.replay()
        eager.step()
        for scheduler in schedulers:
            scheduler.step()
    torch.cuda.synchronize()
    for p, q in zip(params, twin):
        assert torch.equal(p, q)
        assert all(torch.equal(a, b) for a, b in zip(optimizer.state[p].values(), eager.state[q].values()))
