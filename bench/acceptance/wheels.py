"""The wheels that travel to the GPU machine, and whether lokaal-bench's imports work there.

The GPU machine (Python 3.12, x86-64, no package index) has torch, transformers and most of what
lokaal-bench needs, but not pydantic, jsonschema or cryptography. Those and their own needs travel as
cp312 manylinux wheels in `.whl/` (`scripts/fetch_gpu_wheels.sh` downloads them where PyPI is
reachable) and are installed there with `pip install --no-index --no-deps --target`.

    python -m bench.acceptance.wheels --requirements     # name==version lines, for the fetch script
    python -m bench.acceptance.wheels --plan DIR          # does that folder hold exactly what is needed?
    python -m bench.acceptance.wheels --check ROOT        # do the imports work, within pyproject's caps?

Standard library only (packaging where present): this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import re
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The versions this project is tested with on the build machines; one version of each, or the
# install stops. typing-extensions travels too: pydantic 2.13 needs a newer one than torch does.
WHEELS: dict[str, str] = {
    "pydantic": "2.13.4",
    "pydantic-core": "2.46.4",
    "annotated-types": "0.7.0",
    "typing-inspection": "0.4.2",
    "typing-extensions": "4.16.0",
    "jsonschema": "4.26.0",
    "jsonschema-specifications": "2025.9.1",
    "attrs": "26.1.0",
    "referencing": "0.37.0",
    "rpds-py": "0.30.0",
    "cryptography": "48.0.0",
    "cffi": "2.0.0",
    "pycparser": "3.0",
}
# What the GPU machine must import, with the distribution that provides each (for its version).
MODULES: dict[str, str] = {
    "pydantic": "pydantic", "pydantic_core": "pydantic-core", "jsonschema": "jsonschema",
    "referencing": "referencing", "rpds": "rpds-py", "attrs": "attrs",
    "cryptography.hazmat.primitives.asymmetric.ed25519": "cryptography", "_cffi_backend": "cffi",
    "torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
    "numpy": "numpy", "psutil": "psutil", "pynvml": "nvidia-ml-py", "yaml": "PyYAML", "rich": "rich",
    "scipy": "scipy", "pandas": "pandas", "matplotlib": "matplotlib", "pytest": "pytest",
    "hypothesis": "hypothesis",
}
TARGET_PYTHON = (3, 12)
CARRY_LIMIT_BYTES = 64 * 2**20  # the whole working tree travels within this
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?-(?P<python>[^-]+)-(?P<abi>[^-]+)"
                    r"-(?P<platform>[^-]+)\.whl$")


def canonical(name: str) -> str:
    """PEP 503 name: 'Pydantic_Core' and 'pydantic-core' are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    file: str
    name: str
    version: str
    python: str
    abi: str
    platform: str
    bytes: int
    problem: str | None  # why it will not install on the GPU machine, else None


def _python_ok(python: str, abi: str) -> bool:
    major, minor = TARGET_PYTHON
    for tag in python.split("."):
        if tag in ("py3", f"py{major}{minor}", f"cp{major}{minor}"):
            return True
        # A stable-ABI wheel built for an older CPython 3 loads on newer ones.
        if abi == "abi3" and (m := re.fullmatch(r"cp3(\d+)", tag)) and int(m.group(1)) <= minor:
            return True
    return False


def _platform_problem(platform: str) -> str | None:
    tags = platform.split(".")
    if "any" in tags or any(t.startswith("manylinux") and t.endswith("_x86_64") for t in tags):
        return None
    return f"platform {platform} is not manylinux x86-64"


def glibc_needed(platform: str) -> tuple[int, int] | None:
    """The oldest glibc among a wheel's manylinux tags (None for a pure wheel)."""
    found = []
    for tag in platform.split("."):
        if m := re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", tag):
            found.append((int(m.group(1)), int(m.group(2))))
        elif tag == "manylinux2014_x86_64":
            found.append((2, 17))
        elif tag == "manylinux2010_x86_64":
            found.append((2, 12))
        elif tag == "manylinux1_x86_64":
            found.append((2, 5))
    return min(found) if found else None


def parse_wheel(path: Path) -> Wheel | None:
    """A wheel's name, version and tags from its file name (PEP 427), and whether it fits cp312 x86-64."""
    match = _WHEEL.match(path.name)
    if not match:
        return None
    parts = match.groupdict()
    problem = None
    if not _python_ok(parts["python"], parts["abi"]) or parts["abi"] not in ("none", "abi3", "cp312"):
        problem = f"built for {parts['python']}-{parts['abi']}, not CPython 3.12"
    problem = problem or _platform_problem(parts["platform"])
    if problem is None and not zipfile.is_zipfile(path):
        problem = "not a zip archive (a broken download?)"
    return Wheel(path.name, canonical(parts["name"]), parts["version"], parts["python"], parts["abi"],
                 parts["platform"], path.stat().st_size, problem)


