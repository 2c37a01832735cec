#!/usr/bin/env python3
"""CLI smoke test of `instinct-bench loader` on the data fixtures (images/s line, epochs wrap,
missing folder is a one-line error naming it)."""
import os
import pathlib
import subprocess
import sys

binary = pathlib.Path(os.environ["INSTINCT_BIN_DIR"]) / "instinct-bench"
if not binary.exists():
    sys.exit(f"FAIL: {binary} was not built")
images = pathlib.Path(os.environ["INSTINCT_FIXTURES"]) / "data" / "images"
out = subprocess.run([str(binary), "loader", "--images", str(images), "--size", "64", "--workers", "2",
                      "--batch", "4", "--batches", "10"], capture_output=True, text=True, timeout=120)
assert out.returncode == 0, out.stderr
kv = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
assert int(kv["images"]) == 38, out.stdout  # 30 images: 8 batches (last has 2), then 2 more of epoch 1
assert float(kv["images/s"]) > 0 and float(kv["peak RSS MiB"]) > 0, out.stdout
bad = subprocess.run([str(binary), "loader", "--images", "/no/such/dir_abc"], capture_output=True, text=True)
# a user error like every tool's: exit 2, one line "instinct-bench: error: ..." naming the folder
assert bad.returncode == 2 and bad.stderr.startswith("instinct-bench: error: ") and "/no/such/dir_abc" in bad.stderr \
    and bad.stderr.count("\n") == 1, (bad.returncode, bad.stderr)
print("ok:", kv["images/s"], "images/s")
