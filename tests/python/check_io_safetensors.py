#!/usr/bin/env python3
"""Python reads the C++-written safetensors file with a hand-written reader (the safetensors package
is not installed): header layout, alignment, metadata, order, contiguous offsets and every value.
Exit 1 on any mismatch."""
import json, pathlib, struct, sys, tempfile

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from check_io_torch_load import all_dtype_tensors, run_cpp_writer  # noqa: E402

NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.int16, "I64": np.int64,
      "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n], object_pairs_hook=lambda kv: dict(kv))
    data = raw[8 + n:]
    return n, header, data


def decode(entry, data):
    b, e = entry["data_offsets"]
    arr = np.frombuffer(data[b:e], dtype=np.dtype(NP[entry["dtype"]]).newbyteorder("<")).copy()
    t = torch.from_numpy(arr)
    if entry["dtype"] == "BF16":
        t = t.view(torch.bfloat16)
    return t.reshape(entry["shape"])


def main():
    errors = []
    want = {k: v for k, v in all_dtype_tensors().items() if v.dtype != torch.complex64}
    with tempfile.TemporaryDirectory() as tmp:
        run_cpp_writer(tmp)
        n, header, data = read_safetensors(pathlib.Path(tmp) / "cpp_weights.safetensors")
    if n % 8:
        errors.append(f"header length {n} is not a multiple of 8")
    meta = header.pop("__metadata__", None)
    if meta != {"format": "pt", "writer": "instinct"}:
        errors.append(f"__metadata__ {meta!r}")
    if list(header) != list(want):
        errors.append(f"header order {list(header)} != {list(want)}")
    end = 0
    for name, entry in header.items():
        if entry["data_offsets"][0] != end:
            errors.append(f"{name}: data_offsets {entry['data_offsets']} do not follow previous end {end}")
        end = entry["data_offsets"][1]
        if name not in want:
            errors.append(f"{name}: unexpected tensor")
            continue
        got, w = decode(entry, data), want[name]
        if got.dtype != w.dtype or got.shape != w.shape or not torch.equal(got, w.contiguous()):
            errors.append(f"{name}: {entry['dtype']}{entry['shape']} {got} != {w}")
    if end != len(data):
        errors.append(f"data section is {len(data)} bytes, offsets cover {end}")
    if errors:
        print("check_io_safetensors: mismatches:\n" + "\n".join("  " + e for e in errors))
        return 1
    print(f"check_io_safetensors: OK ({len(header)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