def plan(folder: Path) -> dict[str, Any]:
    """What `pip install --no-index --no-deps` of the folder would install, and every reason it would
    not do what the GPU machine needs: a missing, duplicated, unexpected or unfit wheel."""
    folder = Path(folder)
    out: dict[str, Any] = {"folder": str(folder), "present": folder.is_dir(), "wheels": [], "problems": [],
                           "missing": [], "total_bytes": 0}
    if not folder.is_dir():
        out["missing"] = sorted(WHEELS)
        out["problems"].append(f"no wheels folder {folder}: run scripts/fetch_gpu_wheels.sh where PyPI is "
                               "reachable, then carry it")
        out["ok"] = False
        return out
    wheels = [w for p in sorted(folder.glob("*.whl")) if (w := parse_wheel(p))]
    out["wheels"] = [asdict(w) for w in wheels]
    out["total_bytes"] = sum(w.bytes for w in wheels)
    by_name: dict[str, list[Wheel]] = {}
    for wheel in wheels:
        by_name.setdefault(wheel.name, []).append(wheel)
    for name, found in sorted(by_name.items()):
        if len(found) > 1:
            out["problems"].append(f"{name}: {len(found)} wheels ({', '.join(w.version for w in found)}); "
                                   "two versions stop the whole install")
        for wheel in found:
            if wheel.problem:
                out["problems"].append(f"{wheel.file}: {wheel.problem}")
            elif name in WHEELS and wheel.version != WHEELS[name]:
                out["problems"].append(f"{wheel.file}: version {wheel.version}, expected {WHEELS[name]}")
        if name not in WHEELS:
            out["problems"].append(f"{name}: not in the list of wheels the GPU machine needs (bench/acceptance/"
                                   "wheels.py); remove it or add it there")
    out["missing"] = sorted(set(WHEELS) - set(by_name))
    if out["missing"]:
        out["problems"].append(f"missing wheels: {', '.join(out['missing'])}")
    if out["total_bytes"] > CARRY_LIMIT_BYTES // 2:
        out["problems"].append(f"{out['total_bytes'] / 2**20:.1f} MiB of wheels: more than half of the "
                               f"{CARRY_LIMIT_BYTES // 2**20} MiB the working tree may carry")
    needs = [g for w in wheels if (g := glibc_needed(w.platform))]
    out["glibc_needed"] = ".".join(map(str, max(needs))) if needs else None
    out["ok"] = not out["problems"]
    return out


def install_command(folder: Path, target: Path, python: str = sys.executable) -> list[str]:
    """pip with no index at all: a missing wheel is an error, never a download."""
    return [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
            "--upgrade", "--target", str(target), *sorted(str(p) for p in Path(folder).glob("*.whl"))]


def _requirements(root: Path) -> list[str]:
    """The project's dependency specifiers from pyproject.toml ([] where tomllib is missing: 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        return []
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"]["dependencies"])


def _glibc() -> tuple[int, int] | None:
    import platform

    name, version = platform.libc_ver()
    parts = version.split(".")
    return (int(parts[0]), int(parts[1])) if name == "glibc" and len(parts) >= 2 else None


def check(root: Path) -> dict[str, Any]:
    """Import every module lokaal-bench needs and hold each installed version against pyproject's
    specifier (torch <2.14, transformers <5.20 ...): pip never resolved anything here, so this does."""
    modules: dict[str, Any] = {}
    for module, dist in MODULES.items():
        try:
            loaded = importlib.import_module(module)
            # Where it came from: the carried site, or the machine's own packages.
            modules[module] = {"ok": True, "version": _version(dist), "file": getattr(loaded, "__file__", None)}
        except Exception as exc:  # a missing wheel, or one built for another platform
            modules[module] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    requirements = []
    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None  # type: ignore[assignment,misc]
    for spec in _requirements(root):
        if Requirement is None:
            requirements.append({"requirement": spec, "ok": None, "installed": None, "note": "packaging missing"})
            continue
        requirement = Requirement(spec)
        installed = _version(requirement.name)
        ok = installed is not None and requirement.specifier.contains(installed, prereleases=True)
        requirements.append({"requirement": spec, "installed": installed, "ok": ok})
    glibc = _glibc()
    failed = [m for m, r in modules.items() if not r["ok"]] + [r["requirement"] for r in requirements
                                                                if r["ok"] is False]
    return {"python": sys.version.split()[0], "executable": sys.executable,
            "glibc": ".".join(map(str, glibc)) if glibc else None,
            "modules": modules, "requirements": requirements, "failed": failed, "ok": not failed}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.acceptance.wheels")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--requirements", action="store_true", help="print name==version, one a line")
    group.add_argument("--plan", metavar="DIR", help="check a folder of wheels (JSON)")
    group.add_argument("--check", metavar="ROOT", help="check the imports and pyproject's specifiers (JSON)")
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(f"{name}=={version}" for name, version in WHEELS.items()))
        return 0
    result = plan(Path(args.plan)) if args.plan else check(Path(args.check))
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
