#!/usr/bin/env python3
"""Seed corpora for the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp).

  make_corpus.py --out DIR [--fixtures build/fixtures] [--root REPO]

Writes DIR/<harness>/<seed> for every harness: small files taken from the test fixtures
(tests/python/make_fixtures.py) when --fixtures exists, the repository's configs, and seeds made
here (torch.save archives when torch imports, safetensors / COCO / results / bundle.json / images
written directly), so the corpora exist on a fresh checkout too. Deterministic; nothing large
(files over 64 KiB are skipped).
"""
import argparse, hashlib, io, json, pathlib, struct, zipfile

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--fixtures", default="")
ap.add_argument("--root", default=str(pathlib.Path(__file__).resolve().parents[2]))
args = ap.parse_args()
out = pathlib.Path(args.out)
fx = pathlib.Path(args.fixtures) if args.fixtures else None
root = pathlib.Path(args.root)
MAX = 64 << 10
counts = {}


def seed(harness, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX:
        return
    d = out / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    counts[harness] = counts.get(harness, 0) + 1


def fixtures(pattern):
    if not fx or not fx.is_dir():
        return []
    return sorted(p for p in fx.glob(pattern) if p.is_file() and p.stat().st_size <= MAX)


# ---- torch.save archives and their data.pkl ----
def archive_seeds(blob):
    """A .pt file -> seeds for fuzz_torch_archive ('Z' + file; records form) and fuzz_pickle."""
    seed("fuzz_torch_archive", b"Z" + blob)
    try:
        z = zipfile.ZipFile(io.BytesIO(blob))
        names = z.namelist()
    except Exception:
        return
    pkl = [n for n in names if n.endswith("/data.pkl")]
    if not pkl:
        return
    prefix = pkl[0][: -len("data.pkl")]
    data_pkl = z.read(pkl[0])
    seed("fuzz_pickle", data_pkl)
    keys = sorted((n[len(prefix) + 5:] for n in names if n.startswith(prefix + "data/")),
                  key=lambda k: (len(k), k))
    # The harness names storage records data/0, data/1, ... in order; torch.save uses the same keys.
    if keys == [str(i) for i in range(len(keys))]:
        seed("fuzz_torch_archive", b"R" + b"\n@@@@\n".join([data_pkl] + [z.read(prefix + "data/" + k) for k in keys]))


for p in fixtures("io/*.pt") + fixtures("**/*.pt"):
    archive_seeds(p.read_bytes())
try:
    import collections, torch
    small = {
        "dict": {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": 3, "s": "x", "f": 0.5,
                 "b": True, "none": None, "l": [1, 2, 3], "t": (1, "y")},
        "ordered": collections.OrderedDict(w=torch.ones(2, 2, dtype=torch.float16), b=torch.zeros(3, dtype=torch.int64)),
        "views": (lambda base: {"base": base, "row": base[1], "col": base[:, 1], "t": base.t()})(torch.arange(12.).reshape(3, 4)),
        "param": {"p": torch.nn.Parameter(torch.ones(3))},
        "nested": {"trunk": {"x": torch.ones(1, dtype=torch.bfloat16)}, "step": 12, "big": 2 ** 40, "neg": -5},
        "dtypes": {str(dt): torch.zeros(2, dtype=dt) for dt in
                   (torch.float64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64)},
        "empty": {"e": torch.zeros(0, 3)},
    }
    for name, obj in small.items():
        for proto in (2, 4, 5):
            buf = io.BytesIO()
            torch.save(obj, buf, pickle_protocol=proto)
            archive_seeds(buf.getvalue())
except ImportError:
    pass
seed("fuzz_pickle", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(K\x02G?\xe0\x00\x00\x00\x00\x00\x00e\x89u.")
seed("fuzz_pickle", b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.")
seed("fuzz_pickle", b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.")

# ---- safetensors ----
def safetensors(tensors, meta=None, pad=True):
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


for p in fixtures("**/*.safetensors"):
    seed("fuzz_safetensors", p.read_bytes())
seed("fuzz_safetensors", safetensors({"w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                      "b": ("I64", [1], struct.pack("<q", 7))}, {"format": "pt"}))
seed("fuzz_safetensors", safetensors({"h": ("F16", [3], b"\0" * 6), "z": ("BOOL", [0, 4], b""),
                                      "c": ("C64", [1], b"\0" * 8), "u": ("U8", [], b"\x05")}, pad=False))
seed("fuzz_safetensors", safetensors({}, {}))

# ---- COCO instances ----
for p in fixtures("sam3_ref/cgf1/*_gt.json"):
    seed("fuzz_coco", p.read_bytes())
coco = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 15},
               {"id": 2, "file_name": "b.jpg", "width": 7, "height": 9}],
    "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "ring"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 5], "area": 30,
         "segmentation": [[2, 2, 8, 2, 8, 7, 2, 7], [10.5, 3.5, 14.5, 3.5, 12.5, 9.5]]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 4], "iscrowd": 1,
         "segmentation": {"size": [15, 20], "counts": [5, 10, 50, 20, 215]}},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [1, 1, 3, 3],
         "segmentation": {"size": [9, 7], "counts": ":343T1"}},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 2]]},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 2], "segmentation": [[-3, -1e3, 40, 2, 5, 90]]},
    ]}
