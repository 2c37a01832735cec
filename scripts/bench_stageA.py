#!/usr/bin/env python3
"""Stage-A training throughput: `instinct-train stageA` (C++) vs an equivalent PyTorch training loop.

  /usr/bin/python3 scripts/bench_stageA.py [--bin build/instinct-train] [--workload tiny|vitb|both]
        [--steps N] [--log-every K] [--threads T] [--repeats R] [--impl both|cpp|python]
        [--work DIR] [--teacher BUNDLE] [--images DIR]

Both sides run the same workload on the same machine and the same Debian torch 1.13:
  - teacher: the bundle's TorchScript trunk.pt (torch.jit.load / torch::jit::load), eval, no grad;
  - student: the same ViT + adapter head (tests/python/ref_vit.py is the independent Python twin
    of src/model/vit.cpp), timm-style init, fp32;
  - loss: w_cos * mean(1 - cos over channels) + w_mse * mean(sum over channels of (s - t)^2);
  - AdamW (betas/eps/wd from the config) with no decay on 1-D params, biases, pos_embed, cls_token;
    global grad-norm clipping; linear warm-up + cosine LR per step (optim.cpp::lr_at); EMA of the
    weights when the config enables it (timm warm-up of the decay);
  - data: the same image folder (last data.eval_images held out), squash resize to the teacher's
    size with antialiased bilinear, [0,1], normalise mean = std = 0.5; Python uses PIL +
    torchvision transforms in a torch DataLoader with data.workers worker processes
    (persistent_workers, shuffle, drop_last); C++ uses its thread-pool loader with data.workers threads;
  - intra-op threads: torch.set_num_threads(T) == instinct `threads=T`; the same environment
    (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS as inherited, shown in the header).
Throughput is the median of the per-window images/s (window = log.every optimizer steps; instinct
writes `images_per_s` per window to metrics.jsonl, the Python loop times its windows the same way)
after dropping the first --skip-windows windows (warm-up: loader start, allocator, JIT profiling).
eval.every = 0 and checkpoint.every = 0, so no evaluation or checkpoint falls inside a window (the
held-out evaluation before step 0 and the final eval/checkpoint happen outside the windows on both
sides). Peak RSS is the child's ru_maxrss from wait4 (C++: the whole trainer, loader threads
included; Python: the main process, plus the largest DataLoader worker reported separately).

Workloads:
  tiny : configs/stageA_tiny_cpu.yaml as is (reference teacher tiny preset, 224 px, ViT width 192,
         depth 4, heads 3, patch 16 -> 14x14 grid resized to 16x16, batch 16, EMA on);
  vitb : same config with a ViT-B/16 student (custom, width 768, depth 12, heads 12, patch 16,
         224 px), batch 8.
Without --teacher / --images the script generates the reference teacher
(scripts/make_reference_teacher.py --seed 0) and 400 synthetic JPEGs (scripts/make_synthetic_images.py
--seed 1 --min-size 160 --max-size 480, like scripts/demo.sh) under --work (default
/tmp/instinct_bench_stageA). Run with Debian's /usr/bin/python3 (torch 1.13, torchvision, PIL, yaml).
"""
import argparse
import copy
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
BASE_CONFIG = ROOT / "configs" / "stageA_tiny_cpu.yaml"

# Overrides (dotted keys) applied on top of configs/stageA_tiny_cpu.yaml, identically for both sides.
WORKLOADS = {
    "tiny": {},
    "vitb": {"student.preset": "custom", "student.img_size": 224, "student.patch": 16, "student.width": 768,
             "student.depth": 12, "student.heads": 12, "student.mlp_ratio": 4.0, "batch_size": 8},
}
DEFAULT_STEPS = {"tiny": 60, "vitb": 16}
DEFAULT_LOG_EVERY = {"tiny": 10, "vitb": 4}


# ------------------------------------------------------------------------------------------------
# Config handling
# ------------------------------------------------------------------------------------------------
def set_dotted(cfg, key, value):
    d = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def effective_config(workload, a):
    import yaml
    cfg = yaml.safe_load(BASE_CONFIG.read_text())
    ov = dict(WORKLOADS[workload])
    ov.update({"teacher.bundle": a.teacher, "data.root": a.images, "threads": a.threads, "device": "cpu",
               "precision": "fp32", "optim.max_steps": a.steps, "eval.every": 0, "checkpoint.every": 0,
               "log.every": a.log_every, "log.progress": "off", "checkpoint.resume": "never"})
    if a.batch:
        ov["batch_size"] = a.batch
    for k, v in ov.items():
        set_dotted(cfg, k, v)
    return cfg, ov


