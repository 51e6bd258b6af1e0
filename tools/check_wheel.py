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
    return 1 if problems or not expected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
