"""Crafts the hostile inputs of tests/cli/hostile_files.sh into OUT (one file or directory each).

Archives are torch.save-style zips ("<stem>/data.pkl", "<stem>/data/<key>", "<stem>/version") whose
data.pkl is written here opcode by opcode; torch is used only for the valid bases.
usage: hostile_files.py OUT MARKER BUNDLE
  MARKER: a path that exists only if a pickle was executed; BUNDLE: a valid teacher bundle to copy
"""
import json
import os
import pickle
import struct
import sys
import zipfile

import torch

out, marker = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
P = lambda name: os.path.join(out, name)  # noqa: E731


def zip_write(name, records):  # names not starting with "archive/" or "/" go under "archive/"
    with zipfile.ZipFile(P(name), "w", zipfile.ZIP_STORED) as z:
        for rec, data in records:
            z.writestr(rec if rec.startswith(("archive/", "/")) else "archive/" + rec, data)


def archive(name, pkl, storages=(), extra=()):
    zip_write(name, [("data.pkl", pkl), *[(f"data/{k}", d) for k, d in storages], ("version", b"3\n"), *extra])


# ---- pickles, opcode by opcode (protocol 2, as torch.save writes them) ----
def s(text):  # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i(v):  # an int as torch.save writes it
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def tup(*xs):
    return b"(" + b"".join(xs) + b"t"


def tensor(key, numel, offset, size, stride, cls="FloatStorage"):
    storage = tup(s("storage"), b"ctorch\n" + cls.encode() + b"\n", s(key), s("cpu"), i(numel)) + b"Q"
    return (b"ctorch._utils\n_rebuild_tensor_v2\n" +
            tup(storage, i(offset), tup(*map(i, size)), tup(*map(i, stride)), b"\x89", b"ccollections\nOrderedDict\n)R") + b"R")


def state(*items):  # {"w": tensor, ...}
    return b"\x80\x02}(" + b"".join(s(k) + v for k, v in items) + b"u."


f4 = struct.pack("<4f", 1, 2, 3, 4)
archive("layout_ok.pt", state(("w", tensor("0", 4, 0, (4,), (1,)))), [("0", f4)])  # control: accepted


class Call:
    def __reduce__(self):
        return (os.system, (f"touch {marker}",))


archive("global_os_system.pt", pickle.dumps({"x": Call()}, protocol=2))      # GLOBAL posix.system + REDUCE
archive("global_stack.pt", pickle.dumps(Call(), protocol=4))                  # STACK_GLOBAL, top level
archive("global_eval.pt", b"\x80\x02c__builtin__\neval\n" + tup(s(f"open('{marker}','w')")) + b"R.")
archive("storage_huge.pt", state(("w", tensor("0", 2**40, 0, (2**40,), (1,)))), [("0", f4)])
archive("storage_negative.pt", state(("w", tensor("0", -5, 0, (0,), (1,)))), [("0", f4)])
archive("storage_bytes_overflow.pt", state(("w", tensor("0", 2**62, 0, (4,), (1,)))), [("0", f4)])
archive("shape_overflow.pt", state(("w", tensor("0", 4, 0, (2**62, 4), (0, 0)))), [("0", f4)])
archive("size_negative.pt", state(("w", tensor("0", 4, 0, (-1, 4), (4, 1)))), [("0", f4)])
archive("offset_past_end.pt", state(("w", tensor("0", 4, 100, (4,), (1,)))), [("0", f4)])
archive("extent_overflow.pt", state(("w", tensor("0", 4, 0, (2, 2), (2**62, 2**62)))), [("0", f4)])
archive("storage_two_sizes.pt", state(("a", tensor("0", 4, 0, (4,), (1,))), ("b", tensor("0", 2**20, 0, (2**20,), (1,)))),
        [("0", f4)])
archive("storage_missing.pt", state(("w", tensor("7", 4, 0, (4,), (1,)))), [("0", f4)])
archive("deep_nesting.pt", b"\x80\x02" + b"(" * 200000 + b"l" * 200000 + b".")
archive("self_containing.pt", b"\x80\x02]q\x00h\x00a.")
# memo k+1 = (memo k, memo k): 60 levels of sharing expand to 2^60 values
laughs = b"\x80\x02]q\x00K\x00a" + b"".join(b"(h%ch%ctq%c" % (k, k, k + 1) for k in range(60)) + b"."
archive("shared_expansion.pt", laughs)

# zip listings
good = [("data.pkl", state(("w", tensor("0", 4, 0, (4,), (1,))))), ("data/0", f4), ("version", b"3\n")]
zip_write("zip_dotdot.pt", good + [("archive/../../etc/cron.d/x", b"x")])
zip_write("zip_absolute.pt", good + [("/etc/cron.d/x", b"x")])
zip_write("zip_duplicate.pt", good + [("data.pkl", pickle.dumps({"a": 2}, protocol=2))])


