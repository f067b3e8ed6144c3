"""The drift report's pictures and pages: matplotlib plots, worst-image strips, report.md and report.html.

Everything here turns the dict :func:`engines.report.report.build_report` returns into
bytes and text; :func:`engines.report.report.write_report` writes them. The plots use
matplotlib's object API on the Agg canvas (no pyplot, no global backend change),
and the HTML embeds every PNG as a ``data:`` URI, so ``report.html`` is one file
that opens offline.

Pictures:

- ``drift_per_class.png``: per-class IoU drift of every variant, bars with their 95% bootstrap intervals;
- ``latency_vs_miou.png``: median latency on this machine against mIoU, every artifact (the trade-off at a glance);
- ``confusion_<variant>.png``: the variant's confusion matrix minus the reference's, in percent of each
  ground-truth class's pixels (red: more pixels of that row go to that column than with the reference);
- ``worst_<variant>.png``: the images where the variant disagrees most with the reference: input,
  reference, variant, ground truth, and a disagreement map over the dimmed input (red: the variant is wrong
  where the reference was right; green: right where the reference was wrong; yellow: both wrong, differently;
  grey: differ on an ignored pixel).
"""

from __future__ import annotations

import base64
import html as _html
import io
import re
import textwrap

import numpy as np

STATUS_TEXT = {"reference": "reference", "pass": "pass", "fail": "FAIL", "not run": "NOT RUN"}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "variant"


def measured(report: dict) -> list[dict]:
    return [r for r in report["rows"] if r["role"] == "variant" and r["status"] != "not run"]


# --------------------------------------------------------------------------- numbers as text


def fmt(x, spec: str = ".2f", none: str = "–") -> str:
    return none if x is None else format(x, spec)


def fmt_ci(ci, spec: str = "+.3f") -> str:
    return "–" if not ci else f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def headline_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "runs as", "precision", "mIoU", "drift (points)", "95% CI", "limit", "agreement %",
            "median ms", "size MiB", "status"]
    rows = []
    for r in report["rows"]:
        if r["status"] == "not run":
            rows.append([r["name"], "–", r.get("precision", "–"), "–", "–", "–", "–", "–", "–",
                         fmt(r["size_bytes"] / 2 ** 20, ".1f") if r.get("size_bytes") else "–",
                         f"NOT RUN: {r['reason']}"])
            continue
        precision = r["precision"] + (f" ({r['flavour']})" if r.get("flavour") else "")
        is_ref = r["role"] == "reference"
        rows.append([r["name"], r["runs_as"], precision, fmt(r["mIoU"], ".3f"),
                     "–" if is_ref else fmt(r["miou_drift"], "+.3f"), "–" if is_ref else fmt_ci(r["miou_drift_ci"]),
                     "–" if is_ref else f"−{r['limit']:g}", "–" if is_ref else fmt(r["agreement"], ".3f"),
                     fmt(r["latency_ms"], ".2f"), fmt(r["size_bytes"] / 2 ** 20, ".1f"),
                     STATUS_TEXT[r["status"]]])
    return head, rows


def class_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    variants = measured(report)
    ref = report["rows"][0]
    head = ["class", "pixels", f"{ref['name']} IoU"] + [f"{v['name']} drift [95% CI]" for v in variants]
    rows = []
    for c in report["classes"]:
        row = [c, str(ref["class_pixels"][c]), fmt(ref["per_class"][c], ".2f")]
        for v in variants:
            d = v["class_drift"][c]
            row.append("–" if d is None else f"{d:+.2f} {fmt_ci(v['class_drift_ci'].get(c), '+.2f')}")
        rows.append(row)
    return head, rows