def fmt_override(k, v):
    if isinstance(v, bool):
        v = "true" if v else "false"
    return f"{k}={v}"


# ------------------------------------------------------------------------------------------------
# The Python twin (runs in a child process: --mode python)
# ------------------------------------------------------------------------------------------------
def lr_at(step, total, warmup, peak, warmup_lr, min_lr):
    if step < warmup:
        return warmup_lr + (peak - warmup_lr) * step / max(warmup, 1)
    span = max(total - warmup, 1)
    t = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * t))


def run_python(cfg, run_dir):
    import resource

    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision import transforms

    sys.path.insert(0, str(ROOT / "tests" / "python"))
    import ref_vit

    torch.set_num_threads(int(cfg["threads"]) if int(cfg["threads"]) > 0 else os.cpu_count())
    torch.manual_seed(int(cfg["seed"]))
    t_start = time.perf_counter()

    bundle = pathlib.Path(cfg["teacher"]["bundle"])
    info = json.loads((bundle / "bundle.json").read_text())
    S, C, G = info["image_size"], info["trunk"]["channels"], info["trunk"]["grid"]
    teacher = torch.jit.load(str(bundle / info["modules"]["trunk"]["file"]), map_location="cpu").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    sc = cfg["student"]
    assert sc["preset"] == "custom", "the Python twin takes explicit architecture fields"
    student = ref_vit.StudentTrunk(out_channels=sc.get("out_channels") or C, out_grid=sc.get("out_grid") or G,
                                   width=sc["width"], img_size=sc["img_size"], patch=sc["patch"], depth=sc["depth"],
                                   heads=sc["heads"], mlp_ratio=sc["mlp_ratio"], eps=sc.get("ln_eps", 1e-6))
    # timm init (src/model/vit.cpp::init_timm)
    with torch.no_grad():
        vit = student.model.backbone.model
        vit.pos_embed.normal_(0, 0.02).clamp_(-2, 2)
        vit.cls_token.normal_(0, 1e-6)
        for m in vit.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 0.02).clamp_(-2, 2)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1)
                m.bias.zero_()
    student.train()
    n_params = sum(p.numel() for p in student.parameters())

    # Data: sorted recursive folder, last eval_images held out.
    dc = cfg["data"]
    paths = sorted(str(p) for p in pathlib.Path(dc["root"]).rglob("*") if p.suffix.lower() in EXTS)
    n_eval = int(dc["eval_images"])
    train_paths, eval_paths = paths[:-n_eval], paths[-n_eval:]
    mean, std = info["pixel_mean"], info["pixel_std"]
    assert info.get("resize", "squash") == "squash"
    tf = transforms.Compose([
        transforms.Resize((S, S), interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])

    class Folder(torch.utils.data.Dataset):
        def __init__(self, ps):
            self.ps = ps

        def __len__(self):
            return len(self.ps)

        def __getitem__(self, i):
            with Image.open(self.ps[i]) as im:
                return tf(im.convert("RGB"))

    B = int(cfg["batch_size"])
    workers = int(dc["workers"])
    dl = torch.utils.data.DataLoader(Folder(train_paths), batch_size=B, shuffle=True, num_workers=workers,
                                     drop_last=True, persistent_workers=workers > 0,
                                     generator=torch.Generator().manual_seed(int(cfg["seed"])))

    # Optimiser: two groups (optim.cpp::no_decay).
    oc = cfg["optim"]
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        if p.dim() <= 1 or name.endswith("bias") or name.endswith("pos_embed") or name.endswith("cls_token"):
            no_decay.append(p)
        else:
            decay.append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(oc["weight_decay"])},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=float(oc["warmup_lr"]), betas=(float(oc.get("beta1", 0.9)), float(oc.get("beta2", 0.999))),
                            eps=float(oc.get("eps", 1e-8)))
    accum = max(1, int(oc.get("accum_steps", 1)))
    total_steps = int(oc["max_steps"])
    warmup_steps = int(oc["warmup_steps"])
    peak_lr = float(oc["base_lr"]) * B * accum / float(oc["base_batch"])
    clip = float(oc["grad_clip"])
    lc = cfg["loss"]
    w_cos, w_mse = float(lc["w_cos"]), float(lc["w_mse"])

    ec = cfg.get("ema", {}) or {}
    ema = None
    if ec.get("enabled"):
        ema = copy.deepcopy(student).eval()
        ema_pairs = list(zip(list(student.state_dict().values()), list(ema.state_dict().values())))
        ema_updates = 0

    def student_input(x):
        if student.model.backbone.model.grid * sc["patch"] == S:
            return x
        return F.interpolate(x, size=(sc["img_size"], sc["img_size"]), mode="bilinear", align_corners=False)

    def loss_fn(s, t):
        cos = F.cosine_similarity(s, t, dim=1, eps=1e-8)
        se = (s - t).pow(2).sum(1)
        cos_term, mse_term = (1 - cos).mean(), se.mean()
        return w_cos * cos_term + w_mse * mse_term, cos_term, mse_term, cos.mean().detach()

    # Held-out set: teacher features once, student eval before step 0 and at the end (not timed).
    def teacher_features(x):
        with torch.no_grad():
            o = teacher(x)
            return (o[0] if isinstance(o, tuple) else o).float()

    ev_x = torch.stack([Folder(eval_paths)[i] for i in range(len(eval_paths))])
    ev_t = torch.cat([teacher_features(ev_x[i:i + B]) for i in range(0, len(ev_x), B)]).half()

    def evaluate(m):
        was = m.training
        m.eval()
        tot = 0.0
        with torch.no_grad():
            for i in range(0, len(ev_x), B):
                tot += loss_fn(m(student_input(ev_x[i:i + B])), ev_t[i:i + B].float())[3].item() * len(ev_x[i:i + B])
        m.train(was)
        return tot / len(ev_x)

    cos0 = evaluate(student)
    t_setup = time.perf_counter() - t_start

    # Training loop (mirrors stage_a.cpp: one optimizer step per `accum` micro-batches).
    windows, phase = [], {"load": 0.0, "teacher": 0.0, "fwd_loss": 0.0, "backward": 0.0, "clip": 0.0, "opt": 0.0,
                          "ema": 0.0}
    step, micro, win_images, win_batches = 0, 0, 0, 0
    acc = torch.zeros(4)
    t_loop = time.perf_counter()
    win_t0 = time.perf_counter()
    epoch = 0
    while step < total_steps:
        it = iter(dl)
        while step < total_steps:
            t0 = time.perf_counter()
            try:
                images = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            tfeat = teacher_features(images)
            t2 = time.perf_counter()
            sfeat = student(student_input(images))
            total, cos_term, mse_term, cosine = loss_fn(sfeat, tfeat)
            t3 = time.perf_counter()
            (total / accum).backward()
            t4 = time.perf_counter()
            acc += torch.stack([total.detach(), cos_term.detach(), mse_term.detach(), cosine])
            win_batches += 1
            win_images += images.shape[0]
            phase["load"] += t1 - t0
            phase["teacher"] += t2 - t1
            phase["fwd_loss"] += t3 - t2
            phase["backward"] += t4 - t3
            micro += 1
            if micro < accum:
                continue
            micro = 0
            t5 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(student.parameters(), clip)
            t6 = time.perf_counter()
            lr = lr_at(step, total_steps, warmup_steps, peak_lr, float(oc["warmup_lr"]), float(oc["min_lr"]))
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
            t7 = time.perf_counter()
            if ema is not None:
                with torch.no_grad():
                    d = float(ec.get("decay", 0.9998))
                    if ec.get("warmup", True):
                        d = min(d, 1.0 - (1.0 + ema_updates) ** -0.75)
                    for src, dst in ema_pairs:
                        if dst.dtype.is_floating_point:
                            dst.mul_(d).add_(src.detach(), alpha=1.0 - d)
                        else:
                            dst.copy_(src)
                    ema_updates += 1
            t8 = time.perf_counter()
            phase["clip"] += t6 - t5
            phase["opt"] += t7 - t6
            phase["ema"] += t8 - t7
            step += 1
            if step % max(int(cfg["log"]["every"]), 1) == 0 or step >= total_steps:
                vals = (acc / max(win_batches, 1)).tolist()
                dt = time.perf_counter() - win_t0
                windows.append({"step": step, "loss": vals[0], "cosine": vals[3], "lr": lr,
                                "images_per_s": win_images / dt if dt > 0 else 0.0})
                acc.zero_()
                win_images = win_batches = 0
                win_t0 = time.perf_counter()
        epoch += 1
    t_train = time.perf_counter() - t_loop
    cos1 = evaluate(student)
    if ema is not None:
        evaluate(ema)
    torch.save(student.state_dict(), str(pathlib.Path(run_dir) / "trunk_py.pt"))
    del it, dl  # shuts the persistent workers down so RUSAGE_CHILDREN covers them
    import gc
    gc.collect()
    res = {"windows": windows, "phase_s": phase, "steps": step, "train_s": t_train, "setup_s": t_setup,
           "params": n_params, "cos_before": cos0, "cos_after": cos1,
           "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_worker_max_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
           "threads": torch.get_num_threads()}
    print("BENCH_JSON " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------
def run_child(cmd, env, log_path):
    """Runs cmd, returns (rc, wall seconds, peak RSS MiB of that process alone, stdout)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=str(ROOT))
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        log.write(out)
    return p.returncode, time.perf_counter() - t0, ru.ru_maxrss / 1024, out


def median_after(windows, skip):
    vals = [w["images_per_s"] for w in windows[skip:]] or [w["images_per_s"] for w in windows]
    return statistics.median(vals), len(vals)


def bench_cpp(workload, a, cfg, ov, run_dir, env):
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [a.bin, "stageA", "--config", str(BASE_CONFIG), f"run_dir={run_dir}"] + [fmt_override(k, v) for k, v in ov.items()]
    rc, wall, rss, _ = run_child(cmd, env, run_dir + ".log")
    if rc != 0:
        sys.exit(f"instinct-train failed (rc {rc}); see {run_dir}.log\n  " + " ".join(cmd))
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    windows = [r for r in rows if r.get("split") == "train"]
    ev = [r for r in rows if r.get("split") == "eval"]
    return {"windows": windows, "rss_mib": rss, "wall_s": wall, "cmd": " ".join(cmd),
            "cos_before": ev[0]["cosine"] if ev else None, "cos_after": ev[-1]["cosine"] if ev else None}


def bench_py(workload, a, cfg, run_dir, env):
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = os.path.join(run_dir, "config.json")
    pathlib.Path(cfg_path).write_text(json.dumps(cfg))
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--mode", "python", "--config-json", cfg_path,
           "--run-dir", run_dir]
    rc, wall, rss, out = run_child(cmd, env, run_dir + ".log")
    if rc != 0:
        sys.exit(f"python twin failed (rc {rc}); see {run_dir}.log")
    line = [l for l in out.splitlines() if l.startswith("BENCH_JSON ")][-1]
    r = json.loads(line[len("BENCH_JSON "):])
    r["rss_mib"] = rss
    r["wall_s"] = wall
    r["cmd"] = " ".join(cmd)
    return r


def ensure_inputs(a):
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.teacher is None:
        a.teacher = str(work / "teacher")
        if not (work / "teacher" / "bundle.json").exists():
            subprocess.run([sys.executable, str(HERE / "make_reference_teacher.py"), "--out", a.teacher, "--seed", "0"],
                           check=True)
    if a.images is None:
        a.images = str(work / "images")
        if not (work / "images").exists():
            subprocess.run([sys.executable, str(HERE / "make_synthetic_images.py"), "--out", a.images, "--n", "400",
                            "--seed", "1", "--min-size", "160", "--max-size", "480", "--format", "jpg"], check=True)
    a.teacher = str(pathlib.Path(a.teacher).resolve())
    a.images = str(pathlib.Path(a.images).resolve())


def find_bin():
    for cand in [ROOT / "build-bench" / "instinct-train", ROOT / "build" / "instinct-train"] + sorted(
            ROOT.glob("build*/instinct-train")):
        if cand.exists():
            return str(cand)
    return "instinct-train"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=None, help="instinct-train binary (default: build-bench/ or build/)")
    ap.add_argument("--workload", choices=["tiny", "vitb", "both"], default="both")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: tiny 60, vitb 16)")
    ap.add_argument("--log-every", type=int, default=None, help="steps per timing window (default: tiny 10, vitb 4)")
    ap.add_argument("--skip-windows", type=int, default=1, help="warm-up windows dropped before the median")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads on both sides")
    ap.add_argument("--batch", type=int, default=None, help="override batch_size (default: the workload's)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating C++/Python runs per workload")
    ap.add_argument("--impl", choices=["both", "cpp", "python"], default="both")
    ap.add_argument("--work", default="/tmp/instinct_bench_stageA", help="teacher, images and run dirs")
    ap.add_argument("--teacher", default=None, help="teacher bundle (default: generate the reference teacher)")
    ap.add_argument("--images", default=None, help="image folder (default: generate 400 synthetic JPEGs)")
    ap.add_argument("--json", default=None, help="also write all results to this file")
    ap.add_argument("--mode", default="driver", help=argparse.SUPPRESS)
    ap.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode == "python":
        return run_python(json.loads(pathlib.Path(a.config_json).read_text()), a.run_dir)

    a.bin = str(pathlib.Path(a.bin or find_bin()).resolve())
    ensure_inputs(a)
    env = dict(os.environ)
    load = os.getloadavg()
    print(f"# bench_stageA: bin {a.bin}, threads {a.threads}, cpus {os.cpu_count()}, load {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '-')}, "
          f"OPENBLAS_NUM_THREADS={env.get('OPENBLAS_NUM_THREADS', '-')}", flush=True)
    workloads = ["tiny", "vitb"] if a.workload == "both" else [a.workload]
    results = []
    base_steps, base_log = a.steps, a.log_every
    for w in workloads:
        a.steps = base_steps or DEFAULT_STEPS[w]
        a.log_every = base_log or DEFAULT_LOG_EVERY[w]
        cfg, ov = effective_config(w, a)
        for rep in range(a.repeats):
            for impl in (["cpp", "python"] if a.impl == "both" else [a.impl]):
                run_dir = str(pathlib.Path(a.work) / f"run_{w}_{impl}_{rep}")
                load = os.getloadavg()[0]
                r = bench_cpp(w, a, cfg, ov, run_dir, env) if impl == "cpp" else bench_py(w, a, cfg, run_dir, env)
                med, n = median_after(r["windows"], a.skip_windows)
                B = int(cfg["batch_size"])
                row = {"workload": w, "impl": impl, "rep": rep, "batch": B, "steps": a.steps, "threads": a.threads,
                       "workers": cfg["data"]["workers"], "images_per_s": med, "steps_per_s": med / B,
                       "windows_used": n, "all_windows": [round(x["images_per_s"], 2) for x in r["windows"]],
                       "rss_mib": r["rss_mib"], "rss_worker_max_mib": r.get("rss_worker_max_mib"),
                       "wall_s": r["wall_s"], "load_before": load, "phase_s": r.get("phase_s"),
                       "cos_before": r.get("cos_before"), "cos_after": r.get("cos_after"), "cmd": r["cmd"]}
                results.append(row)
                extra = f" (+ largest worker {row['rss_worker_max_mib']:.0f} MiB)" if impl == "python" else ""
                print(f"{w:5s} {impl:6s} rep {rep}: {med:7.2f} img/s {med / B:6.3f} steps/s  peak RSS "
                      f"{row['rss_mib']:.0f} MiB{extra}  windows {row['all_windows']}  wall {r['wall_s']:.0f}s "
                      f"load {load:.2f}", flush=True)
                if row["phase_s"]:
                    tot = sum(row["phase_s"].values())
                    print("      phases (s, whole loop): " + ", ".join(
                        f"{k} {v:.1f} ({100 * v / tot:.0f}%)" for k, v in row["phase_s"].items()), flush=True)

    print()
    print(f"{'workload':8s} {'impl':7s} {'batch':>5s} {'img/s':>8s} {'steps/s':>8s} {'peak RSS MiB':>22s} {'runs':>4s}")
    for w in workloads:
        meds = {}
        for impl in ("cpp", "python"):
            rs = [r for r in results if r["workload"] == w and r["impl"] == impl]
            if not rs:
                continue
            ips = statistics.median(r["images_per_s"] for r in rs)
            rss = statistics.median(r["rss_mib"] for r in rs)
            meds[impl] = ips
            rss_s = f"{rss:.0f}"
            if impl == "python":
                rss_s += f" + {statistics.median(r['rss_worker_max_mib'] for r in rs):.0f} (worker)"
            print(f"{w:8s} {impl:7s} {rs[0]['batch']:5d} {ips:8.2f} {ips / rs[0]['batch']:8.3f} {rss_s:>22s} {len(rs):4d}")
        if len(meds) == 2:
            print(f"{w:8s} ratio C++/Python images/s: {meds['cpp'] / meds['python']:.2f}x")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
