"""Figures of the rank probe, drawn from stored records only (study Fig. 6, 8, 9).

* :func:`plot_loss_vs_rank` (Fig. 6): held-out loss and top-1 accuracy vs the
  head's rank r (log x), one line per model; the trained full-rank head as a
  square at r = min(V, d), the model's own head as a dashed line.
* :func:`plot_loss_vs_w_error` (Fig. 8): probe loss at r vs W-error(r) of the
  model's own head, each point labelled with r.
* :func:`plot_learning_rates` (Fig. 9): the learning rate the search chose vs r,
  and the search's development loss vs learning rate, one line per rank.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lmsat.figures.style import model_label, new_figure, save
from lmsat.store import Record


def _by_model(records: list[Record]) -> dict[str, dict[str, Any]]:
    """{model key: {"label", "probes": [(rank, results)], "full": results (A B at r = min(V, d)),
    "full_plain": results (one matrix W), "own": results, "search": [(rank, results)]}}."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"probes": [], "full": None, "full_plain": None, "own": None, "search": []})
    for rec in records:
        key = rec.inputs.get("model_key", rec.key.split("|")[0])
        entry = out[key]
        entry["label"] = model_label(rec.inputs)
        res = rec.results
        if res.get("head") == "own":
            entry["own"] = res
        elif res.get("stage") == "final" and rec.inputs.get("head") == "full-rank":
            entry["full_plain" if res.get("parametrization") == "W" else "full"] = res
        elif res.get("stage") == "final":
            entry["probes"].append((int(rec.inputs["rank"]), res))
        elif res.get("stage") == "search" and rec.inputs.get("head") == "low-rank":
            entry["search"].append((int(rec.inputs["rank"]), res))
    for entry in out.values():
        entry["probes"].sort(key=lambda x: x[0])
    return dict(out)


def plot_loss_vs_rank(records: list[Record], path: str | Path) -> Path:
    """Held-out loss and top-1 accuracy vs rank r, log-2 x axis, one line per model (study Fig. 6)."""
    fig, axes = new_figure(ncols=2)
    ax_loss, ax_acc = axes[0, 0], axes[0, 1]
    for i, entry in enumerate(_by_model(records).values()):
        color = f"C{i}"
        probes = [(r, res) for r, res in entry["probes"] if res.get("loss") is not None]
        ranks = [r for r, _ in probes]
        ax_loss.plot(ranks, [res["loss"] for _, res in probes], "o-", color=color, label=f"{entry['label']} (A B, rank r)")
        ax_acc.plot(ranks, [res["accuracy"] for _, res in probes], "o-", color=color, label=f"{entry['label']} (A B, rank r)")
        for name, marker, text in (("full", "s", "trained full-rank head (A B)"), ("full_plain", "D", "trained full-rank head (W)")):
            full = entry[name]
            if full and full.get("loss") is not None:
                ax_loss.plot([full["rank"]], [full["loss"]], marker, ms=8, color=color, mfc="none", label=text)
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
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{i}", label=entry["label"])
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
