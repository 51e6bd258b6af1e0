"""Check built distributions: hf-optim-spec must ship every spec file as package data (``nox -s build``)."""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(outdir: str) -> int:
    expected = sorted(str(p.relative_to(ROOT / "spec")) for p in (ROOT / "spec").glob("*/*.json"))
    wheels = list(Path(outdir).glob("hf_optim_spec-*.whl"))
    sdists = list(Path(outdir).glob("hf_optim_spec-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist of hf-optim-spec in {outdir}, found {wheels + sdists}")
        return 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        shipped = sorted(n.removeprefix("hf_optim_spec/_data/") for n in wheel.namelist() if "/_data/" in n)
    with tarfile.open(sdists[0]) as sdist:
        in_sdist = sorted(n.split("/spec/", 1)[1] for n in sdist.getnames() if "/spec/" in n and n.endswith(".json"))
    problems = [f"wheel lacks {name}" for name in expected if name not in shipped]
    problems += [f"sdist lacks {name}" for name in expected if name not in in_sdist]
    for problem in problems:
        print(problem)
    print(f"{len(expected)} spec files; wheel ships {len(shipped)}, sdist ships {len(in_sdist)}")
    legal = _legal_problems(Path(outdir))
    for problem in legal:
        print(problem)
    return 1 if problems or legal or not expected else 0


def _legal_problems(outdir: Path) -> list[str]:
    """Every wheel and sdist carries the root LICENSE and NOTICE, byte for byte."""
    wanted = {name: (ROOT / name).read_bytes() for name in ("LICENSE", "NOTICE")}
    problems = []
    for dist in sorted(outdir.glob("hf_optim_*")):
        if dist.suffix == ".whl":
            with zipfile.ZipFile(dist) as wheel:
                found = {Path(n).name: wheel.read(n) for n in wheel.namelist() if ".dist-info/licenses/" in n}
        else:
            with tarfile.open(dist) as sdist:
                found = {}
                for member in sdist.getmembers():
                    if member.name.count("/") == 1 and Path(member.name).name in wanted:
                        handle = sdist.extractfile(member)
                        found[Path(member.name).name] = handle.read() if handle else b""
        for name, content in wanted.items():
            if found.get(name) != content:
                problems.append(f"{dist.name}: {name} {'differs from the root one' if name in found else 'missing'}")
    print(f"LICENSE and NOTICE checked in {len(list(outdir.glob('hf_optim_*')))} distributions")
    return problems


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
