#!/usr/bin/env python3
"""Runs every tests/python/fixtures_*.py generator with --out DIR (each writes under DIR/<name>/). A
generator that fails does not stop the others (their tests still run); the run exits non-zero."""
import argparse, pathlib, runpy, sys, traceback

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
args = ap.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
here = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(here))
failed = []
for gen in sorted(here.glob("fixtures_*.py")):
    sub = out / gen.stem[len("fixtures_"):]
    sub.mkdir(parents=True, exist_ok=True)
    print(f"fixtures: {gen.name} -> {sub}", flush=True)
    sys.argv = [str(gen), "--out", str(sub)]
    try:
        runpy.run_path(str(gen), run_name="__main__")
    except BaseException as e:  # SystemExit from argparse / sys.exit included
        if isinstance(e, SystemExit) and not e.code:
            continue
        traceback.print_exc()
        failed.append(gen.name)
if failed:
    sys.exit(f"fixtures: failed: {', '.join(failed)}")
