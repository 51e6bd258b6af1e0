"""The ``hf-optim`` command line: generic over the registry, checked against the float64 reference."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys

import hf_optim_spec as hs
import pytest
from hf_optim_spec import _registry, cli, is_schedule_ref
from hf_optim_spec._schedules import bind
from hf_optim_spec._vectors import schedule_case_expected

SPECS = hs.registry()
SCHEDULES = [s for s in SPECS.values() if s.kind == "schedule"]


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        code = cli.main(list(args), out=out)
    finally:
        sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def flags(params) -> list[str]:
    args = []
    for name, value in params.items():
        args += [f"--{name}", cli.show_value(value)]
    return args


def case_args(spec, case) -> list[str]:
    args = [spec.id, *flags(case.get("params", {}))]
    if spec.stateful:
        args += ["--metrics", ",".join(repr(float(m)) for m in case["metrics"])]
    if "base_lr" in case:
        args += ["--base-lr", repr(float(case["base_lr"]))]
    return args


def read_csv(text: str) -> tuple[list[str], list[list[float]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [[float(x) for x in row] for row in rows[1:]]


# --------------------------------------------------------------------------- list / show


def test_list_names_every_spec_with_its_summary():
    code, out, _ = run("list")
    assert code == 0
    for spec in SPECS.values():
        assert spec.id in out
        assert spec.display_name in out
        assert spec.summary in out


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=lambda s: s.id)
def test_show_prints_every_parameter_default_and_variant(spec):
    code, out, _ = run("show", spec.id)
    assert code == 0
    for name in spec.hf_name:
        assert name in out
    for param in spec.parameters.values():
        assert f"--{param.name}" in out
        assert f"default {cli.default_text(param)}" in out
    for name in spec.variants:
        assert f"--variant {name}" in out
    for ref in spec.references:
        assert ref["url"] in out


# --------------------------------------------------------------------------- plot


def _plottable_cases():
    for spec in SCHEDULES:
        for case in spec.cases[:3]:
            yield pytest.param(spec, case, id=f"{spec.id}::{case['description']}")


@pytest.mark.parametrize(("spec", "case"), list(_plottable_cases()))
def test_plot_csv_gives_the_float64_reference(spec, case):
    code, out, err = run("plot", *case_args(spec, case), "--steps", str(max(case.get("steps", [1])) or 1), "--csv")
    assert code == 0, err
    header, rows = read_csv(out)
    assert len(header) == 2
    if spec.stateful:
        expected = schedule_case_expected(spec.id, case)
        assert [row[1] for row in rows] == expected
        return
    base_lr = float(case.get("base_lr", 1.0))
    params = dict(case.get("params", {}))
    bound = bind(spec, params, base_lr=base_lr)
    scale = base_lr if (spec.output == "factor" and "base_lr" in case) else 1.0
    steps = [int(row[0]) for row in rows]
    horizon = max(case["steps"]) or 1
    assert steps[0] == 0 and steps[-1] == horizon
    if horizon < cli.MAX_POINTS:
        assert steps == list(range(horizon + 1))
    for step, row in zip(steps, rows):
        want, got = scale * bound(step), row[1]
        assert got == want or (math.isnan(got) and math.isnan(want)), (step, got, want)


def test_a_comma_list_sweeps_a_parameter_and_labels_each_curve():
    spec, case, name = next(
        (s, c, n)
        for s in SCHEDULES
        if not s.stateful
        for c in s.cases
        for n, p in s.parameters.items()
        if p.type == "number" and not p.required and n not in c.get("params", {}) and p.default is not None
    )
    default = float(spec.parameters[name].default)
    values = [default, default * 0.5]
    args = [*case_args(spec, case), f"--{name}", ",".join(repr(v) for v in values), "--csv"]
    code, out, err = run("plot", *args)
    assert code == 0, err
    header, rows = read_csv(out)
    assert header[1:] == [f"{spec.id} ({name}={cli.show_value(v)})" for v in values]
    base_lr = float(case.get("base_lr", 1.0))
    scale = base_lr if (spec.output == "factor" and "base_lr" in case) else 1.0
    for column, value in enumerate(values, start=1):
        bound = bind(spec, {**case.get("params", {}), name: value}, base_lr=base_lr)
        assert [row[column] for row in rows] == [scale * bound(int(row[0])) for row in rows]


def test_several_ids_share_one_figure_and_one_csv():
    groups = [(s, c) for s in SCHEDULES if not s.stateful for c in s.cases[:1]][:3]
    args = []
    for spec, case in groups:
        args += [spec.id, *flags(case.get("params", {}))]
    code, out, err = run("plot", *args, "--steps", "12", "--csv")
    assert code == 0, err
    header, rows = read_csv(out)
    assert [h.split(" ")[0] for h in header[1:]] == [s.id for s, _ in groups]
    assert [row[0] for row in rows] == list(range(13))


@pytest.mark.parametrize("spec", SCHEDULES, ids=lambda s: s.id)
def test_every_schedule_renders_a_png_through_the_cli(spec, tmp_path):
    pytest.importorskip("matplotlib")
    case = spec.cases[0]
    target = tmp_path / f"{spec.id}.png"
    code, _, err = run("plot", *case_args(spec, case), "-o", str(target))
    assert code == 0, err
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert b"Software" not in data
    assert cli_plot_hash(target).startswith("hf-optim-plot sha256:")


def cli_plot_hash(path):
    from hf_optim_spec._plot import png_description

    return png_description(path)


def test_the_same_figure_renders_to_the_same_bytes(tmp_path):
    pytest.importorskip("matplotlib")
    from hf_optim_spec._plot import Panel, Series, data_hash, png_description, render

    panel = Panel([Series("a", [0, 1, 2], [0.0, 0.5, 1.0]), Series("b", [0, 1, 2], [1.0, 0.5, 0.25])], ylabel="lr")
    first, second = tmp_path / "1.png", tmp_path / "2.png"
    hashes = [render([panel], first, title="t"), render([panel], second, title="t")]
    assert first.read_bytes() == second.read_bytes()
    assert hashes[0] == hashes[1] == png_description(first)
    changed = Panel([Series("a", [0, 1, 2], [0.0, 0.5, 0.9])], ylabel="lr")
    assert data_hash([changed]) != data_hash([panel])


# --------------------------------------------------------------------------- errors


def test_an_unknown_id_names_the_closest_ids():
    spec = SCHEDULES[0]
    code, _, err = run("plot", spec.id[:-1] + "x")
    assert code == 2
    assert "Unknown spec id" in err
    assert spec.id in err


def test_an_unknown_parameter_names_the_closest_parameters():
    spec, name = next((s, n) for s in SCHEDULES for n in s.parameters if len(n) >= 8)
    code, _, err = run("plot", spec.id, f"--{name[:-1]}", "1", "--csv")
    assert code == 2
    assert f"Did you mean: --{name}" in err
    for other in spec.parameters:
        assert f"--{other}" in err


def test_an_unknown_command_names_the_closest_command():
    code, _, err = run("plott")
    assert code == 2
    assert "Did you mean: plot?" in err


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("integer", "abc", "expected an integer"),
        ("integer", "2.5", "expected an integer"),
        ("number", "fast", "expected a number"),
        ("boolean", "maybe", "expected true or false"),
    ],
)
def test_values_are_parsed_by_the_parameter_type(kind, text, expected):
    spec, param = next((s, p) for s in SCHEDULES for p in s.parameters.values() if p.type == kind)
    code, _, err = run("plot", spec.id, f"--{param.name}", text, "--csv")
    assert code == 2
    assert f"argument --{param.name}: {expected}" in err


def test_a_missing_required_parameter_shows_an_example_from_the_spec():
    spec = next(s for s in SCHEDULES if any(p.required for p in s.parameters.values()) and s.cases)
    code, _, err = run("plot", spec.id, "--csv")
    assert code == 2
    assert "Missing required argument" in err
    assert f"Example: hf-optim plot {spec.id}" in err


def test_the_spec_message_is_shown_for_an_out_of_range_value():
    spec, param = next(
        (s, p) for s in SCHEDULES for p in s.parameters.values() if p.type == "integer" and p.minimum is not None
    )
    code, _, err = run("plot", spec.id, f"--{param.name}", str(int(param.minimum) - 1), "--csv")
    assert code == 2
    assert f"Argument `{param.name}` must be >= {int(param.minimum)}" in err


def test_an_optimizer_has_no_curve():
    optimizer = next((s for s in SPECS.values() if s.kind != "schedule"), None)
    if optimizer is None:
        pytest.skip("no optimizer spec in the registry yet")
    code, _, err = run("plot", optimizer.id, "--csv")
    assert code == 2
    assert "not a schedule" in err


def test_parameter_values_round_trip_through_show_value():
    for spec in SPECS.values():
        for case in spec.cases:
            for name, value in case.get("params", {}).items():
                if name not in spec.parameters or is_schedule_ref(value):
                    continue
                param = spec.parameters[name]
                parsed = cli.parse_value(param, cli.show_value(value))
                if param.type in ("number_pair", "string_list"):
                    assert list(parsed) == list(value)
                elif param.type == "number_or_list" and isinstance(value, (list, tuple)):
                    # a one-entry list (one param group) is shown, and typed, as its number
                    assert (parsed if isinstance(parsed, list) else [parsed]) == list(value)
                else:
                    assert parsed == value


# --------------------------------------------------------------------------- explain (a toy spec)


def toy_schedule(spec_id: str, hf_name: list[str], summary: str, **fields) -> dict:
    """A factor schedule spec written in the test (no file in spec/)."""
    return {"id": spec_id, "kind": "schedule", "hf_name": hf_name, "summary": summary, "output": "factor", **fields}


TOY = toy_schedule(
    "toy_cosine",
    ["get_toy_schedule", "SchedulerType.TOY"],
    "warmup then a cosine that rebounds",
    parameters={
        "num_warmup_steps": {"type": "integer", "minimum": 0, "description": "w"},
        "num_training_steps": {"type": "integer", "minimum": 0, "description": "t"},
        "min_lr_rate": {"type": "number", "default": 0.0, "description": "floor"},
        "shape": {"type": "string", "default": "cosine", "description": "s"},
        "clamp": {"type": "boolean", "default": False, "extension": True, "description": "c"},
    },
    constraints=[
        {
            "when": "shape != 'cosine' and shape != 'flat'",
            "error": "ValueError",
            "message": "bad shape {shape}",
            "hf_enforced": True,
        },
    ],
    variants={"clamped": {"description": "holds the end value", "params": {"clamp": True}}},
    expression={
        "values": {
            "progress": "(step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)",
            "p": "min(progress, 1.0) if clamp else progress",
            "wave": "0.5 * (1.0 + cos(pi * p)) if shape == 'cosine' else 1.0",
        },
        "result": "step / max(1, num_warmup_steps) if step < num_warmup_steps else min_lr_rate + (1 - min_lr_rate) * wave",
    },
    cases=[{"description": "d", "params": {"num_warmup_steps": 2, "num_training_steps": 10}, "steps": [0]}],
)
PLAIN = toy_schedule(
    "toy_plain",
    ["get_plain_schedule", "SchedulerType.PLAIN"],
    "warmup then constant",
    parameters={"num_warmup_steps": {"type": "integer", "minimum": 0, "description": "w"}},
    expression={"values": {}, "result": "step / max(1, num_warmup_steps) if step < num_warmup_steps else 1.0"},
)


@pytest.fixture
def toy_registry(tmp_path, monkeypatch):
    folder = tmp_path / "schedules"
    folder.mkdir()
    for spec in (TOY, PLAIN):
        (folder / f"{spec['id']}.json").write_text(json.dumps(spec))
    monkeypatch.setattr(_registry, "spec_root", lambda: tmp_path)
    _registry.registry.cache_clear()
    yield
    _registry.registry.cache_clear()


def explain(*args: str) -> str:
    code, out, err = run("explain", *args)
    assert code == 0, err
    return out


def phase_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("steps ")]


def test_explain_finds_the_phase_boundaries(toy_registry):
    w, t = 7, 40
    out = explain("toy_cosine", "--num_warmup_steps", str(w), "--num_training_steps", str(t), "--clamp", "true")
    lines = phase_lines(out)
    # warmup, cosine up to t, then the clamp holds (min() switches arguments at t)
    assert [line.split()[1] for line in lines] == [f"0-{w - 1}", f"{w}-{t}", f"{t + 1}-{math.ceil(t * 1.25)}"]
    assert lines[0].endswith(f"step < {w}")
    assert f"step >= {w}" in lines[1]


def test_explain_warns_about_a_rebound_past_the_end_and_names_the_variant(toy_registry):
    out = explain("toy_cosine", "--num_warmup_steps", "5", "--num_training_steps", "50")
    assert "rises again after num_training_steps=50" in out
    assert "`clamped` variant (--clamp true)" in out
    clamped = explain("toy_cosine", "--num_warmup_steps", "5", "--num_training_steps", "50", "--variant", "clamped")
    assert "rises again" not in clamped


def test_explain_warns_when_the_warmup_outlasts_training(toy_registry):
    out = explain("toy_cosine", "--num_warmup_steps", "50", "--num_training_steps", "50")
    assert "num_warmup_steps=50 >= num_training_steps=50" in out
    assert ">= num_training_steps" not in explain(
        "toy_cosine", "--num_warmup_steps", "49", "--num_training_steps", "50"
    )


def test_explain_warns_when_the_minimum_is_not_below_the_peak(toy_registry):
    base = ["toy_cosine", "--num_warmup_steps", "5", "--num_training_steps", "50", "--min_lr_rate"]
    assert "the minimum is not below the peak (min_lr_rate=1)" in explain(*base, "1.0")
    assert "the minimum is not below the peak" not in explain(*base, "0.5")


def test_explain_warns_about_a_parameter_that_changes_nothing(toy_registry):
    base = ["toy_cosine", "--num_warmup_steps", "5", "--num_training_steps", "50"]
    # with a flat wave the floor, and with no rebound the clamp, change nothing
    out = explain(*base, "--shape", "flat", "--min_lr_rate", "0.2")
    assert "--min_lr_rate 0.2 is ignored" in out
    assert "--shape flat is ignored" not in out
    assert "is ignored" not in explain(*base, "--min_lr_rate", "0.2")


def test_explain_reports_a_get_scheduler_argument_the_schedule_drops(toy_registry):
    out = explain("toy_plain", "--num_warmup_steps", "3", "--num_training_steps", "100")
    assert "`num_training_steps` is not a parameter of get_plain_schedule" in out
    code, _, err = run("plot", "toy_plain", "--num_warmup_steps", "3", "--num_training_steps", "100", "--csv")
    assert code == 2 and "unknown parameter --num_training_steps" in err


def test_explain_on_the_real_registry_runs_for_every_first_case():
    for spec in SCHEDULES:
        if not spec.cases:
            continue
        out = explain(*case_args(spec, spec.cases[0]))
        assert spec.id in out
        assert "phases:" in out


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "hf_optim_spec", "list"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert all(spec.id in result.stdout for spec in SPECS.values())
