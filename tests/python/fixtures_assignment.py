#!/usr/bin/env python3
"""scipy.optimize.linear_sum_assignment reference for tests/unit/test_assignment.cpp.

Writes cases.json (per case: name, n, m, maximize, whether the optimum is unique almost surely, and
scipy's total cost, rows and cols) and <name>.f64 (the n x m cost matrix, row-major little-endian
float64, +inf/-inf entries included as IEEE infinities)."""
import argparse
import json
import pathlib

import numpy as np
from scipy.optimize import linear_sum_assignment

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
out = pathlib.Path(ap.parse_args().out)
rng = np.random.default_rng(20160901)

cases = []  # (name, cost, maximize, unique)


def add(name, cost, maximize=False, unique=True):
    cases.append((name, np.ascontiguousarray(cost, dtype=np.float64), maximize, unique))


# Continuous random costs: the optimum is unique with probability 1, so the assignment must match too.
for n, m in [(1, 1), (1, 7), (7, 1), (1, 40), (40, 1), (2, 200), (2, 3), (3, 2), (5, 5), (9, 4), (4, 9), (17, 31),
             (31, 17), (64, 64), (100, 300), (300, 100), (120, 120)]:
    add(f"uniform_{n}x{m}", rng.random((n, m)))
add("normal_scaled_30x45", rng.normal(size=(30, 45)) * 1e4)
add("lognormal_45x30", rng.lognormal(sigma=3.0, size=(45, 30)))
add("negative_25x25", -rng.random((25, 25)) * 100)
add("maximize_20x35", rng.random((20, 35)), maximize=True)
add("maximize_35x20", rng.random((35, 20)), maximize=True)
# Integer costs with many ties: only the total cost is comparable.
for n, m in [(10, 10), (12, 30), (30, 12), (50, 50)]:
    add(f"ties_{n}x{m}", rng.integers(0, 4, size=(n, m)), unique=False)
# Forbidden entries (+inf; -inf when maximising), feasible.
c = rng.random((40, 60))
c[rng.random(c.shape) < 0.5] = np.inf
add("forbidden_40x60", c)
c = rng.random((60, 40))
c[rng.random(c.shape) < 0.5] = np.inf
add("forbidden_60x40", c)
c = rng.random((30, 30))
c[rng.random(c.shape) < 0.6] = -np.inf
add("forbidden_maximize_30x30", c, maximize=True)
c = rng.integers(0, 3, size=(20, 25)).astype(np.float64)
c[rng.random(c.shape) < 0.3] = np.inf
add("forbidden_ties_20x25", c, unique=False)

meta = []
for name, cost, maximize, unique in cases:
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    total = float(cost[rows, cols].sum())
    assert np.isfinite(total), name
    cost.astype("<f8").tofile(out / f"{name}.f64")
    meta.append({"name": name, "n": int(cost.shape[0]), "m": int(cost.shape[1]), "maximize": maximize,
                 "unique": unique, "cost": total, "rows": rows.tolist(), "cols": cols.tolist()})
(out / "cases.json").write_text(json.dumps({"cases": meta}, indent=1))
print(f"assignment fixtures written: {len(meta)} cases")
