"""Smoke test of one installed wheel, run by ``nox -s build`` inside a fresh virtual environment.

    python tools/smoke_wheel.py spec|torch|tf

Imports the package from site-packages (never from this checkout: the script refuses to run if the import resolves
to the source tree), then takes real steps: the spec package evaluates a schedule from its shipped JSON, the torch
package steps AdamW and Adafactor under a schedule, the Keras package fits a tiny model with ``create_optimizer``
and steps AdamW and Adafactor on the backend that ``KERAS_BACKEND`` selects. Prints one line per check.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _installed(module: object) -> str:
    location = Path(module.__file__).resolve()  # type: ignore[attr-defined]
    if CHECKOUT in location.parents and "site-packages" not in location.parts:
        raise SystemExit(f"{module.__name__} was imported from the checkout ({location}), not from the wheel")  # type: ignore[attr-defined]
    return str(location.parent)


def spec() -> None:
    import hf_optim_spec as hs
    import numpy as np
    from hf_optim_spec import reference

    print("hf_optim_spec from", _installed(hs))
    specs = hs.registry()
    assert {"adamw", "adafactor", "cosine", "greedy"} <= set(specs), sorted(specs)
    adamw = hs.get("adamw").raw
    case = adamw["cases"][0]
    got, want = reference.run_case(adamw, case)["params"], case["expected"]["params"]
    assert np.allclose(_flat(got), _flat(want), rtol=1e-12, atol=0), "the float64 AdamW reference drifted"
    print(f"  {len(specs)} spec files shipped; the AdamW reference reproduces its first case")


def _flat(tree: object) -> list[float]:
    if isinstance(tree, Mapping):
        return [x for key in sorted(tree) for x in _flat(tree[key])]
    if isinstance(tree, Sequence) and not isinstance(tree, str):
        return [x for item in tree for x in _flat(item)]
    return [float(tree)]  # type: ignore[arg-type]


def torch_package() -> None:
    import hf_optim_torch as ht
    import torch

    print("hf_optim_torch from", _installed(ht), "with torch", torch.__version__)
    for make in (
        lambda p: ht.AdamW(p, lr=1e-2, weight_decay=0.01),
        lambda p: ht.Adafactor(p, lr=1e-2, relative_step=False, scale_parameter=False),
    ):
        param = torch.nn.Parameter(torch.ones(4, 3))
        optimizer = make([param])
        scheduler = ht.get_scheduler("linear", optimizer, num_warmup_steps=1, num_training_steps=5)
        for _ in range(3):
            param.grad = torch.full_like(param, 0.5)
            optimizer.step()
            scheduler.step()
        assert torch.isfinite(param).all() and not torch.equal(param, torch.ones(4, 3)), param
        print(f"  {type(optimizer).__name__}: 3 steps, parameter moved to {param[0, 0].item():.6f}")


def tf_package() -> None:
    import hf_optim_tf as hk
    import keras
    import numpy as np

    print("hf_optim_tf from", _installed(hk), "with keras", keras.__version__, "on", keras.backend.backend())
    optimizer, _ = hk.create_optimizer(init_lr=1e-2, num_train_steps=10, num_warmup_steps=2, weight_decay_rate=0.01)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert int(optimizer.iterations.numpy() if hasattr(optimizer.iterations, "numpy") else optimizer.iterations) == 4
    print(
        f"  create_optimizer + fit: 4 steps, loss {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}"
    )
    for optimizer in (hk.AdamW(learning_rate=1e-2), hk.Adafactor(learning_rate=None)):
        variable = keras.Variable(np.ones((4, 3), "float32"))
        optimizer.apply_gradients([(keras.ops.full((4, 3), 0.5), variable)])
        moved = float(keras.ops.convert_to_numpy(variable)[0, 0])
        assert moved != 1.0 and np.isfinite(moved), moved
        print(f"  {type(optimizer).__name__}: one step, variable moved to {moved:.6f}")


if __name__ == "__main__":
    {"spec": spec, "torch": torch_package, "tf": tf_package}[sys.argv[1]]()
