"""Figures of the rank probe, drawn from stored records only (study Fig. 6, 8, 9).

* :func:`plot_loss_vs_rank` (Fig. 6): held-out loss and top-1 accuracy vs the
  head's rank r (log x), one line per model; the trained full-rank head as a
  square at r = min(V, d), the model's own head as a dashed line.
* :func:`plot_loss_vs_w_error` (Fig. 8): probe loss at r vs W-error(r) of the
  model's own head, each point labelled with r; next to it the loss of the plain SVD
  truncation W_r at each r (no training). Error bars: the loss's standard error (loss_se).
* :func:`refresh_outputs`: ``rank_probe.csv`` and the three figures of a run directory, from its
  records (called by :func:`lmsat.experiments.rank_probe.run_rank_probe` users: the CLI, the
  diagnose pipeline, or the Python API after a run).
* :func:`plot_learning_rates` (Fig. 9): the learning rate the search chose vs r,
  and the search's development loss vs learning rate, one line per rank.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lmsat.figures.style import model_label, new_figure, save
from lmsat.kinds.rank_probe import RankProbeRecord, RankProbeRefRecord, run_frame
from lmsat.store import Record, Store, atomic_write_csv


def _by_model(records: list[Record]) -> dict[str, dict[str, Any]]:
    """{model key [+ head and init]: {"label", "probes": [(rank, results)], "full": results (A B at r = min(V, d)),
    "full_plain": results (one matrix W), "own": results, "search": [(rank, results)], "trunc": record}}.

    Probe runs are grouped by model, head function and initialisation (records of lmsat versions
    before --head/--init count as softmax, gaussian); the own head and the SVD-truncation curve of a
    model are attached to each of its groups."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"probes": [], "full": None, "full_plain": None, "own": None, "search": [], "trunc": None})
    shared: dict[str, dict[str, Any]] = defaultdict(dict)
    for rec in records:
        model = rec.inputs.get("model_key", rec.key.split("|")[0])
        res = rec.results
        if res.get("head") == "own":
            shared[model]["own"] = res
            shared[model]["label"] = model_label(rec.inputs)
            if "w_error" in rec.arrays:
                shared[model]["own_w_error"] = rec.load_arrays()["w_error"]
            continue
        if res.get("head") == "svd-truncation":
            shared[model]["trunc"] = rec
            continue
        group = (rec.inputs.get("head_function", "softmax"), rec.inputs.get("init", "gaussian"))
        entry = out[f"{model}|{group[0]}|{group[1]}"]
        entry["model"], entry["group"] = model, group
        entry["label"] = model_label(rec.inputs)
        if res.get("stage") == "final" and rec.inputs.get("head") == "full-rank":
            entry["full_plain" if res.get("parametrization") == "W" else "full"] = res
        elif res.get("stage") == "final":
            entry["probes"].append((int(rec.inputs["rank"]), res))
        elif res.get("stage") == "search" and rec.inputs.get("head") == "low-rank":
            entry["search"].append((int(rec.inputs["rank"]), res))
    groups = {e["group"] for e in out.values()}
    for key, entry in out.items():
        entry["probes"].sort(key=lambda x: x[0])
        entry.update({k: v for k, v in shared.get(entry["model"], {}).items() if k != "label"})
        if len(groups) > 1 or entry["group"] != ("softmax", "gaussian"):
            entry["label"] = f"{entry['label']} [{entry['group'][0]}, {entry['group'][1]} init]"
    for model, extra in shared.items():  # a model with references but no probe yet
        if not any(e.get("model") == model for e in out.values()):
            out[model].update({**extra, "model": model, "group": ("softmax", "gaussian")})
    return dict(out)


