#!/usr/bin/env python3
"""Python reads what the C++ io layer writes: runs the gtest writer (IoPythonInterop.WriteFilesForPython)
into a temp dir, then torch.load(..., weights_only=True) each archive and compares every value with
the same object rebuilt here from the formulas in tests/unit/test_io.cpp. Exit 1 on any mismatch.

torch 1.13's weights_only unpickler lacks the BINFLOAT opcode (Python floats; Python-written files
fail the same way), so on 1.x the file holding floats is accepted failing with exactly that error,
then loaded with weights_only=False after checking its pickle references only the globals that
weights_only allows; the float-free copy must load with weights_only=True everywhere."""
import os, pathlib, pickletools, re, subprocess, sys, tempfile

import torch

WRITER = "IoPythonInterop.WriteFilesForPython"


def run_cpp_writer(out_dir):
    exe = pathlib.Path(os.environ.get("INSTINCT_BIN_DIR", "build")) / "tests" / "instinct_tests"
    if not exe.exists():
        sys.exit(f"check_io: gtest binary {exe} not found (set INSTINCT_BIN_DIR)")
    env = dict(os.environ, INSTINCT_IO_OUT=str(out_dir))
    r = subprocess.run([str(exe), f"--gtest_filter={WRITER}"], env=env, capture_output=True, text=True)
    if r.returncode != 0 or "[  PASSED  ] 1 test" not in r.stdout:
        sys.exit(f"check_io: {exe} --gtest_filter={WRITER} failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}")


def all_dtype_tensors():
    """Mirror of all_dtype_tensors() in test_io.cpp (insertion order matters)."""
    return {
        "f32": torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1,
        "f16": (torch.arange(6, dtype=torch.float32) * 0.25).half().reshape(2, 3),
        "bf16": (torch.arange(6, dtype=torch.float32) * 0.5 - 1).bfloat16(),
        "f64": torch.arange(5, dtype=torch.float64) / 3,
        "i64": torch.tensor([-(1 << 62), 1 << 62, 7], dtype=torch.int64),
        "i32": torch.arange(-3, 3, dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767, 5], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.arange(5) % 2 == 0,
        "c64": torch.complex(torch.arange(4, dtype=torch.float32), torch.arange(4, dtype=torch.float32) * -0.5),
        "noncontig": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
        "slice": torch.arange(1000, dtype=torch.float32)[10:15],
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros(0, 4),
    }


def expected_nested():
    """Mirror of python_interop_object() in test_io.cpp."""
    tensors = all_dtype_tensors()
    tensors["shared_a"] = torch.arange(8, dtype=torch.float32)
    tensors["shared_b"] = torch.arange(8, dtype=torch.float32).view(2, 4)
    tensors["grad"] = torch.ones(3)
    return {
        "zz_first": 1, "tensors": tensors, "name": "vit_base", "step": 6000, "big": 1 << 40,
        "lr": 1e-4, "ok": True, "nothing": None, "grid": [63, 63], "scales": [0.5, 2.0],
        "flags": [True, False], "tensor_list": [torch.ones(2), torch.zeros(1, dtype=torch.int64)],
        "pair": ("a", 1), "mixed": [1, "two", [3.0]], "empty_dict": {}, "a_last": "end",
    }


def expected_nested_no_floats():
    d = expected_nested()
    for k in ("lr", "scales", "mixed"):
        del d[k]
    return d


# What torch.load(weights_only=True) allows (torch 1.13 and 2.x), as module.name.
SAFE_GLOBAL = re.compile(r"^(torch\._utils\._rebuild_tensor_v2|collections\.OrderedDict|torch\.\w+Storage)$")


def pickle_globals(path):
    import zipfile
    with zipfile.ZipFile(path) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(pkl) if op.name == "GLOBAL"}