def md_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def headline_table(report: dict) -> str:
    return md_table(*headline_rows(report))


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def plot_class_drift(report: dict) -> bytes:
    variants = measured(report)
    classes = report["classes"]
    n, c = len(variants), len(classes)
    fig = _figure(min(30.0, max(7.0, 0.28 * c * max(1, n) + 2)), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, n)
    x = np.arange(c)
    for j, v in enumerate(variants):
        d = np.array([np.nan if v["class_drift"][k] is None else v["class_drift"][k] for k in classes])
        lo = np.array([np.nan if not v["class_drift_ci"].get(k) else v["class_drift_ci"][k][0] for k in classes])
        hi = np.array([np.nan if not v["class_drift_ci"].get(k) else v["class_drift_ci"][k][1] for k in classes])
        err = np.vstack([np.nan_to_num(d - lo), np.nan_to_num(hi - d)]).clip(min=0)
        ax.bar(x + (j - (n - 1) / 2) * width, np.nan_to_num(d), width, yerr=err, capsize=2,
               color=COLORS[j % len(COLORS)], label=v["name"], error_kw={"elinewidth": 0.8})
    ax.axhline(0, color="black", linewidth=0.8)
    ax.use_sticky_edges = False  # bars stick to 0 otherwise, and a bar of 0 vanishes into the frame
    ax.margins(y=0.08)
    ax.set_xticks(x, classes, rotation=45 if c > 8 else 0, ha="right" if c > 8 else "center",
                  fontsize=8 if c > 30 else 9)
    ax.set_xlim(-0.6, c - 0.4)
    ax.set_ylabel("IoU drift vs reference (points)")
    ax.set_title(f"Per-class IoU drift against {report['reference']}, with 95% bootstrap intervals")
    if n:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_latency_miou(report: dict) -> bytes:
    rows = [r for r in report["rows"] if r["status"] != "not run" and r.get("latency_ms") is not None]
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    for j, r in enumerate(rows):
        ref = r["role"] == "reference"
        ci = r.get("miou_drift_ci")
        yerr = None
        if ci and not ref:
            yerr = [[max(0.0, r["miou_drift"] - ci[0])], [max(0.0, ci[1] - r["miou_drift"])]]
        ax.errorbar([r["latency_ms"]], [r["mIoU"]], yerr=yerr, fmt="*" if ref else "o", markersize=13 if ref else 8,
                    color="black" if ref else COLORS[(j - 1) % len(COLORS)], capsize=3,
                    markeredgecolor="white" if not ref else None)
        label = r["name"] + ("" if ref else f"\n{r['miou_drift']:+.3f}")
        ax.annotate(label, (r["latency_ms"], r["mIoU"]), textcoords="offset points",
                    xytext=(7, 4 if j % 2 == 0 else -22), fontsize=8)  # alternate: close points stay readable
        if ref:
            ax.axhline(r["mIoU"], color="black", linewidth=0.6, linestyle="--")
    if rows:
        xs = [r["latency_ms"] for r in rows]
        ax.set_xlim(0, max(xs) * 1.35)
        ys = [r["mIoU"] for r in rows]
        for r in rows:  # the error bars too
            if r.get("miou_drift_ci") and r["role"] != "reference":
                ys += [r["mIoU"] - r["miou_drift"] + r["miou_drift_ci"][0], r["mIoU"] - r["miou_drift"] + r["miou_drift_ci"][1]]
        pad = max(0.05, (max(ys) - min(ys)) * 0.25)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xlabel("median latency per image on this machine (ms)")
    ax.set_ylabel("mIoU (%)")
    machine = textwrap.fill(report["machine_line"], 90)
    ax.set_title(f"Speed against accuracy (bars: 95% interval of the drift)\n{machine}", fontsize=8.5)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_confusion_diff(report: dict, row: dict) -> bytes:
    ref = np.asarray(report["rows"][0]["confusion_matrix"], np.float64)
    var = np.asarray(row["confusion_matrix"], np.float64)
    classes = report["classes"]
    c = len(classes)
    gt = np.maximum(ref.sum(1, keepdims=True), 1)
    diff = (var - ref) / gt * 100
    vmax = float(np.abs(diff).max()) or 1.0
    side = min(16.0, max(4.5, 0.35 * c + 2.5))
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(diff, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of the ground-truth class's pixels")
    if c <= 40:
        ax.set_xticks(range(c), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(c), classes, fontsize=8)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                if abs(diff[i, j]) >= 0.005:
                    ax.text(j, i, f"{diff[i, j]:+.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(diff[i, j]) > 0.6 * vmax else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    same = " (no pixel differs)" if not np.any(var != ref) else ""
    ax.set_title(f"Confusion matrix: {row['name']} minus {report['reference']}{same}", fontsize=10)
    return _png(fig)


# --------------------------------------------------------------------------- worst images

TILE_TITLES = ("input", "reference", "variant", "ground truth", "disagreement")


def disagreement_map(image: np.ndarray, ref: np.ndarray, var: np.ndarray, gt: np.ndarray,
                     ignore_index: int = 255) -> np.ndarray:
    """Dimmed input with the pixels where variant and reference differ, coloured by who is right."""
    out = (image.astype(np.float32) * 0.35).astype(np.uint8)
    differ = ref != var
    ignored = gt == ignore_index
    worse = differ & ~ignored & (ref == gt)
    better = differ & ~ignored & (var == gt)
    both = differ & ~ignored & ~worse & ~better
    out[worse] = (230, 30, 30)
    out[better] = (40, 200, 60)
    out[both] = (240, 200, 0)
    out[differ & ignored] = (150, 150, 150)
    return out


def strip(tiles: list[np.ndarray], titles=TILE_TITLES, height: int = 192) -> np.ndarray:
    """Tiles side by side at one height (nearest-neighbour, so label edges stay sharp), each with a title bar."""
    import cv2

    out = []
    for tile, title in zip(tiles, titles):
        h, w = tile.shape[:2]
        w2 = max(1, int(round(w * height / h)))
        t = cv2.resize(tile, (w2, height), interpolation=cv2.INTER_NEAREST)
        bar = np.full((20, w2, 3), 32, np.uint8)
        cv2.putText(bar, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        col = np.concatenate([bar, t], axis=0)
        out += [col, np.full((col.shape[0], 4, 3), 255, np.uint8)]
    return np.concatenate(out[:-1], axis=1)


def worst_strip(report: dict, row: dict) -> bytes | None:
    """The variant's worst images stacked, or None when it agrees with the reference on every pixel."""
    import cv2

    from cpnet.runtime.draw import colorize

    passes, dataset, indices = report["_passes"], report["_dataset"], report["_indices"]
    refs = report["_reference_predictions"]
    palette = report["palette"]
    rows = []
    for d, k, packed in passes[row["name"]].worst:
        if d <= 0:
            continue
        image, gt = dataset.load(indices[k])
        ref, var = unpack_labels(refs[k]), unpack_labels(packed)
        tiles = [image, colorize(ref, palette), colorize(var, palette), colorize(gt, palette),
                 disagreement_map(image, ref, var, gt, dataset.ignore_index)]
        s = strip(tiles)
        label = np.full((18, s.shape[1], 3), 255, np.uint8)
        cv2.putText(label, f"{dataset.sample_path(indices[k]).name}: {d * 100:.2f}% of pixels differ", (2, 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [label, s, np.full((8, s.shape[1], 3), 255, np.uint8)]
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows[:-1], axis=0), cv2.COLOR_RGB2BGR))
    return buf.tobytes() if ok else None


def render_images(report: dict) -> dict[str, bytes]:
    """Every picture of the report: file name -> PNG bytes."""
    images = {}
    variants = measured(report)
    if variants:
        images["drift_per_class.png"] = plot_class_drift(report)
    images["latency_vs_miou.png"] = plot_latency_miou(report)
    for v in variants:
        images[f"confusion_{slug(v['name'])}.png"] = plot_confusion_diff(report, v)
        strip_png = worst_strip(report, v)
        if strip_png is not None:
            images[f"worst_{slug(v['name'])}.png"] = strip_png
    return images


def image_index(report: dict, images: dict[str, bytes]) -> dict:
    """Which picture shows what: {'drift_per_class': file, 'latency_vs_miou': file, 'variants': {name: {...}}}."""
    out = {"drift_per_class": "drift_per_class.png" if "drift_per_class.png" in images else None,
           "latency_vs_miou": "latency_vs_miou.png", "variants": {}}
    for v in measured(report):
        s = slug(v["name"])
        out["variants"][v["name"]] = {"confusion_diff": f"confusion_{s}.png",
                                      "worst": f"worst_{s}.png" if f"worst_{s}.png" in images else None}
    return out


# --------------------------------------------------------------------------- pages


def _summary_lines(report: dict) -> list[str]:
    from cpnet.runtime.machine import busy

    ev, bs, data = report["evaluation"], report["bootstrap"], report["data"]
    gate = report["gate"]
    limits = (f"--max-miou-drift {gate['max_miou_drift']:g} points" if gate["max_miou_drift"] is not None else
              "mIoU drop limits by precision: " + ", ".join(f"{k} {v:g}" for k, v in gate["default_max_miou_drift"].items())
              + " points")
    if gate["max_class_drift"] is not None:
        limits += f"; per class {gate['max_class_drift']:g} points"
    mode = "deploy preprocessing (whole frame at the model input, one scale, no flip)" if ev["mode"] == "deploy" else \
        f"{ev['mode']} mode, scales {ev['scales']}, flip {ev['flip']}"
    lines = [
        f"Images: {data['images']} from the {data['description']}"
        + (f" ({len(data['skipped'])} bad sample(s) skipped)" if data["skipped"] else "") + f"; {mode}.",
        f"Latency: {ev['latency']}; threads: {report['runtime']['threads'] or 'library default'}.",
        f"Machine: {report['machine_line']}."
        + (f" Warning: the load average exceeded the {report['machine'].get('usable_cores')} usable core(s) while "
           f"measuring: other work shared the CPU, so the latencies are inflated and their ranking may be too."
           if busy(report["machine"]) else ""),
        f"Drift = variant minus reference, in points; 95% intervals: {bs['resamples']} bootstrap resamples over "
        f"images, paired, seed {bs['seed']}. Agreement: pixels predicted as the reference predicts them.",
        f"Gate (point estimates, drops only): {limits}.",
    ]
    return lines


def _gate_lines(report: dict) -> list[str]:
    gate = report["gate"]
    if gate["passed"]:
        return ["Gate: passed (every variant within its limits)."]
    return ["Gate: " + ("FAILED" if any(r["status"] == "fail" for r in report["rows"]) else "not passed") + ":"] + \
        [f"- {line}" for line in gate["offenders"]]


def _provenance_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "file", "sha256", "parent sha256", "calibration"]
    rows = []
    for r in report["rows"]:
        cal = r.get("calibration")
        if isinstance(cal, dict):
            bits = [str(cal[k]) for k in ("method", "flavour") if cal.get(k)]
            if cal.get("images") is not None:
                bits.append(f"{cal['images']} images")
            if cal.get("source"):
                bits.append(f"from {cal['source']}")
            if cal.get("excluded_nodes"):
                bits.append(f"{len(cal['excluded_nodes'])} node(s) kept in float")
            cal = ", ".join(bits)
        rows.append([r["name"], r.get("file") or r.get("path", ""), (r.get("sha256") or "–")[:16],
                     (r.get("parent_sha256") or "–")[:16], cal or "–"])
    return head, rows


def markdown(report: dict) -> str:
    lines = [f"# Accuracy drift against {report['reference']}", "", f"**{report['recommendation']['line']}**", ""]
    lines += _gate_lines(report) + [""]
    lines += [md_table(*headline_rows(report)), ""]
    lines += [f"- {s}" for s in _summary_lines(report)] + [""]
    idx = report["images"]
    lines += ["## Per-class IoU", "", md_table(*class_rows(report)), ""]
    if idx["drift_per_class"]:
        lines += [f"![per-class IoU drift]({idx['drift_per_class']})", ""]
    lines += ["## Speed against accuracy", "", f"![latency against mIoU]({idx['latency_vs_miou']})", ""]
    for name, files in idx["variants"].items():
        lines += [f"## {name}", "", f"![confusion-matrix difference]({files['confusion_diff']})", ""]
        if files["worst"]:
            lines += ["Worst images (input, reference, variant, ground truth, disagreement: red = variant wrong where "
                      "the reference was right, green = the reverse, yellow = both wrong):", "",
                      f"![worst images]({files['worst']})", ""]
        else:
            lines += ["Every pixel agrees with the reference.", ""]
    lines += ["## Provenance", "", md_table(*_provenance_rows(report)), ""]
    if report.get("command"):
        lines += [f"Made by `{report['command']}` on {report['created']}.", ""]
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr.fail td{background:#fde2e2}tr.notrun td{background:#fff3cd}tr.reference td{background:#eef4ff}
.rec{font-size:1.08em;background:#eaf7ea;border:1px solid #9c9;padding:8px 12px;border-radius:4px}
.gate-fail{background:#fde2e2;border:1px solid #e99;padding:8px 12px;border-radius:4px}
.gate-ok{background:#eaf7ea;border:1px solid #9c9;padding:6px 12px;border-radius:4px}
.note{color:#555;font-size:13px}img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
code{background:#f5f5f5;padding:1px 4px}
"""


def _html_table(head, rows, table_id: str, row_classes=None) -> str:
    e = _html.escape
    out = [f'<table id="{table_id}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(images: dict[str, bytes], name: str | None, alt: str) -> str:
    if not name or name not in images:
        return ""
    data = base64.b64encode(images[name]).decode("ascii")
    return f'<img class="plot" alt="{_html.escape(alt)}" data-file="{_html.escape(name)}" src="data:image/png;base64,{data}">'


def html(report: dict, images: dict[str, bytes]) -> str:
    e = _html.escape
    idx = report["images"]
    status_class = {"fail": "fail", "not run": "notrun", "reference": "reference"}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Accuracy drift against {e(report['reference'])}</title><style>{CSS}</style></head><body>",
             f"<h1>Accuracy drift against {e(report['reference'])}</h1>",
             f'<p class="rec" id="recommendation">{e(report["recommendation"]["line"])}</p>']
    gate = _gate_lines(report)
    klass = "gate-ok" if report["gate"]["passed"] else "gate-fail"
    parts.append(f'<div class="{klass}" id="gate"><b>{e(gate[0])}</b>'
                 + ("<ul>" + "".join(f"<li>{e(g[2:])}</li>" for g in gate[1:]) + "</ul>" if gate[1:] else "")
                 + "</div>")
    head, rows = headline_rows(report)
    parts.append("<h2>Artifacts</h2>")
    parts.append(_html_table(head, rows, "headline", [status_class.get(r["status"], "") for r in report["rows"]]))
    parts.append('<ul class="note">' + "".join(f"<li>{e(s)}</li>" for s in _summary_lines(report)) + "</ul>")
    parts.append("<h2>Per-class IoU</h2>")
    parts.append(_img(images, idx["drift_per_class"], "per-class IoU drift with 95% intervals"))
    parts.append(_html_table(*class_rows(report), "classes"))
    parts.append("<h2>Speed against accuracy</h2>")
    parts.append(_img(images, idx["latency_vs_miou"], "median latency against mIoU"))
    for name, files in idx["variants"].items():
        parts.append(f"<h2>{e(name)}</h2>")
        parts.append(_img(images, files["confusion_diff"], f"confusion-matrix difference of {name}"))
        if files["worst"]:
            parts.append('<p class="note">Worst images by disagreement with the reference: input, reference, '
                         "variant, ground truth, disagreement (red: the variant is wrong where the reference was "
                         "right; green: the reverse; yellow: both wrong, differently; grey: an ignored pixel).</p>")
            parts.append(_img(images, files["worst"], f"worst images of {name}"))
        else:
            parts.append('<p class="note">Every pixel agrees with the reference.</p>')
    parts.append("<h2>Provenance</h2>")
    parts.append(_html_table(*_provenance_rows(report), "provenance"))
    foot = f"Made on {report['created']}"
    if report.get("command"):
        foot += f" by <code>{e(report['command'])}</code>"
    parts.append(f'<p class="note">{foot}; all figures in report.json.</p></body></html>')
    return "\n".join(p for p in parts if p)


def pack_labels(label: np.ndarray):
    """A label map kept compactly in memory for the passes after the reference's (PNG, lossless)."""
    if label.dtype == np.uint8:
        import cv2

        ok, buf = cv2.imencode(".png", label)
        if ok:
            return buf.tobytes()
    return label.copy()


def unpack_labels(packed) -> np.ndarray:
    if isinstance(packed, bytes):
        import cv2

        return cv2.imdecode(np.frombuffer(packed, np.uint8), cv2.IMREAD_UNCHANGED)
    return packed