def plot_loss_vs_rank(records: list[Record], path: str | Path) -> Path:
    """Held-out loss and top-1 accuracy vs rank r, log-2 x axis, one line per model (study Fig. 6)."""
    fig, axes = new_figure(ncols=2)
    ax_loss, ax_acc = axes[0, 0], axes[0, 1]
    for i, entry in enumerate(_by_model(records).values()):
        color = f"C{i}"
        probes = [(r, res) for r, res in entry["probes"] if res.get("loss") is not None]
        ranks = [r for r, _ in probes]
        ax_loss.errorbar(ranks, [res["loss"] for _, res in probes], yerr=[res.get("loss_se") or 0.0 for _, res in probes],
                         fmt="o-", capsize=3, color=color, label=f"{entry['label']} (A B, rank r)")
        ax_acc.plot(ranks, [res["accuracy"] for _, res in probes], "o-", color=color, label=f"{entry['label']} (A B, rank r)")
        for name, marker, text in (("full", "s", "trained full-rank head (A B)"), ("full_plain", "D", "trained full-rank head (W)")):
            full = entry[name]
            if full and full.get("loss") is not None:
                ax_loss.errorbar([full["rank"]], [full["loss"]], yerr=[full.get("loss_se") or 0.0], fmt=marker, ms=8, capsize=3,
                                 color=color, mfc="none", label=text)
                ax_acc.plot([full["rank"]], [full["accuracy"]], marker, ms=8, color=color, mfc="none", label=text)
        own = entry["own"]
        if own:
            ax_loss.axhline(own["loss"], ls="--", color=color, lw=1, label="model's own head")
            ax_acc.axhline(own["accuracy"], ls="--", color=color, lw=1, label="model's own head")
    for ax, ylabel in ((ax_loss, "held-out loss (nats/token)"), (ax_acc, "held-out top-1 accuracy")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rank r of the head W = A B")
        ax.set_ylabel(ylabel)
        ax.legend()
    ax_loss.set_title("Rank-constrained heads on frozen representations")
    ax_acc.set_title("Top-1 accuracy")
    return save(fig, path)


def plot_loss_vs_w_error(records: list[Record], path: str | Path) -> Path:
    """Probe loss at rank r vs W-error(r) of the model's own head, points labelled r (study Fig. 8)."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for i, entry in enumerate(_by_model(records).values()):
        pts = [(res["w_error"], res["loss"], r) for r, res in entry["probes"] if res.get("loss") is not None and res.get("w_error") is not None]
        full = entry["full"]
        if full and full.get("loss") is not None:
            pts.append((0.0, full["loss"], full["rank"]))
        se = {r: res.get("loss_se") or 0.0 for r, res in entry["probes"]}
        se[full["rank"] if full else -1] = (full or {}).get("loss_se") or 0.0
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[se.get(p[2], 0.0) for p in pts], fmt="o-", capsize=3,
                    color=f"C{i}", label=entry["label"])
        trunc = entry.get("trunc")
        if trunc is not None and entry["own"] is not None:
            arrays = trunc.load_arrays()
            own_err = entry["own_w_error"] if "own_w_error" in entry else None
            if own_err is not None:
                xs = [float(own_err[r]) if r < len(own_err) else 0.0 for r in arrays["ranks"]]
                ax.errorbar(xs, arrays["loss"], yerr=arrays["loss_se"], fmt="x--", lw=1, capsize=2, color=f"C{i}",
                            alpha=0.7, label=f"{entry['label']}: SVD truncation W_r (no training)")
        for x, y, r in pts:
            ax.annotate(f"r={r}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if entry["own"]:
            ax.axhline(entry["own"]["loss"], ls="--", lw=1, color=f"C{i}", label=f"{entry['label']}: own head")
    ax.set_xlabel("W-error(r) of the model's own head = |W - W_r|_F / |W|_F")
    ax.set_ylabel("held-out loss of the rank-r probe (nats/token)")
    ax.set_xlim(-0.02, 1.0)
    ax.set_title("Probe loss vs W-error of the model's head")
    ax.legend()
    return save(fig, path)


def plot_learning_rates(records: list[Record], path: str | Path) -> Path:
    """Chosen peak learning rate vs r (log-log), and search development loss vs learning rate (study Fig. 9)."""
    fig, axes = new_figure(ncols=2)
    ax_lr, ax_search = axes[0, 0], axes[0, 1]
    models = _by_model(records)
    for i, entry in enumerate(models.values()):
        ax_lr.plot([r for r, _ in entry["probes"]], [res["lr"] for _, res in entry["probes"]], "o-", color=f"C{i}", label=entry["label"])
        for name, marker, text in (("full", "s", "trained full-rank head (A B)"), ("full_plain", "D", "trained full-rank head (W)")):
            if entry[name]:
                ax_lr.plot([entry[name]["rank"]], [entry[name]["lr"]], marker, ms=8, mfc="none", color=f"C{i}", label=text)
    first = next(iter(models.values()), None)
    if first:
        by_rank: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for r, res in first["search"]:
            if res.get("dev_loss") is not None:
                by_rank[r].append((res["lr"], res["dev_loss"]))
        for j, r in enumerate(sorted(by_rank)):
            pts = sorted(by_rank[r])
            ax_search.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{j}", label=f"r={r}")
        values = [v for pts in by_rank.values() for _, v in pts]
        if values and max(values) > min(values) + 4:  # rates that blew up would flatten the rest
            ax_search.set_ylim(min(values) - 0.2, min(values) + 4)
        ax_search.set_title(f"Learning-rate search ({first['label']}; off-axis = diverging)")
    ax_lr.set_xscale("log", base=2)
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("rank r")
    ax_lr.set_ylabel("chosen peak learning rate")
    ax_lr.set_title("Learning rate chosen per rank")
    ax_lr.legend()
    ax_search.set_xscale("log")
    ax_search.set_xlabel("peak learning rate")
    ax_search.set_ylabel("development loss after the short run (nats/token)")
    ax_search.legend()
    return save(fig, path)


def refresh_outputs(run_dir: str | Path) -> dict[str, Any]:
    """Rewrite ``run_dir/rank_probe.csv`` (:func:`lmsat.kinds.rank_probe.run_frame`) and
    ``run_dir/figures/rank_probe_{loss,w_error,lr}.png`` (Fig. 6, 8, 9) from the stored records only.

    Returns ``{"frame": the CSV's frame, "csv": its path, "figures": [Fig. 6, Fig. 8, Fig. 9 paths]}``.
    """
    run_dir = Path(run_dir)
    store = Store(run_dir, readonly=True)
    probes, refs = RankProbeRecord.load(store), RankProbeRefRecord.load(store)  # checks every record's schema
    frame = run_frame(refs + probes)
    atomic_write_csv(run_dir / "rank_probe.csv", frame)
    records = [t.record for t in probes + refs if t.record is not None]
    figures = run_dir / "figures"
    drawn = [
        plot_loss_vs_rank(records, figures / "rank_probe_loss.png"),
        plot_loss_vs_w_error(records, figures / "rank_probe_w_error.png"),
        plot_learning_rates(records, figures / "rank_probe_lr.png"),
    ]
    return {"frame": frame, "csv": run_dir / "rank_probe.csv", "figures": drawn}
