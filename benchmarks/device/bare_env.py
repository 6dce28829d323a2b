"""Makes a Python environment that holds only what a lent GPU machine is promised to have, for the dry run.

    python benchmarks/device/bare_env.py /tmp/bare      # then: PYTHON=/tmp/bare/bin/python bash benchmarks/device/run.sh --dry-run

The machine has torch, triton, numpy, scipy, pytest, pytest-benchmark and pybind11 (with what they require) and
nothing else: no open_clip, PIL, tqdm, torchvision or DALI. This builds a venv of the running interpreter whose
site-packages holds symbolic links to exactly those distributions of the running environment and their
requirements, so an import that would fail there fails here too, as "No module named ...", and
importlib.util.find_spec answers None as it would there. Nothing is copied or downloaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
from collections import defaultdict
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DEVICE_PACKAGES = ("torch", "triton", "numpy", "scipy", "pytest", "pytest-benchmark", "pybind11")


def _installed() -> dict[str, metadata.Distribution]:
    found = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name not in found:  # the first on sys.path wins, as for imports
            found[name] = dist
    return found


def requirement_closure(names, installed: dict[str, metadata.Distribution]) -> list[metadata.Distribution]:
    """The installed distributions `names` need (extras and environment markers honoured), themselves included.
    A requirement that is not installed here is left out: the device machine may lack it too."""
    wanted: dict[str, set[str]] = {}
    queue = [(canonicalize_name(name), frozenset()) for name in names]
    while queue:
        name, extras = queue.pop()
        if name not in installed or (name in wanted and extras <= wanted[name]):
            continue
        wanted.setdefault(name, set()).update(extras)
        for text in installed[name].requires or ():
            requirement = Requirement(text)
            markers_hold = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in {"", *wanted[name]}
            )
            if markers_hold:
                queue.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return [installed[name] for name in sorted(wanted)]


def _files(dist: metadata.Distribution) -> list[PurePosixPath]:
    """Paths of the distribution's files relative to its site-packages (scripts in ../bin are left out)."""
    return [PurePosixPath(str(f)) for f in dist.files or () if not str(f).startswith("..")]


def link_distributions(chosen, installed: dict[str, metadata.Distribution], target: Path) -> int:
    """Link each chosen distribution's files into `target` at the shallowest folder no other installed
    distribution shares (torch/ whole; nvidia/cu13/lib/ file by file, since every CUDA wheel writes there).
    Returns the number of links made."""
    owners: dict[PurePosixPath, set[str]] = defaultdict(set)
    for name, dist in installed.items():
        for path in _files(dist):
            for depth in range(1, len(path.parts) + 1):
                owners[PurePosixPath(*path.parts[:depth])].add(name)
    links = 0
    for dist in chosen:
        name = canonicalize_name(dist.metadata["Name"])
        root = Path(dist.locate_file(""))
        for path in _files(dist):
            depth = next(d for d in range(1, len(path.parts) + 1)
                         if owners[PurePosixPath(*path.parts[:d])] == {name} or d == len(path.parts))
            unit = PurePosixPath(*path.parts[:depth])
            link = target / unit
            if link.is_symlink() or not (root / unit).exists():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(root / unit)
            links += 1
    return links


def make_bare_env(folder: Path) -> Path:
    """Create the environment in `folder` and return its python."""
    folder = Path(folder)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)})
    installed = _installed()
    chosen = requirement_closure(DEVICE_PACKAGES, installed)
    link_distributions(chosen, installed, Path(purelib))
    return folder / "bin" / "python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to create the environment (must not exist)")
    args = parser.parse_args()
    if args.folder.exists():
        raise SystemExit(f"bare_env.py: {args.folder} exists; give a new folder")
    python = make_bare_env(args.folder)
    names = ", ".join(canonicalize_name(d.metadata["Name"]) for d in requirement_closure(DEVICE_PACKAGES, _installed()))
    print(f"{python} holds: {names}")
    missing = [name for name in DEVICE_PACKAGES if canonicalize_name(name) not in _installed()]
    if missing:
        print(f"not installed here, so absent there too: {', '.join(missing)}", file=sys.stderr)


if __name__ == "__main__":
    main()
