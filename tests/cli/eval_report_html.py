"""Checks <output>/report.html against <output>/report.json and <output>/overlays/*.png.

Usage: eval_report_html.py OUTPUT_DIR (run by eval_report_html.sh). Parses the page with html.parser (no third-party code) and
asserts: one summary row per model, in report order, with the console table's numbers; one SVG
histogram per (prompt, model) whose bars hold the per-bin counts of the report's rows (10 bins over
[0, 1]); every overlay PNG embedded once as a data: URI decoding to the file's bytes; nothing
external (no http(s)://, no src other than data:, no script/link/href).
"""
import base64
import json
import math
import os
import sys
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.tables, self.svgs, self.imgs, self.external = [], {}, [], [], []
        self.table = self.row = self.cell = self.svg = None
        self.section = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.external.append(tag)
        for k, v in attrs:
            if k == "href" or (k == "src" and not (v or "").startswith("data:")):
                self.external.append(f"{tag} {k}={v[:60]!r}")
        if tag == "table" and "id" in a:
            self.table = self.tables.setdefault(a["id"], [])
        elif tag == "tbody" and self.table is not None:
            self.section = "tbody"
        elif tag == "tr" and self.table is not None and self.section == "tbody":
            self.row = {"attrs": a, "cells": []}
            self.table.append(self.row)
        elif tag == "td" and self.row is not None:
            self.cell = {"attrs": a, "text": ""}
            self.row["cells"].append(self.cell)
        elif tag == "svg":
            self.svg = {"attrs": a, "bars": []}
            self.svgs.append(self.svg)
        elif tag == "rect" and self.svg is not None and a.get("class") == "bar":
            self.svg["bars"].append(a)
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = self.section = None
        elif tag == "tr":
            self.row = None
        elif tag == "td":
            self.cell = None
        elif tag == "svg":
            self.svg = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def main(out):
    rep = json.load(open(f"{out}/report.json"))
    raw = open(f"{out}/report.html", encoding="utf-8").read()
    page = Page()
    page.feed(raw)
    page.close()
    assert "http://" not in raw and "https://" not in raw, "report.html refers to the network"
    assert not page.external, f"report.html refers to external files: {page.external}"

    models = rep["models"]
    assert models[0] == rep["reference_model"], (models, rep["reference_model"])
    prompts = [p for p in ("concept", "box", "point") if p in rep["summary"][models[0]]]
    for m in models:  # every model name is escaped in the source
        if any(c in m for c in "<>&\""):
            assert m not in raw, f"model name {m!r} appears unescaped"
    rows = page.tables["summary"]
    assert [r["cells"][0]["text"] for r in rows] == models, ([r["cells"][0]["text"] for r in rows], models)
    for r, m in zip(rows, models):
        s = rep["summary"][m]
        assert r["attrs"]["data-model"] == m
        want = f"{s['trunk_params'] / 1e6:.2f}M" if "trunk_params" in s else "-"
        assert r["cells"][1]["text"] == want, (m, r["cells"][1]["text"], want)
        cols = {c["attrs"].get("data-col"): c["text"] for c in r["cells"][2:]}
        want = {p: f"{s[p]['mean']:.3f} ({s[p]['pct_of_reference']:.0f}%)" for p in prompts}
        if rep["protocol"]["cgf1"]:
            want["cgf1"] = f"{s['cgf1']['cgf1']:.3f} ({s['cgf1']['pct_of_reference']:.0f}%)"
        assert cols == want, (m, cols, want)

    n_bins = 0
    for p in prompts:
        for m in models:
            svgs = [g for g in page.svgs if g["attrs"].get("data-model") == m and g["attrs"].get("data-prompt") == p]
            assert len(svgs) == 1, (m, p, len(svgs))
            bars = sorted(svgs[0]["bars"], key=lambda b: int(b["data-bin"]))
            counts = [int(b["data-count"]) for b in bars]
            ious = [r["iou"] for r in rep["rows"] if r["model"] == m and r["prompt"] == p]
            want = [0] * 10
            for v in ious:
                want[min(9, max(0, math.floor(v * 10)))] += 1
            assert counts == want, (m, p, counts, want)
            assert sum(counts) == rep["summary"][m][p]["count"] > 0, (m, p, sum(counts))
            n_bins += 1
    assert len(page.svgs) == n_bins, (len(page.svgs), n_bins)

    pngs = sorted(os.listdir(f"{out}/overlays")) if os.path.isdir(f"{out}/overlays") else []
    assert sorted(o["png"] for o in rep["overlays"]) == [f"overlays/{f}" for f in pngs], (rep["overlays"], pngs)
    embedded = []
    for img in page.imgs:
        src = img["src"]
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:40]
        embedded.append(base64.b64decode(src[len(prefix):], validate=True))
    files = [open(f"{out}/overlays/{f}", "rb").read() for f in pngs]
    assert sorted(embedded) == sorted(files), (len(embedded), len(files))
    print(f"report.html ok: {len(models)} models x {len(prompts)} prompts, {n_bins} histograms, "
          f"{len(files)} overlays embedded, {len(raw)} bytes")
    return len(files)


if __name__ == "__main__":
    main(sys.argv[1])
