#!/usr/bin/env python3
"""Training curves of instinct-train runs (Stage A, concept, or both) in one PNG.

  /usr/bin/python3 scripts/plot_runs.py RUN_DIR [RUN_DIR ...] --out FILE.png [--title TEXT]
                                        [--size WxH] [--dpi N] [--add PATTERN] [--skip PATTERN]

Reads each RUN_DIR/metrics.jsonl (one JSON object per line with "split" = train / eval / eval_ema,
"step" and numeric metrics) and draws one figure with a grid of panels, step on the x axis, one
colour per run (legend: the run directory names), only the panels some run has data for:
- train loss terms: every numeric key of train rows whose name starts with "loss" (the total, then
  each term in its own panel; a term that is 0 in every row of every run, i.e. switched off, is left
  out with a note). Log-scale y when every value is positive;
- held-out metrics: every numeric key of eval / eval_ema rows, whatever the run's schema (Stage A:
  cosine, cosine_centered, mse, loss; concept: concept_mask_iou, matched_mask_iou, matched_box_iou,
  presence_agreement, negative_false_positive_rate, trunk_cosine; known keys first, with readable
  titles). Raw weights (eval rows) solid with filled markers, EMA weights (eval_ema rows) dashed with
  open markers, on the same axes. A key X_baseline (Stage A's cosine_baseline, the mean-teacher-vector
  predictor) is drawn as a dotted reference on X's panel;
- learning rate and throughput (images/s) of the train rows;
- any other train key through --add (e.g. grad_norm, ms_teacher).
A step logged twice keeps its last row. JSON null (how the trainer writes NaN) is a gap in the line.

A torn last line (no newline at its end: a run killed mid-write, or still running) is skipped with a
warning. Errors (a missing run directory, a missing or empty metrics.jsonl, a malformed line, a row
without "split" / "step") print one line `plot_runs.py: error: FILE[:LINE]: ...` on stderr and exit
with 2, writing nothing. The PNG is written atomically (a temporary file in the output directory,
then rename); the output path is printed on success. Needs matplotlib (Debian python3-matplotlib,
Agg backend: no display).
"""
import argparse
import fnmatch
import importlib.util
import json
import math
import os
import sys
import tempfile

PROG = "plot_runs.py"
SPLITS = ("train", "eval", "eval_ema")
NOT_METRICS = {"step", "split", "epoch"}

# Titles of the keys the trainers log (include/instinct/distill, docs/stageA.md, docs/concept.md); any
# other key is plotted too, titled by its name. The order here is the panel order.
TRAIN_TITLES = {
    "loss": "train loss (total)",
    "loss_cos": "loss_cos: 1 - cosine",
    "loss_mse": "loss_mse: squared error",
    "loss_class": "loss_class: class KD",
    "loss_presence": "loss_presence: presence KD",
    "loss_l1": "loss_l1: box L1",
    "loss_giou": "loss_giou: box 1 - GIoU",
    "loss_mask": "loss_mask: mask",
    "loss_dice": "loss_dice: mask dice",
    "loss_memory": "loss_memory: CLoCK KD",
    "loss_align": "loss_align: region-text InfoNCE",
    "loss_trunk": "loss_trunk: Stage A regulariser",
}
EVAL_TITLES = {
    "cosine": "held-out cosine to the teacher",
    "concept_mask_iou": "held-out concept mask IoU",
    "matched_mask_iou": "held-out matched mask IoU",
    "matched_box_iou": "held-out matched box IoU",
    "presence_agreement": "held-out presence agreement",
    "trunk_cosine": "held-out trunk cosine",
    "negative_false_positive_rate": "held-out negative FP rate",
    "cosine_centered": "held-out centred cosine",
    "loss": "held-out loss",
    "mse": "held-out squared error",
}
TAIL_TITLES = {"lr": "learning rate", "images_per_s": "throughput (images/s)"}
EXTRA_TITLES = {"grad_norm": "gradient norm (pre-clip)"}


class PlotError(Exception):
    """A user-facing error: one line, FILE[:LINE]: what is wrong."""


def warn(msg):
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


