#!/usr/bin/env python3
"""Loader throughput: our C++ loader (instinct-bench loader) vs a torchvision/PIL DataLoader.

  bench_loader.py [--images DIR] [--size 1008] [--workers 2] [--batch 8] [--batches 25] [--bin PATH]

Both run the same workload: every image under DIR (recursive), shuffled, decoded, squash-resized to
SxS with antialiased bilinear, scaled to [0,1] and normalised with mean = std = 0.5, batched.
torchvision side: PIL decode + transforms.Resize((S,S), antialias=True) + ToTensor + Normalize in a
torch.utils.data.DataLoader with the same number of worker processes. Each side runs in its own
subprocess; images/s counts from loader construction to the last batch. Peak RSS: ours is one
process; for the DataLoader the main process and the largest worker are reported separately (their
sum is an upper bound: batches live in shared memory counted by both).
Without --images, 200 synthetic 640x480 JPEGs are generated under /tmp/instinct_bench_images.
Run with Debian's /usr/bin/python3 (torch, torchvision, PIL).
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


def run_torch(a):
    import torch
    from PIL import Image
    from torchvision import transforms

    t0 = time.perf_counter()
    paths = sorted(str(p) for p in pathlib.Path(a.images).rglob("*") if p.suffix.lower() in EXTS)
    tf = transforms.Compose([
        transforms.Resize((a.size, a.size), interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),
    ])

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            with Image.open(paths[i]) as im:
                return tf(im.convert("RGB"))

    dl = torch.utils.data.DataLoader(Folder(), batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                     drop_last=False, generator=torch.Generator().manual_seed(0))
    n = first_n = b = 0
    t_first = None
    while b < a.batches:
        for x in dl:
            n += x.shape[0]
            b += 1
            if b == 1:
                t_first, first_n = time.perf_counter(), n
            if b == a.batches:
                break
    t1 = time.perf_counter()
    del dl
    import gc
    gc.collect()
    print(json.dumps({
        "images": n, "seconds": t1 - t0, "images_per_s": n / (t1 - t0),
        "images_per_s_after_first": (n - first_n) / (t1 - t_first) if a.batches > 1 else None,
        "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_max_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def run_ours(a):
    cmd = [a.bin, "loader", "--images", a.images, "--size", str(a.size), "--workers", str(a.workers),
           "--batch", str(a.batch), "--batches", str(a.batches)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    kv = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return {
        "images": int(kv["images"]), "seconds": float(kv["seconds"]), "images_per_s": float(kv["images/s"]),
        "images_per_s_after_first": float(kv.get("images/s (after first batch)", "nan")),
        "rss_mib": float(kv["peak RSS MiB"]), "cmd": " ".join(cmd),
    }


def find_bin():
    root = HERE.parent
    for cand in sorted(root.glob("build*/instinct-bench")) + [root / "build" / "instinct-bench"]:
        if cand.exists():
            return str(cand)
    return "instinct-bench"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=None)
    ap.add_argument("--size", type=int, default=1008)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=25)
    ap.add_argument("--bin", default=None, help="instinct-bench binary (default: <repo>/build*/instinct-bench)")
    ap.add_argument("--mode", choices=["compare", "torch"], default="compare", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.images is None:
        a.images = "/tmp/instinct_bench_images"
        if not pathlib.Path(a.images).exists():
            subprocess.run([sys.executable, str(HERE / "make_synthetic_images.py"), "--out", a.images, "--n", "200",
                            "--seed", "0", "--width", "640", "--height", "480", "--format", "jpg"], check=True)
    if a.mode == "torch":
        return run_torch(a)
    a.bin = a.bin or find_bin()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t = subprocess.run([sys.executable, __file__, "--mode", "torch", "--images", a.images, "--size", str(a.size),
                        "--workers", str(a.workers), "--batch", str(a.batch), "--batches", str(a.batches)],
                       check=True, capture_output=True, text=True, env=env)
    torch_r = json.loads(t.stdout.strip().splitlines()[-1])
    ours = run_ours(a)
    print(f"workload: {a.images}, size {a.size}, {a.workers} workers, batch {a.batch}, {a.batches} batches")
    print(f"ours      : {ours['images_per_s']:8.2f} images/s ({ours['images_per_s_after_first']:.2f} after the "
          f"first batch), peak RSS {ours['rss_mib']:.0f} MiB")
    print(f"torchvision: {torch_r['images_per_s']:8.2f} images/s ({torch_r['images_per_s_after_first']:.2f} after "
          f"the first batch), peak RSS main {torch_r['rss_main_mib']:.0f} MiB + largest worker "
          f"{torch_r['rss_worker_max_mib']:.0f} MiB (x{a.workers} workers)")
    print(f"ratio ours/torchvision: {ours['images_per_s'] / torch_r['images_per_s']:.2f}x "
          f"({ours['images_per_s_after_first'] / torch_r['images_per_s_after_first']:.2f}x after the first batch)")


if __name__ == "__main__":
    main()
