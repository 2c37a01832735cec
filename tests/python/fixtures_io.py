#!/usr/bin/env python3
"""Python-written checkpoints for the C++ io tests (tests/unit/test_io.cpp).

Writes into --out DIR:
  *.pt / *.safetensors     files for C++ to load (torch.save with this torch; safetensors by hand)
  ref/<file>/<name>.bin    the expected tensor bytes (contiguous, little-endian), written with numpy
  ref.json                 for each file: a list of entries {path: [keys...], kind, ...} in key order
                           (dicts list their keys in order; tensors give dtype/shape/bin; scalars value)
"""
import argparse, collections, itertools, json, pathlib, struct

import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
out = pathlib.Path(ap.parse_args().out)
out.mkdir(parents=True, exist_ok=True)
ref = {}


def raw_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: same bits as int16
        t = t.view(torch.int16)
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


_bin_ids = itertools.count()


def describe(file, obj, path=()):
    """Flattens a nested dict into ordered entries (root dict first) and writes tensor bins."""
    entries = [] if path else [{"path": [], "kind": "dict", "keys": list(obj.keys())}]
    for k, v in obj.items():
        p = list(path) + [k]
        key = ".".join(p)
        if isinstance(v, torch.Tensor):
            bin_rel = f"ref/{file}/{next(_bin_ids)}.bin"
            (out / bin_rel).parent.mkdir(parents=True, exist_ok=True)
            (out / bin_rel).write_bytes(raw_bytes(v))
            entries.append({"path": p, "kind": "tensor", "dtype": str(v.dtype).replace("torch.", ""),
                            "shape": list(v.shape), "bin": bin_rel})
        elif isinstance(v, dict):
            entries.append({"path": p, "kind": "dict", "keys": list(v.keys())})
            entries += describe(file, v, p)
        elif isinstance(v, bool):
            entries.append({"path": p, "kind": "bool", "value": v})
        elif isinstance(v, int):
            entries.append({"path": p, "kind": "int", "value": v})
        elif isinstance(v, float):
            entries.append({"path": p, "kind": "float", "value": v})
        elif isinstance(v, str):
            entries.append({"path": p, "kind": "str", "value": v})
        elif v is None:
            entries.append({"path": p, "kind": "none"})
        elif isinstance(v, list) and all(isinstance(x, int) for x in v):
            entries.append({"path": p, "kind": "int_list", "value": v})
        else:
            raise TypeError(f"fixture value {key}: {type(v)}")
    return entries


g = torch.Generator().manual_seed(1234)
def rnd(*shape):
    return torch.randn(*shape, generator=g)


def all_dtypes():
    return {
        "f32": rnd(3, 5),
        "f32_special": torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-40, 3.4e38]),
        "f16": rnd(4, 2).half(),
        "bf16": rnd(2, 3, 2).bfloat16(),
        "f64": rnd(7).double(),
        "i64": torch.tensor([[-(2 ** 62), 2 ** 62 + 5], [0, -1]], dtype=torch.int64),
        "i32": torch.arange(-6, 6, dtype=torch.int32).reshape(3, 4),
        "i16": torch.tensor([-32768, 32767, 5], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0, 3], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "c64": torch.complex(rnd(3), rnd(3)),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def save(name, obj, **kw):
    torch.save(obj, out / name, **kw)
    ref[name] = describe(name, obj)


# 1. every dtype plus plain Python values, nested, with a deliberate non-alphabetical key order
save("dtypes.pt", {
    "zeta": 1,
    "tensors": all_dtypes(),
    "meta": {"name": "vit_base", "n": 3, "big": 2 ** 40, "neg": -7, "neg_big": -(2 ** 33), "u32": 2 ** 31, "i63": 2 ** 63 - 1, "lr": 0.125, "ok": True,
             "off": False, "nothing": None, "grid": [63, 63]},
    "alpha": "last",
})

# 2. the InstinctSAM release layout: {'trunk': dict(state_dict), 'backbone', 'model_name'}
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.backbone = torch.nn.Module()
        self.model.backbone.model = torch.nn.Module()
        bb = self.model.backbone.model
        bb.cls_token = torch.nn.Parameter(rnd(1, 1, 8))
        bb.pos_embed = torch.nn.Parameter(rnd(1, 5, 8))
        bb.patch_embed = torch.nn.Module()
        bb.patch_embed.proj = torch.nn.Conv2d(3, 8, 4, 4)
        bb.blocks = torch.nn.ModuleList([torch.nn.Module() for _ in range(2)])
        for b in bb.blocks:
            b.norm1 = torch.nn.LayerNorm(8, eps=1e-6)
            b.attn = torch.nn.Module()
            b.attn.qkv = torch.nn.Linear(8, 24)
        bb.norm = torch.nn.LayerNorm(8, eps=1e-6)
        self.model.head = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, bias=False),
                                              torch.nn.BatchNorm2d(16), torch.nn.GELU(),
                                              torch.nn.Conv2d(16, 16, 3, padding=1))


tiny = Tiny()
with torch.no_grad():
    for p in tiny.parameters():
        p.copy_(rnd(*p.shape))
    tiny.model.head[1].running_mean.copy_(rnd(16))
    tiny.model.head[1].running_var.copy_(rnd(16).abs() + 0.5)
    tiny.model.head[1].num_batches_tracked.fill_(42)
sd = tiny.state_dict()
save("instinct_like.pt", {"trunk": dict(sd), "backbone": "vit_base", "model_name": "base"})

# 3. tensors sharing one storage (views, offsets, transposes) as Python writes them
base = rnd(6, 4)
save("views.pt", {"base": base, "rows": base[2:5], "col": base[:, 1], "t": base.t(), "flat": base.view(-1)[3:9]})


