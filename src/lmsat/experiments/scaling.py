"""Scaling-law extrapolation from stored sweep records (docs/methods.md §6, study Fig. 1b).

Chinchilla's form, with N parameters and T tokens seen (T = step x tokens per step)::

    L(N, T) = E + A / N^alpha + B / T^beta          (nats/token)

E = 1.69, B = 410.7, beta = 0.28 stay fixed (Hoffmann et al., 2022); only A and
alpha are fitted, by least squares on the loss, on the *final* checkpoints of
the chosen models (default: those that do not saturate). The study finds
A = 119.09, alpha = 0.246 on Pythia >= 410M.

Underperformance of a checkpoint = L_observed / L(N, T) - 1: the study's small
Pythia models end about 8% above the extrapolation, their best checkpoints 4%.
Compute = 6 N T FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.kinds.scaling_fit import ScalingFitRecord
from lmsat.loading.checkpoints import short_name
from lmsat.store import Store, atomic_write_csv

KIND = "scaling_fit"
FIT_KEY = "fit"
E_FIXED = 1.69
B_FIXED = 410.7
BETA_FIXED = 0.28
STUDY_A = 119.09
STUDY_ALPHA = 0.246


def chinchilla_loss(n_params: Any, tokens: Any, A: float, alpha: float, E: float = E_FIXED, B: float = B_FIXED, beta: float = BETA_FIXED) -> np.ndarray:
    """L(N, T) = E + A / N^alpha + B / T^beta, nats/token (N parameters, T tokens seen, both > 0)."""
    n = np.asarray(n_params, dtype=np.float64)
    t = np.asarray(tokens, dtype=np.float64)
    return E + A / n**alpha + B / t**beta


def underperformance(observed: Any, predicted: Any) -> np.ndarray:
    """L_observed / L_predicted - 1 (0 on the law, 0.08 = 8% above it)."""
    return np.asarray(observed, dtype=np.float64) / np.asarray(predicted, dtype=np.float64) - 1.0


@dataclass
class ScalingFit:
    """Fitted A and alpha with E, B, beta fixed; ``rmse`` of the loss in nats/token."""

    A: float
    alpha: float
    E: float = E_FIXED
    B: float = B_FIXED
    beta: float = BETA_FIXED
    n_points: int = 0
    rmse: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def predict(self, n_params: Any, tokens: Any) -> np.ndarray:
        return chinchilla_loss(n_params, tokens, self.A, self.alpha, self.E, self.B, self.beta)


def fit_scaling_law(
    n_params: Sequence[float], tokens: Sequence[float], losses: Sequence[float], E: float = E_FIXED, B: float = B_FIXED, beta: float = BETA_FIXED
) -> ScalingFit:
    """Least-squares A > 0 and alpha of L = E + A/N^alpha + B/T^beta on points (N_i, T_i, L_i).

    Starts from the exact log-linear solution of log(L - E - B/T^beta) = log A - alpha log N
    (when every left side is positive), then minimises sum (L_pred - L_obs)^2 with scipy.
    Needs at least two distinct N.
    """
    from scipy.optimize import least_squares

    n = np.asarray(n_params, dtype=np.float64)
    t = np.asarray(tokens, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if not (len(n) == len(t) == len(y)):
        raise ValueError("n_params, tokens and losses must have the same length")
    if len(np.unique(n)) < 2:
        raise UserError("the scaling-law fit needs final checkpoints of at least two model sizes; choose more models with --models.")
    if np.any(n <= 0) or np.any(t <= 0) or not np.all(np.isfinite(y)):
        raise UserError("the scaling-law fit needs parameter counts and tokens seen > 0 and finite losses.")
    notes: list[str] = []
    rest = y - E - B / t**beta
    if np.all(rest > 0):
        slope, intercept = np.polyfit(np.log(n), np.log(rest), 1)
        x0 = np.array([intercept, max(-slope, 0.0)])
    else:
        x0 = np.array([np.log(STUDY_A), STUDY_ALPHA])
        bad = int(np.sum(rest <= 0))
        notes.append(
            f"{bad} point(s) lie at or below E + B/T^beta (the law's floor for their tokens): "
            "those models saw too few tokens for the law; A and alpha are not meaningful"
        )

    def residuals(p: np.ndarray) -> np.ndarray:
        return chinchilla_loss(n, t, float(np.exp(p[0])), float(p[1]), E, B, beta) - y

    sol = least_squares(residuals, x0, bounds=([-50.0, -1.0], [50.0, 3.0]), x_scale="jac", xtol=1e-14, ftol=1e-14, gtol=1e-14)
    A, alpha = float(np.exp(sol.x[0])), float(sol.x[1])
    rmse = float(np.sqrt(np.mean(residuals(sol.x) ** 2)))
    return ScalingFit(A=A, alpha=alpha, E=E, B=B, beta=beta, n_points=int(len(y)), rmse=rmse, notes=notes)


def _lookup(values: dict[str, int], model: str) -> int | None:
    for name in (model, short_name(model)):
        if name in values:
            return values[name]
    return values.get("*")


def model_facts(frame: pd.DataFrame, params: dict[str, int] | None = None, tokens_per_step: dict[str, int] | None = None) -> pd.DataFrame:
    """Per model: n_params and tokens_per_step from the records, replaced by the user's values where given."""
    from lmsat.experiments.sweep import check_overrides

    params, tokens_per_step = params or {}, tokens_per_step or {}
    models = list(dict.fromkeys(frame["model"]))
    check_overrides(params, models, "--params")
    check_overrides(tokens_per_step, models, "--tokens-per-step")
    rows = []
    for model in models:
        g = frame[frame["model"] == model]
        n = _lookup(params, model) or _first_int(g["n_params"])
        tps = _lookup(tokens_per_step, model) or _first_int(g["tokens_per_step"])
        rows.append({"model": model, "name": short_name(model), "n_params": n, "tokens_per_step": tps})
    return pd.DataFrame(rows)