class Run:
    """One run directory: name (for the legend) and series[(split, key)] = {step: value}."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(os.path.normpath(path))
        self.series = {}

    def keys(self, split):
        return [k for (s, k) in self.series if s == split]

    def points(self, split, key):
        pts = self.series.get((split, key), {})
        steps = sorted(pts)
        return steps, [pts[s] for s in steps]


def _number(v):
    """A metric value: a float, NaN for JSON null (the trainer's NaN), None for anything else."""
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def load_run(path):
    if not os.path.isdir(path):
        raise PlotError(f"{path}: no such run directory" if not os.path.exists(path) else f"{path}: not a directory")
    run = Run(path)
    file = os.path.join(path, "metrics.jsonl")
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise PlotError(f"{file}: no such file (not an instinct-train run directory?)") from None
    except OSError as e:
        raise PlotError(f"{file}: cannot read: {e.strerror}") from None
    lines = data.split(b"\n")
    n_rows, other_splits = 0, set()
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        torn = no == len(lines)  # the last piece, not ended by a newline: a writer stopped mid-line
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            if torn:
                warn(f"{file}:{no}: incomplete last line skipped (run killed mid-write, or still running)")
                continue
            raise PlotError(f"{file}:{no}: not UTF-8 text") from None
        except json.JSONDecodeError as e:
            if torn:
                warn(f"{file}:{no}: incomplete last line skipped (run killed mid-write, or still running)")
                continue
            raise PlotError(f"{file}:{no}: malformed JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(row, dict):
            raise PlotError(f"{file}:{no}: expected a JSON object, got {type(row).__name__}")
        split, step = row.get("split"), row.get("step")
        if not isinstance(split, str):
            raise PlotError(f"{file}:{no}: row without a string \"split\" (train / eval / eval_ema)")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
            raise PlotError(f"{file}:{no}: row without a numeric \"step\"")
        n_rows += 1
        if split not in SPLITS:
            other_splits.add(split)
            continue
        for k, v in row.items():
            x = None if k in NOT_METRICS else _number(v)
            if x is not None:
                run.series.setdefault((split, k), {})[step] = x  # a step logged twice: the last row wins
    if n_rows == 0:
        raise PlotError(f"{file}: empty: no metrics rows (has the run logged a step yet?)")
    if other_splits:
        warn(f"{file}: rows of split {', '.join(sorted(other_splits))} ignored (known: {', '.join(SPLITS)})")
    return run


def name_runs(runs):
    """Legend names: the run directory's name, or the path as given where two runs share a name."""
    names = [os.path.basename(os.path.normpath(r.path)) for r in runs]
    for r, n in zip(runs, names):
        r.name = n if names.count(n) == 1 else os.path.normpath(r.path)


def _ordered(keys, known):
    keys = set(keys)
    return [k for k in known if k in keys] + sorted(keys - set(known))


class Line:
    def __init__(self, run_index, role, steps, values):
        self.run_index, self.role, self.steps, self.values = run_index, role, steps, values


class Panel:
    """One subplot: key (matched by --skip), title, kind (train / eval), log_y, lines."""

    def __init__(self, key, title, kind):
        self.key, self.title, self.kind, self.lines = key, title, kind, []

    def values(self):
        return [v for ln in self.lines for v in ln.values if math.isfinite(v)]

    @property
    def log_y(self):
        vals = self.values()
        return self.key.startswith("loss") and bool(vals) and min(vals) > 0


def _skipped(key, kind, patterns):
    names = [key] + ([f"eval/{key}"] if kind == "eval" else [])
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)


def plan_panels(runs, add=(), skip=()):
    """The panels to draw, in order, and notes on what was left out."""
    notes = []
    train_keys = {k for r in runs for k in r.keys("train")}
    eval_keys = {k for r in runs for s in ("eval", "eval_ema") for k in r.keys(s)}
    baselines = {k for k in eval_keys if k.endswith("_baseline") and k[: -len("_baseline")] in eval_keys}
    added = []
    for pat in add:
        hits = sorted(k for k in train_keys if fnmatch.fnmatchcase(k, pat))
        if not hits:
            raise PlotError(f"--add {pat}: matches no key of the train rows (they have: {', '.join(sorted(train_keys))})")
        added += [k for k in hits if k not in added]

    specs = [("train", k, TRAIN_TITLES.get(k, f"train {k}"))
             for k in _ordered([k for k in train_keys if k.startswith("loss")], TRAIN_TITLES)]
    specs += [("eval", k, EVAL_TITLES.get(k, f"held-out {k}")) for k in _ordered(eval_keys - baselines, EVAL_TITLES)]
    specs += [("train", k, TAIL_TITLES[k]) for k in TAIL_TITLES if k in train_keys]
    specs += [("train", k, EXTRA_TITLES.get(k, f"train {k}")) for k in added
              if not k.startswith("loss") and k not in TAIL_TITLES]

    panels, used = [], set()
    for kind, key, title in specs:
        if _skipped(key, kind, skip):
            used.update(p for p in skip if fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(f"eval/{key}", p))
            continue
        p = Panel(key, title, kind)
        for i, r in enumerate(runs):
            if kind == "train":
                roles = [("train", "train", key)]
            else:
                roles = [("eval", "raw", key), ("eval_ema", "ema", key), ("eval", "baseline", f"{key}_baseline")]
            for split, role, k in roles:
                steps, values = r.points(split, k)
                if steps:
                    p.lines.append(Line(i, role, steps, values))
        vals = p.values()
        if not vals:
            continue  # only nulls
        if kind == "train" and key.startswith("loss_") and key not in added and all(v == 0 for v in vals):
            notes.append(f"{key} is 0 in every train row (term switched off): panel left out")
            continue
        panels.append(p)
    for pat in skip:
        if pat not in used:
            warn(f"--skip {pat}: matches no panel")
    return panels, notes


def _short(v, digits):
    """v to `digits` significant digits, written out in full between 1e-4 and 1e6 (100, not 1e+02)."""
    s = f"{v:.{digits}g}"
    if "e" in s and 1e-4 <= abs(v) < 1e6:
        s = f"{float(s):f}".rstrip("0").rstrip(".")
    return s


def grid_shape(n):
    cols = 1 if n == 1 else 2 if n <= 4 else 3 if n <= 9 else 4 if n <= 16 else 5
    return math.ceil(n / cols), cols


def default_size(n):
    rows, _ = grid_shape(n)
    return 14.0, max(9.0, 2.3 * rows)


def draw(runs, panels, size, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, MaxNLocator

    class PlainLog(LogFormatterSciNotation):
        """Log-axis labels where matplotlib puts them, written 0.95 / 170 rather than 9.5 x 10^-1, with
        as many digits as it takes to tell neighbouring labels apart."""

        def format_ticks(self, values):
            shown = [bool(s) for s in super().format_ticks(values)]
            picked = [v for v, s in zip(values, shown) if s]
            for digits in range(2, 9):
                labels = [_short(v, digits) for v in picked]
                if len(set(labels)) == len(labels):
                    break
            it = iter(labels)
            return [next(it) if s else "" for s in shown]

    cmap = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    colours = [cmap(i % cmap.N) for i in range(len(runs))]
    style = {"train": dict(linestyle="-", linewidth=1.5),
             "raw": dict(linestyle="-", linewidth=1.5, marker="o", markersize=4),
             "ema": dict(linestyle="--", linewidth=1.5, marker="o", markersize=4, markerfacecolor="none"),
             "baseline": dict(linestyle=":", linewidth=1.5, alpha=0.8)}
    rows, cols = grid_shape(len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    flat = [a for row in axes for a in row]
    roles = set()
    for i, (ax, p) in enumerate(zip(flat, panels)):
        for ln in p.lines:
            kw = dict(style[ln.role])
            if ln.role == "train" and len(ln.steps) <= 30:
                kw.update(marker=".", markersize=5)
            elif ln.role in ("raw", "ema") and len(ln.steps) > 60:
                kw.pop("marker")  # a long run's eval points would blot out the line
            ax.plot(ln.steps, ln.values, color=colours[ln.run_index], **kw)
            roles.add(ln.role)
        if p.log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(PlainLog())
            ax.yaxis.set_minor_formatter(PlainLog(labelOnlyBase=False))
        elif p.key == "lr":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        else:
            ax.ticklabel_format(axis="y", useOffset=False)  # an offset label would sit on the title
        ax.set_title(p.title, fontsize=10)
        ax.tick_params(which="both", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        ax.grid(True, alpha=0.3)
        if i + cols >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("step", fontsize=9)
    for ax in flat[len(panels):]:
        ax.remove()

    handles = [Line2D([], [], color=c, linewidth=2.5, label=r.name) for r, c in zip(runs, colours)]
    grey = "0.35"
    if "raw" in roles or "ema" in roles:
        handles.append(Line2D([], [], color=grey, label="train / held-out raw (eval)", **style["raw"]))
    if "ema" in roles:
        handles.append(Line2D([], [], color=grey, label="held-out EMA (eval_ema)", **style["ema"]))
    if "baseline" in roles:
        handles.append(Line2D([], [], color=grey, label="reference (*_baseline)", **style["baseline"]))
    ncol = min(len(handles), 6)
    legend_rows = math.ceil(len(handles) / ncol)
    top_in = 0.12 + 0.28 * legend_rows + (0.4 if title else 0.0)  # inches above the grid
    top = 1.0 - top_in / size[1]
    if title:
        fig.suptitle(title, fontsize=13, y=1.0 - 0.08 / size[1], va="top")
    fig.legend(handles=handles, loc="upper center", ncol=ncol, frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, top + (0.04 + 0.28 * legend_rows) / size[1]))
    fig.tight_layout(rect=(0, 0, 1, top), h_pad=1.2, w_pad=1.0)
    return fig


def save_atomic(fig, out, dpi):
    d = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=d)
    except OSError as e:
        raise PlotError(f"{out}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except OSError as e:
        os.unlink(tmp)
        raise PlotError(f"{out}: cannot write: {e.strerror}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def parse_size(text):
    try:
        w, h = (float(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT in inches, e.g. 14x9") from None
    if not (0 < w <= 100 and 0 < h <= 100):
        raise argparse.ArgumentTypeError(f"'{text}': width and height must be in (0, 100] inches")
    return w, h


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error of this script (no usage block)
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def parse_args(argv):
    ap = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(__doc__.split("\n\n")[:1] + __doc__.split("\n\n")[2:]).strip(),
        usage="/usr/bin/python3 scripts/plot_runs.py RUN_DIR [RUN_DIR ...] --out FILE.png [options]",
        epilog="example: /usr/bin/python3 scripts/plot_runs.py runs/stageA_tiny runs/concept_tiny --out runs/curves.png")
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="instinct-train run directory (holds metrics.jsonl); one colour per run, in this order")
    ap.add_argument("--out", required=True, metavar="FILE.png",
                    help="PNG to write (atomically; missing parent directories are created)")
    ap.add_argument("--title", default=None, help="figure title (default: none; the legend names the runs)")
    ap.add_argument("--size", type=parse_size, default=None, metavar="WxH",
                    help="figure size in inches (default: 14x9, taller when there are more than 3 rows of panels)")
    ap.add_argument("--dpi", type=int, default=110, help="resolution (default: 110, so 14x9 in is 1540x990 px)")
    ap.add_argument("--add", action="append", default=[], metavar="PATTERN",
                    help="also plot train keys matching this glob, e.g. grad_norm, 'ms_*' (repeatable)")
    ap.add_argument("--skip", action="append", default=[], metavar="PATTERN",
                    help="leave out panels whose key matches this glob; held-out panels also match as "
                         "eval/KEY, e.g. 'loss_*', 'eval/*', mse (repeatable)")
    a = ap.parse_args(argv)
    if not a.out.lower().endswith(".png"):
        ap.error(f"--out {a.out}: must name a .png file")
    if os.path.isdir(a.out):
        ap.error(f"--out {a.out}: is a directory")
    if not 10 <= a.dpi <= 1000:
        ap.error(f"--dpi {a.dpi}: must be in [10, 1000]")
    return a


def main(argv=None):
    a = parse_args(argv)
    try:
        runs = [load_run(d) for d in a.run_dirs]
        name_runs(runs)
        panels, notes = plan_panels(runs, a.add, a.skip)
        for n in notes:
            print(f"{PROG}: note: {n}", file=sys.stderr)
        if not panels:
            raise PlotError(f"{', '.join(a.run_dirs)}: nothing to plot (no numeric train or eval metrics left)")
        if importlib.util.find_spec("matplotlib") is None:
            raise PlotError("matplotlib is not installed: run with /usr/bin/python3 (Debian python3-matplotlib)")
        fig = draw(runs, panels, a.size or default_size(len(panels)), a.title)
        save_atomic(fig, a.out, a.dpi)
    except PlotError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