# 4. as if saved on a GPU machine: storage location 'cuda:0' (rewritten in the pickle, since this
#    machine has no CUDA); C++ must map it to CPU
import io as _io, zipfile
cuda_obj = {"w": rnd(3, 2), "b": rnd(2).bfloat16()}
buf = _io.BytesIO()
torch.save(cuda_obj, buf)
with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out / "cuda_saved.pt", "w", zipfile.ZIP_STORED) as zout:
    for item in zin.infolist():
        data = zin.read(item.filename)
        if item.filename.endswith("/data.pkl"):
            assert data.count(b"X\x03\x00\x00\x00cpu") == 1, data  # memoized after the first use
            data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
        zout.writestr(item.filename, data)
ref["cuda_saved.pt"] = describe("cuda_saved.pt", cuda_obj)

# 5. what LibTorch's own unpickler cannot read but ours does: OrderedDicts (raw model.state_dict()),
#    nn.Parameter, pickle protocol 4; then files C++ must reject with a specific message (no
#    reference values needed)
save("ordered_dict.pt", sd)
save("nested_ordered_dict.pt", {"trunk": sd, "backbone": "vit_base"})
save("empty_ordered_dict.pt", {"a": rnd(2), "b": collections.OrderedDict()})
save("ordered_dict_p4.pt", sd, pickle_protocol=4)
torch.save({"w": rnd(2)}, out / "legacy.pt", _use_new_zipfile_serialization=False)
torch.save({"x": np.float64(1.5)}, out / "numpy_scalar.pt")
save("parameter.pt", {"w": torch.nn.Parameter(rnd(2))})
torch.save([rnd(2), 3], out / "top_level_list.pt")
save("protocol4.pt", {"w": rnd(2, 3), "name": "p4", "n": 4}, pickle_protocol=4)
(out / "not_torch.pt").write_bytes(b"hello, this is not a checkpoint\n")


# 6. safetensors written by hand (the safetensors package is not installed); header keys are in
#    a different order from the data, which is laid out in `order`.
def write_safetensors(path, tensors, order, metadata):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    st_dtype = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                torch.uint8: "U8", torch.bool: "BOOL"}
    layout = {}
    for name in order:
        b = raw_bytes(tensors[name])
        layout[name] = {"dtype": st_dtype[tensors[name].dtype], "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    for name in sorted(tensors):  # header order != data order on purpose
        header[name] = layout[name]
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


st = {k: v for k, v in all_dtypes().items() if k not in ("c64",)}
st_order = ["u8", "f32", "bool", "bf16", "scalar", "i64", "empty", "f16", "i8", "f64", "i32", "i16", "f32_special"]
assert sorted(st_order) == sorted(st)
write_safetensors(out / "weights.safetensors", st, st_order, {"format": "pt", "source": "fixtures_io"})
ref["weights.safetensors"] = describe("weights.safetensors", {k: st[k] for k in st_order})

# 7. SETITEM / APPEND: Python's pickler writes SETITEM (not MARK ... SETITEMS) for a dict with
#    exactly one item and APPEND for a one-element list; the pure-Python pickler (pickle._Pickler)
#    also writes them for a trailing single item after full batches of 1000 (C's _pickle writes
#    another MARK ... SETITEMS batch instead). LibTorch 1.13's unpickler implements neither opcode;
#    ours must.
import pickle, types
py_pickle = types.ModuleType("py_pickle")  # torch.save(pickle_module=...) with the pure-Python pickler
py_pickle.Pickler = pickle._Pickler

many = dict(all_dtypes())
many.update({f"blocks.{i}.attn.qkv.weight": rnd(6, 2) for i in range(12)})
save("single_item.pt", {"model": many})                                      # timm / SAM3 wrapper layout
save("nested_single_item.pt", {"a": 1, "inner": {"only": rnd(3)}, "mid": {"big": 2 ** 40}, "z": "end"})
save("single_in_single.pt", {"outer": {"inner": {"leaf": rnd(2, 2)}}})
save("single_scalar.pt", {"n": -(2 ** 35)})                                 # key then a widened LONG1
big = {f"k{1000 - i:04d}": (rnd(2) if i % 97 == 0 else i - 500) for i in range(1001)}
save("dict1001_py.pt", big, pickle_module=py_pickle)                        # 1000-batch + trailing SETITEM
save("dict1001.pt", big)                                                     # C pickler: two SETITEMS batches
lists = {"one": [7], "one_big": [2 ** 40], "ints": [i * 37 - 18000 for i in range(1000)] + [-(2 ** 40)],
         "t": rnd(2)}
save("lists_py.pt", lists, pickle_module=py_pickle)                           # APPEND (single + trailing)
save("lists.pt", lists)
save("list_in_single.pt", {"grid": [63]}, pickle_module=py_pickle)


def count_ops(name):
    """Opcode names in a saved file's data.pkl, to check that the fixtures exercise what they claim."""
    import pickletools
    with zipfile.ZipFile(out / name) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return collections.Counter(op.name for op, _, _ in pickletools.genops(data))


assert count_ops("single_item.pt")["SETITEM"] == 1
assert count_ops("single_in_single.pt")["SETITEM"] == 3
assert count_ops("dict1001_py.pt")["SETITEM"] == 1 and count_ops("dict1001_py.pt")["SETITEMS"] == 1
assert count_ops("lists_py.pt")["APPEND"] == 3, count_ops("lists_py.pt")
assert count_ops("single_scalar.pt")["LONG1"] == 1

(out / "ref.json").write_text(json.dumps(ref, indent=1))
print(f"fixtures_io: wrote {len(ref)} reference files to {out}")