def _first_int(series: pd.Series) -> int | None:
    vals = series.dropna()
    return int(vals.iloc[0]) if len(vals) else None


def select_models(sat: pd.DataFrame, models: Sequence[str] | None) -> list[str]:
    """The models to fit: those named (full or short names), else those that do not saturate."""
    known = list(sat["model"])
    if models:
        chosen = []
        for name in models:
            match = [m for m in known if name in (m, short_name(m))]
            if not match:
                raise UserError(f"--models names '{name}', which is not in the sweep; models: {', '.join(short_name(m) for m in known)}.")
            chosen += [m for m in match if m not in chosen]
        return chosen
    if "saturates" not in sat:
        return []
    return [m for m, s in zip(sat["model"], sat["saturates"]) if isinstance(s, (bool, np.bool_)) and not s]


def scaling_table(sat: pd.DataFrame, facts: pd.DataFrame, fit: ScalingFit | None, fitted: Sequence[str]) -> pd.DataFrame:
    """Per model: final and best checkpoints, their predicted loss and underperformance L_obs / L_pred - 1."""
    rows = []
    for _, s in sat.iterrows():
        f = facts[facts["model"] == s["model"]].iloc[0]
        n, tps = f["n_params"], f["tokens_per_step"]
        row: dict[str, Any] = {"model": s["model"], "name": s["name"], "n_params": n, "tokens_per_step": tps, "in_fit": s["model"] in fitted}
        for which in ("final", "best"):
            step, loss = s.get(f"{which}_step"), s.get(f"{which}_loss")
            tokens = int(step) * int(tps) if tps and step is not None and not pd.isna(step) else None
            row[f"{which}_step"] = step
            row[f"{which}_tokens"] = tokens
            row[f"{which}_compute"] = 6.0 * float(n) * tokens if n and tokens else None
            row[f"{which}_loss"] = loss
            pred = float(fit.predict(n, tokens)) if fit is not None and n and tokens else None
            row[f"{which}_predicted"] = pred
            row[f"{which}_underperformance"] = float(underperformance(loss, pred)) if pred is not None and loss is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def run_scaling_fit(
    output: str | Path,
    models: Sequence[str] | None = None,
    params: dict[str, int] | None = None,
    tokens_per_step: dict[str, int] | None = None,
    max_rise: float | None = None,
    write: bool = True,
) -> tuple[ScalingFit, pd.DataFrame, dict[str, Any]]:
    """Fit A, alpha on final checkpoints; write ``scaling_fit.csv`` and the ``scaling_fit`` record ``fit``.

    Returns (fit, per-model table, summary with mean underperformances). Everything
    is checked before anything is written.
    """
    from lmsat.experiments.saturation import DEFAULT_MAX_RISE, checkpoint_table, saturation_table
    from lmsat.experiments.sweep import sweep_records

    output = Path(output)
    max_rise = DEFAULT_MAX_RISE if max_rise is None else max_rise
    frame = checkpoint_table(sweep_records(output))
    sat = saturation_table(frame, max_rise=max_rise)
    facts = model_facts(frame, params, tokens_per_step)
    chosen = select_models(sat, models)
    if len(chosen) < 2:
        raise UserError(
            f"the fit needs at least two models; {len(chosen)} of {len(sat)} qualify "
            f"({'named' if models else f'not saturating, relative rise <= {max_rise:g}'}); choose them with --models."
        )
    points = []
    for model in chosen:
        s = sat[sat["model"] == model].iloc[0]
        f = facts[facts["model"] == model].iloc[0]
        if "final_step" not in s or pd.isna(s["final_step"]):
            raise UserError(f"'{short_name(model)}' has no successfully measured checkpoint; leave it out of --models.")
        if not f["n_params"]:
            raise UserError(f"the parameter count of '{short_name(model)}' is unknown; pass --params {short_name(model)}=N.")
        if not f["tokens_per_step"]:
            raise UserError(f"the tokens per step of '{short_name(model)}' are unknown; pass --tokens-per-step {short_name(model)}=N.")
        if int(s["final_step"]) <= 0:
            raise UserError(f"the last checkpoint of '{short_name(model)}' is step 0 (no tokens seen); the law needs T > 0.")
        points.append((float(f["n_params"]), float(s["final_step"]) * float(f["tokens_per_step"]), float(s["final_loss"])))
    n, t, y = (np.array(v) for v in zip(*points))
    fit = fit_scaling_law(n, t, y)
    table = scaling_table(sat, facts, fit, chosen)
    others = table[~table["in_fit"]]
    base = others if len(others) else table
    summary = {
        "A": fit.A,
        "alpha": fit.alpha,
        "E": fit.E,
        "B": fit.B,
        "beta": fit.beta,
        "rmse": fit.rmse,
        "n_points": fit.n_points,
        "fitted_models": chosen,
        "mean_final_underperformance": _mean(base["final_underperformance"]),
        "mean_best_underperformance": _mean(base["best_underperformance"]),
        "mean_over": "models not in the fit" if len(others) else "all models (every model is in the fit)",
        "notes": fit.notes,
        "models": table.to_dict(orient="records"),
    }
    if write:
        inputs = {
            "models": list(models) if models else None,
            "params": params or {},
            "tokens_per_step": tokens_per_step or {},
            "max_rise": max_rise,
            "fixed": {"E": fit.E, "B": fit.B, "beta": fit.beta},
            "sweep_records": int(len(frame)),
            "lmsat_version": __version__,
        }
        ScalingFitRecord(key=FIT_KEY, inputs=inputs, **_clean(summary)).put(Store(output))
        atomic_write_csv(output / "scaling_fit.csv", table)
    return fit, table, summary


def _mean(series: pd.Series) -> float | None:
    vals = pd.to_numeric(series, errors="coerce").dropna()
    return float(vals.mean()) if len(vals) else None


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    try:
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):
        pass
    return obj


def fit_from_record(summary: dict[str, Any]) -> ScalingFit:
    """A :class:`ScalingFit` from a stored ``scaling_fit`` record's results."""
    return ScalingFit(A=summary["A"], alpha=summary["alpha"], E=summary["E"], B=summary["B"], beta=summary["beta"],
                      n_points=summary.get("n_points", 0), rmse=summary.get("rmse") or float("nan"), notes=summary.get("notes", []))

