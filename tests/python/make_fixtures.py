#!/usr/bin/env python3
"""Runs every tests/python/fixtures_*.py generator with --out DIR (each writes under DIR/<name>/)."""
import argparse, pathlib, runpy, sys

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
args = ap.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
here = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(here))
for gen in sorted(here.glob("fixtures_*.py")):
    sub = out / gen.stem[len("fixtures_"):]
    sub.mkdir(parents=True, exist_ok=True)
    print(f"fixtures: {gen.name} -> {sub}", flush=True)
    sys.argv = [str(gen), "--out", str(sub)]
    runpy.run_path(str(gen), run_name="__main__")