def patch_cd_size(name, record, size):  # central directory claims `size` bytes for `record`
    b = bytearray(open(P(name), "rb").read())
    pos = 0
    while True:
        pos = b.index(b"PK\x01\x02", pos)
        n = struct.unpack_from("<H", b, pos + 28)[0]
        if bytes(b[pos + 46:pos + 46 + n]) == record.encode():
            struct.pack_into("<II", b, pos + 20, size, size)
            break
        pos += 4
    open(P(name), "wb").write(bytes(b))


zip_write("zip_size_claim.pt", good)
patch_cd_size("zip_size_claim.pt", "archive/data/0", 0xFFFFFFF0)

# valid torch.save files that are not trunks
torch.save({"a": 1}, P("not_trunk.pt"))
torch.save({"trunk": 1, "backbone": "x"}, P("trunk_not_tensors.pt"))


# ---- safetensors ----
def st(name, header, data=b"", length=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(P(name), "wb") as f:
        f.write(struct.pack("<Q", len(h) if length is None else length) + h + data)


w = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
st("st_ok.safetensors", {"w": w}, bytes(16))  # control: accepted
st("st_header_past_end.safetensors", {"w": w}, bytes(16), length=10**6)
st("st_header_absurd.safetensors", {"w": w}, bytes(16), length=2**63 + 7)
st("st_overlap.safetensors", {"a": w, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, bytes(16))
st("st_out_of_range.safetensors", {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 32]}}, bytes(16))
st("st_byte_count.safetensors", {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, bytes(16))
st("st_shape_overflow.safetensors", {"w": {"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 16]}},
   bytes(16))
st("st_not_object.safetensors", [1, 2], bytes(16))
st("st_duplicate_name.safetensors",  # the same tensor twice: a JSON reader would silently keep the last
   b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
   b'"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}', bytes(16))
st("st_deep_shape.safetensors", b'{"w": {"dtype": "F32", "shape": ' + b"[" * 100000 + b"]" * 100000 +
   b', "data_offsets": [0, 16]}}', bytes(16))

# ---- bundle.json pointing out of its directory ----
fx_bundle = sys.argv[3]
outside = P("outside_secret.pt")
open(outside, "wb").write(b"not a module")
for name, target in (("bundle_symlink_abs", os.path.abspath(outside)), ("bundle_symlink_rel", "../outside_secret.pt")):
    d = P(name)
    os.makedirs(d)
    info = json.load(open(os.path.join(fx_bundle, "bundle.json")))
    for key, m in info["modules"].items():
        src = os.path.join(fx_bundle, m["file"])
        if key == "trunk":
            os.symlink(target, os.path.join(d, m["file"]))
        else:
            os.link(src, os.path.join(d, m["file"])) if os.stat(src).st_dev == os.stat(d).st_dev else \
                open(os.path.join(d, m["file"]), "wb").write(open(src, "rb").read())
    json.dump(info, open(os.path.join(d, "bundle.json"), "w"))


# ---- COCO annotation files ----
def coco(name, images, anns=()):
    json.dump({"images": images, "annotations": list(anns), "categories": [{"id": 1, "name": "thing"}]},
              open(P(name), "w"))


def img(w, h, id=1):
    return {"id": id, "file_name": f"{id}.jpg", "width": w, "height": h}


def ann(seg, id=1):
    return {"id": id, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 0, "segmentation": seg}


coco("coco_ok.json", [img(8, 6)], [ann([[0, 0, 4, 0, 4, 4]])])  # control: loads
coco("coco_huge.json", [img(10**9, 10**9, id=7)])
coco("coco_wrap.json", [img(2**32 + 5, 5, id=8)])
coco("coco_zero.json", [img(0, 5, id=9)])
coco("coco_rle_sum.json", [img(8, 6)], [ann({"size": [6, 8], "counts": [10, 5, 10]})])
coco("coco_polygon_big.json", [img(8, 6)], [ann([[0, 0, 1e300, 0, 4, 4]])])
with open(P("coco_polygon_inf.json"), "w") as f:  # JSON has no inf: 1e999 overflows a double
    f.write('{"images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6}], "categories": [{"id": 1, "name": "t"}],'
            ' "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0,'
            ' "segmentation": [[0, 0, 1e999, 0, 4, 4]]}]}')
with open(P("coco_deep_size.json"), "w") as f:
    f.write('{"images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6}], "categories": [{"id": 1, "name": "t"}],'
            ' "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0,'
            ' "segmentation": {"counts": [48], "size": ' + "[" * 100000 + "]" * 100000 + "}}]}")
json.dump([], open(P("predictions.json"), "w"))