seed("fuzz_coco", json.dumps(coco))
seed("fuzz_coco", json.dumps({"images": [{"id": 3, "file_name": "c.jpg", "width": 4, "height": 4}],
                              "categories": [], "annotations": []}))

# ---- results files (against fuzz_predictions.cpp's fixed dataset; first byte = named spec) ----
for p in fixtures("sam3_ref/cgf1/*_pred.json"):
    seed("fuzz_predictions", b"\0" + p.read_bytes())
rows = [
    {"image_id": 1, "prompt": "box", "annotation_id": 10, "score": 0.9,
     "segmentation": {"size": [6, 8], "counts": "0`1"}},
    {"image_id": 1, "prompt": "point", "segmentation": {"size": [6, 8], "counts": [3, 4, 41]}},
    {"image_id": 2, "prompt": "concept", "category_id": 3, "score": 0.7, "model": "student",
     "segmentation": {"size": [9, 5], "counts": "5X1"}},
    {"image_id": 2, "prompt": "concept", "category_id": 1, "score": 0.2, "model": "teacher",
     "mask": [[0, 0, 3, 0, 3, 4]]},
    {"image_id": 7, "prompt": "box", "category_id": None, "annotation_id": None,
     "segmentation": [[0, 0, 1, 0, 1, 1, 0, 1]]},
]
seed("fuzz_predictions", b"\1" + json.dumps(rows).encode())
seed("fuzz_predictions", b"\0" + json.dumps({"rows": rows[:2]}).encode())

# ---- bundle.json ----
for p in fixtures("teacher/*/bundle.json"):
    seed("fuzz_bundle", p.read_bytes())
bundle = {"format": "instinct-teacher-bundle", "version": 2, "name": "fuzz", "image_size": 224, "resize": "squash",
          "pixel_mean": [0.5, 0.5, 0.5], "pixel_std": [0.5, 0.5, 0.5],
          "trunk": {"channels": 128, "grid": 16, "patch": 14}, "neck_channels": 64, "num_queries": 20,
          "mask_size": 64, "prompt_length": 8, "concepts": ["cat", "dog"],
          "sam_head": {"mask_tokens": 4, "stability_delta": 0.05, "stability_thresh": 0.98, "mask_threshold": 0,
                       "fill_hole_area": 256, "padding_point": "appended"},
          "tokenizer": {"type": "clip_bpe", "file": "bpe.txt.gz", "sha256": "0" * 64, "context_length": 8},
          "modules": {k: {"file": k + ".pt", "sha256": "a" * 64} for k in
                      ("trunk", "detector_neck", "interactive_neck", "grounding", "sam_head", "concept_bank")}}
bundle["modules"]["trunk"]["format"] = "instinct-trunk"
seed("fuzz_bundle", json.dumps(bundle))

# ---- YAML config + overrides (fuzz_config.cpp: YAML, a line "@@", one override per line) ----
for p in sorted((root / "configs").glob("*.yaml")):
    seed("fuzz_config", p.read_bytes())
seed("fuzz_config", "annotations: a.json\nprotocol:\n  n_images: 3\n  point: interior\n@@\n"
                    "protocol.cgf1=true\nstudents=[a=b.pt, c.pt]\nprompts=[box]\noutput=\nprotocol.min_area=2.5e1")
seed("fuzz_config", "@@\nbatch_size=x\nprotocol=1")

# ---- images ----
for pattern in ("data/images/*.jpg", "data/bad/*", "data/ppm/*", "data/images/**/*.png"):
    for p in fixtures(pattern)[:12]:
        seed("fuzz_image", p.read_bytes())
seed("fuzz_image", b"P6\n# c\n3 2\n255\n" + bytes(range(18)))
seed("fuzz_image", b"P6 1 1 255 \xff\x00\x7f")
try:
    from PIL import Image
    im = Image.new("RGB", (9, 7))
    for x in range(9):
        for y in range(7):
            im.putpixel((x, y), (x * 28, y * 36, (x * y) % 256))
    for fmt, kw in (("JPEG", {"quality": 50}), ("PNG", {}), ("BMP", {}), ("WEBP", {"quality": 50})):
        for mode in ("RGB", "L", "RGBA", "P"):
            if fmt == "JPEG" and mode in ("RGBA", "P"):
                continue
            buf = io.BytesIO()
            try:
                im.convert(mode).save(buf, fmt, **kw)
            except (OSError, KeyError, ValueError):
                continue
            seed("fuzz_image", buf.getvalue())
except ImportError:
    pass

print("make_corpus: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
