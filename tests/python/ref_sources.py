"""Locates the field's own code that parity fixtures use as the reference (never copied into the
project): timm ($INSTINCT_TIMM_SRC), pycocotools ($INSTINCT_COCOAPI_SRC, built with cython3 into a
scratch folder on first use) and SAM3 ($SAM3_SRC). `.ci/run` points the variables at ../shared when it
has them. Each locator returns the imported module, or None after recording why it is absent.

A fixture generator that finds its reference absent calls `skip(out_dir, message)`: the C++ test
reads the SKIPPED file and reports GTEST_SKIP with the message. A reference that is present but
broken (a build that fails) raises: that is a red test, not a skip."""
import fcntl
import importlib
import os
import pathlib
import shutil
import subprocess
import sys

SKIP_FILE = "SKIPPED"


def skip(out_dir, message):
    """Marks `out_dir` as skipped: writes SKIPPED with the message and prints it."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SKIP_FILE).write_text(message + "\n")
    print(f"SKIP: {message}", flush=True)


def unskip(out_dir):
    """Removes a stale SKIPPED marker (the reference is present now)."""
    (pathlib.Path(out_dir) / SKIP_FILE).unlink(missing_ok=True)


def _source(var, marker):
    src = os.environ.get(var)
    if not src:
        return None, f"{var} is not set (point it at the reference source; .ci/run does when ../shared has it)"
    if not (pathlib.Path(src) / marker).exists():
        return None, f"{var}={src} does not hold {marker}"
    return pathlib.Path(src).resolve(), None


def timm():
    """Returns (timm module, None) or (None, reason)."""
    src, why = _source("INSTINCT_TIMM_SRC", "timm/__init__.py")
    if src is None:
        return None, why
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    return importlib.import_module("timm"), None


def sam3():
    """Returns (sam3 package source dir, None) or (None, reason). The package is not imported here:
    SAM3 needs shims on Debian's torch 1.13 (scripts/sam3_support.py)."""
    src, why = _source("SAM3_SRC", "sam3/__init__.py")
    if src is None:
        return None, why
    return src, None


def pycocotools(build_root):
    """Builds the real pycocotools from $INSTINCT_COCOAPI_SRC into build_root/cocoapi (once; a lock
    serialises concurrent builders) and returns (pycocotools.mask module, None) or (None, reason)."""
    src, why = _source("INSTINCT_COCOAPI_SRC", "PythonAPI/pycocotools/_mask.pyx")
    if src is None:
        return None, why
    root = pathlib.Path(build_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    dst = root / "cocoapi"
    stamp = dst / ".built_from"
    with open(root / ".cocoapi.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != str(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("build", "*.so", "_mask.c"))
            for p in [dst, *dst.rglob("*")]:  # ../shared is read-only: the build writes into the copy
                p.chmod(p.stat().st_mode | 0o200)
            r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=dst / "PythonAPI",
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"building pycocotools from {src} failed (needs cython3, python3-dev):\n"
                                   + r.stdout[-2000:] + r.stderr[-2000:])
            stamp.write_text(str(src))
    api = str(dst / "PythonAPI")
    if api not in sys.path:
        sys.path.insert(0, api)
    return importlib.import_module("pycocotools.mask"), None