def load_weights_only(c, path, name, floats):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not (floats and torch.__version__.startswith("1.") and "Unsupported operand 71" in str(e)):
            c.err(name, f"torch.load(weights_only=True) failed: {type(e).__name__}: {str(e)[-300:]}")
            return None
    unsafe = sorted(g for g in pickle_globals(path) if not SAFE_GLOBAL.match(g))
    if unsafe:
        c.err(name, f"pickle references globals weights_only rejects: {unsafe}")
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def expected_instinct_like():
    return {
        "trunk": {
            "model.backbone.model.cls_token": torch.arange(8, dtype=torch.float32).reshape(1, 1, 8) / 8,
            "model.backbone.model.pos_embed": torch.arange(40, dtype=torch.float32).reshape(1, 5, 8) - 20,
            "model.backbone.model.blocks.0.attn.qkv.weight": torch.arange(192, dtype=torch.float32).reshape(24, 8) * 0.01,
            "model.head.1.running_mean": torch.arange(16, dtype=torch.float32) * 0.25,
            "model.head.1.num_batches_tracked": torch.tensor(42, dtype=torch.int64),
        },
        "backbone": "vit_base", "model_name": "base",
    }


def storage_nbytes(t):
    return t.untyped_storage().nbytes() if hasattr(t, "untyped_storage") else t.storage().nbytes()


class Checker:
    def __init__(self):
        self.errors = []
        self.tensors = []

    def err(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def same(self, got, want, where):
        if isinstance(want, torch.Tensor):
            if not isinstance(got, torch.Tensor):
                return self.err(where, f"expected tensor, got {type(got).__name__}")
            if got.dtype != want.dtype or got.shape != want.shape:
                return self.err(where, f"dtype/shape {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}")
            if not torch.equal(got, want):
                return self.err(where, f"values differ: {got} vs {want}")
            if got.requires_grad:
                self.err(where, "requires_grad is set")
            if not got.is_contiguous() or got.storage_offset() != 0:
                self.err(where, "not contiguous at offset 0")
            if storage_nbytes(got) != got.numel() * got.element_size():
                self.err(where, f"storage holds {storage_nbytes(got)} bytes for a {got.numel()}-element tensor")
            self.tensors.append((where, got))
        elif isinstance(want, dict):
            if type(got) is not dict:
                return self.err(where, f"expected plain dict, got {type(got).__name__}")
            if list(got.keys()) != list(want.keys()):
                return self.err(where, f"keys/order {list(got.keys())} != {list(want.keys())}")
            for k in want:
                self.same(got[k], want[k], f"{where}.{k}")
        elif isinstance(want, (list, tuple)):
            if type(got) is not type(want) or len(got) != len(want):
                return self.err(where, f"expected {type(want).__name__} of {len(want)}, got {type(got).__name__} {got!r}")
            for i, (g, w) in enumerate(zip(got, want)):
                self.same(g, w, f"{where}[{i}]")
        elif type(got) is not type(want) or got != want:
            self.err(where, f"{got!r} ({type(got).__name__}) != {want!r} ({type(want).__name__})")

    def no_shared_storage(self):
        ptrs = {}
        for where, t in self.tensors:
            if t.numel() == 0:
                continue
            p = t.data_ptr()
            if p in ptrs:
                self.err(where, f"shares storage with {ptrs[p]}")
            ptrs[p] = where


def main():
    c = Checker()
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        run_cpp_writer(out)
        files = [("cpp_nested.pt", expected_nested(), True),
                 ("cpp_nested_no_floats.pt", expected_nested_no_floats(), False),
                 ("cpp_instinct_like.pt", expected_instinct_like(), False),
                 ("cpp_instinct_like_zip64.pt", expected_instinct_like(), False)]
        for name, want, floats in files:
            got = load_weights_only(c, out / name, name, floats)
            if got is not None:
                c.same(got, want, name)
        c.no_shared_storage()
    if c.errors:
        print(f"check_io_torch_load: {len(c.errors)} mismatches (torch {torch.__version__}):")
        print("\n".join("  " + e for e in c.errors))
        return 1
    print(f"check_io_torch_load: OK ({len(c.tensors)} tensors, torch {torch.__version__}, weights_only=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
