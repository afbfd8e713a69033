"""The HTML run report: one self-contained file next to the catalog (``<out>/report.html``).

It opens from disk with no network: CSS is inline, every figure is a PNG embedded as a
base64 ``data:`` URI, there is no script. What it shows, from the run's ``report.json``, its
catalog, its journal (``progress.json``) and, for a mock release, its truth table:

- the release, row and part counts, counts by ``status`` (and the flags), timings per stage,
  the inference rate and per-part task times;
- provenance: package version, weights sha256, release spec and its digest, store;
- QA figures (matplotlib, Agg). Spectra (LAMOST): the 12+log(O/H) and P(star-forming)
  distributions, ``z_cnn`` against the catalogue redshift, predicted against true
  metallicity and redshift when a truth table is given, and the MZR plot of the run. IFU
  (SAMI, MaNGA): Vmax, V2.2 and inclination distributions, predicted against true when a
  truth table is given, and the TFR plots of the run.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["write_html_report", "REPORT_NAME"]

#: The report's file name inside a run's output folder.
REPORT_NAME = "report.html"
#: Most points drawn in one scatter plot (a random, seeded subset beyond it).
MAX_SCATTER = 50_000

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1180px;
       color: #222; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc;
       padding-bottom: 0.2em; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
.grid { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.9em; background: #f4f4f4; padding: 0 0.25em; word-break: break-all; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.bad { color: #a40000; }
"""


# --------------------------------------------------------------------------- figures
def _png(fig) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _subset(n: int) -> np.ndarray:
    """Indices of at most :data:`MAX_SCATTER` of ``n`` points (seeded: the same report twice)."""
    if n <= MAX_SCATTER:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, MAX_SCATTER, replace=False))


def _scatter_vs(ax, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, one_to_one: bool = True) -> None:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    pick = _subset(x.size)
    ax.scatter(x[pick], y[pick], s=3, alpha=0.4, color="tab:blue", rasterized=True)
    if one_to_one and x.size:
        lo, hi = np.nanmin([x.min(), y.min()]), np.nanmax([x.max(), y.max()])
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _residual_title(name: str, resid: np.ndarray) -> str:
    resid = resid[np.isfinite(resid)]
    if not resid.size:
        return f"{name}: no matched rows"
    nmad = 1.4826 * np.median(np.abs(resid - np.median(resid)))
    return f"{name}: n={resid.size}, bias {np.mean(resid):+.3g}, sigma {np.std(resid):.3g}, NMAD {nmad:.3g}"


def _metallicity_figure(plt, catalog: pd.DataFrame, predicted: np.ndarray) -> tuple[str, bytes]:
    """Distributions of oh12 and P(star-forming) of the predicted rows, split by sf_flag."""
    sf = catalog["sf_flag"].to_numpy(bool)
    oh12 = catalog["oh12"].to_numpy(float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    bins = np.linspace(*np.nanpercentile(oh12, [0.5, 99.5]), 41) if predicted.any() else 20
    a.hist([oh12[predicted & sf], oh12[predicted & ~sf]], bins=bins, stacked=True,
           label=[f"sf_flag ({(predicted & sf).sum()})", f"not sf_flag ({(predicted & ~sf).sum()})"],
           color=["tab:blue", "0.7"])
    a.set_xlabel("12 + log(O/H)")
    a.set_ylabel("spectra")
    a.set_title(f"metallicity of the {predicted.sum()} predicted spectra")
    a.legend(fontsize=8)
    p = catalog["p_starforming"].to_numpy(float)
    b.hist([p[predicted & sf], p[predicted & ~sf]], bins=np.linspace(0, 1, 41), stacked=True,
           label=["sf_flag", "not sf_flag"], color=["tab:blue", "0.7"])
    if predicted.any():  # a log axis needs counts
        b.set_yscale("log")
    b.set_xlabel("P(star-forming)")
    b.set_title("star-forming classifier")
    b.legend(fontsize=8)
    fig.tight_layout()
    return "Distributions of 12 + log(O/H) and P(star-forming) (rows with a prediction)", _png(fig)


def _spectra_figures(catalog: pd.DataFrame, truth: pd.DataFrame | None) -> list[tuple[str, bytes]]:
    """QA figures of a spectra catalog: whichever of metallicity, star-forming class and redshift it holds."""
    plt = _pyplot()
    figures = []
    has_oh12 = "oh12" in catalog
    oh12 = catalog["oh12"].to_numpy(float) if has_oh12 else np.full(len(catalog), np.nan)
    predicted = np.isfinite(oh12)
    if has_oh12 and {"sf_flag", "p_starforming"} <= set(catalog.columns):
        figures.append(_metallicity_figure(plt, catalog, predicted))

    if "z_cnn" in catalog and np.isfinite(catalog["z_cnn"].to_numpy(float)).any():
        fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 4.6))
        z, zc = catalog["z"].to_numpy(float), catalog["z_cnn"].to_numpy(float)
        good = catalog["z_cnn_flag"].to_numpy() == 0
        pick = _subset(len(z))
        ax.scatter(z[pick][~good[pick]], zc[pick][~good[pick]], s=3, color="tab:red", alpha=0.5,
                   label=f"z_cnn_flag != 0 ({int((~good & np.isfinite(zc)).sum())})", rasterized=True)
        ax.scatter(z[pick][good[pick]], zc[pick][good[pick]], s=3, color="tab:blue", alpha=0.4,
                   label=f"z_cnn_flag == 0 ({int(good.sum())})", rasterized=True)
        finite = np.isfinite(z) & np.isfinite(zc)
        if finite.any():
            lo, hi = min(z[finite].min(), zc[finite].min()), max(z[finite].max(), zc[finite].max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel("catalogue z")
        ax.set_ylabel("z_cnn")
        dz = (zc - z) / (1 + z)
        ax.set_title(_residual_title("dz/(1+z), flag 0", dz[good]), fontsize=8)
        ax.legend(fontsize=8)
        finite = np.isfinite(dz)
        if finite.any():
            edge = max(float(np.nanpercentile(np.abs(dz[finite]), 99)), 1e-4)
            hist.hist([np.clip(dz[finite & good], -edge, edge), np.clip(dz[finite & ~good], -edge, edge)],
                      bins=np.linspace(-edge, edge, 41), stacked=True, color=["tab:blue", "tab:red"],
                      label=["z_cnn_flag == 0", "z_cnn_flag != 0"])
            hist.set_yscale("log")
            hist.legend(fontsize=8)
        hist.set_xlabel("(z_cnn - z) / (1 + z), clipped at the 99th percentile")
        hist.set_ylabel("spectra")
        fig.tight_layout()
        figures.append(("Network redshift z_cnn against the survey catalogue's redshift", _png(fig)))

    if truth is not None and "obsid" in truth:
        matched = truth.drop_duplicates("obsid").set_index("obsid").reindex(catalog["obsid"].to_numpy(np.int64))
        panels = []
        if "oh12" in matched and has_oh12:
            true_sf = matched["starforming"].fillna(False).to_numpy(bool) if "starforming" in matched \
                else np.ones(len(matched), bool)
            use = predicted & true_sf
            panels.append(("12 + log(O/H)", matched["oh12"].to_numpy(float)[use], oh12[use],
                           "true star-forming galaxies"))
        z_true = next((c for c in ("z_true", "z") if c in matched), None)
        if z_true is not None and "z_cnn" in catalog:
            good = catalog["z_cnn_flag"].to_numpy() == 0
            panels.append(("z", matched[z_true].to_numpy(float)[good], catalog["z_cnn"].to_numpy(float)[good],
                           "z_cnn_flag == 0"))
        if panels:
            fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6), squeeze=False)
            for ax, (label, x, y, which) in zip(axes[0], panels):
                _scatter_vs(ax, x, y, f"true {label}", f"predicted {label}")
                resid = (y - x) / (1 + x) if label == "z" else y - x
                ax.set_title(_residual_title("dz/(1+z)" if label == "z" else label, resid) + f"\n({which})",
                             fontsize=8)
            fig.tight_layout()
            caption = "Predicted against true values (mock release truth table, matched by obsid)"
            if "p_starforming" in catalog and "starforming" in matched:
                p_sf = catalog["p_starforming"].to_numpy(float)
                label = matched["starforming"].to_numpy()
                known = np.isfinite(p_sf) & pd.notna(label)
                if known.any():
                    hit = (p_sf[known] >= 0.5) == label[known].astype(bool)
                    caption += (f"; P(star-forming) >= 0.5 agrees with the truth label (BPT star-forming and "
                                f"EW(H-alpha) >= 3 A) for {hit.mean():.1%} of {int(known.sum())} rows")
            figures.append((caption, _png(fig)))
        coverage_figure = _coverage_figure(plt, catalog, matched, oh12, predicted)
        if coverage_figure is not None:
            figures.append(coverage_figure)
    return figures


def coverage_curve(residual: np.ndarray, sigma: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Share of rows with ``|residual| < k sigma`` at each ``k`` (finite rows only).

    For honest Gaussian errors it follows ``erf(k / sqrt(2))``: 68.3% at 1, 95.4% at 2.

    Examples
    --------
    >>> coverage_curve(np.array([0.5, -1.5, 2.5, 0.1]), np.ones(4), np.array([1.0, 2.0, 3.0])).tolist()
    [0.5, 0.75, 1.0]
    """
    ok = np.isfinite(residual) & np.isfinite(sigma) & (sigma > 0)
    pull = np.abs(residual[ok]) / sigma[ok]
    if not pull.size:
        return np.full(len(k), np.nan)
    return (pull[None, :] < np.asarray(k, float)[:, None]).mean(axis=1)


def _coverage_figure(plt, catalog: pd.DataFrame, matched: pd.DataFrame, oh12: np.ndarray,
                     predicted: np.ndarray) -> tuple[str, bytes] | None:
    """Share of true values within k quoted errors against k, for oh12_err and z_cnn_err."""
    from math import erf, sqrt

    curves = []
    if "oh12" in matched and "oh12_err" in catalog:
        true_sf = matched["starforming"].fillna(False).to_numpy(bool) if "starforming" in matched \
            else np.ones(len(matched), bool)
        use = predicted & true_sf
        curves.append(("oh12_err (true star-forming)", oh12[use] - matched["oh12"].to_numpy(float)[use],
                       catalog["oh12_err"].to_numpy(float)[use]))
    z_true = next((c for c in ("z_true", "z") if c in matched), None)
    if z_true is not None and "z_cnn_err" in catalog:
        curves.append(("z_cnn_err (every row)", catalog["z_cnn"].to_numpy(float) - matched[z_true].to_numpy(float),
                       catalog["z_cnn_err"].to_numpy(float)))
    k = np.linspace(0.0, 3.5, 71)
    curves = [(name, coverage_curve(r, e, k), coverage_curve(r, e, np.array([1.0, 2.0]))) for name, r, e in curves]
    curves = [c for c in curves if np.isfinite(c[1]).any()]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    ax.plot(k, [erf(v / sqrt(2.0)) for v in k], "k--", lw=1, label="Gaussian: 68.3% at 1, 95.4% at 2")
    for name, curve, at in curves:
        ax.plot(k, curve, lw=1.6, label=f"{name}: {at[0]:.1%} at 1, {at[1]:.1%} at 2")
    ax.set_xlabel("k (multiples of the quoted 1-sigma error)")
    ax.set_ylabel("share of rows with |predicted - true| < k sigma")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return ("Coverage of the quoted errors against the truth table: on the dashed line the error bars mean what "
            "they say; below it they are too small", _png(fig))


_IFU_TRUTH = {"vmax_kms": "vmax_kms", "v22_kms": "v22_kms", "inclination_deg": "inc_deg"}


def _ifu_figures(catalog: pd.DataFrame, truth: pd.DataFrame | None) -> list[tuple[str, bytes]]:
    """QA figures of a kinematic catalog."""
    plt = _pyplot()
    ok = (catalog["status"] == "ok").to_numpy()
    good = ok & (catalog["kin_flag"].to_numpy() == 0)
    figures = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, column, label in zip(axes, ("vmax_kms", "v22_kms", "inclination_deg"),
                                 ("Vmax (km/s)", "V2.2 (km/s)", "inclination (deg)")):
        values = catalog[column].to_numpy(float)
        finite = np.isfinite(values)
        if (ok & finite).any():
            bins = np.linspace(values[ok & finite].min(), values[ok & finite].max(), 26)
            ax.hist([values[good & finite], values[ok & ~good & finite]], bins=bins, stacked=True,
                    color=["tab:blue", "0.7"], label=[f"kin_flag == 0 ({(good & finite).sum()})",
                                                     f"flagged ({(ok & ~good & finite).sum()})"])
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
    axes[0].set_ylabel("galaxies")
    fig.tight_layout()
    figures.append(("Distributions of Vmax, V2.2 and inclination (prepared galaxies)", _png(fig)))

    key = None
    if truth is not None:
        ids = set(catalog["id"].astype(str))
        key = next((c for c in ("catid", "plateifu", "mangaid", "id") if c in truth
                    and ids & set(truth[c].astype(str))), None)
    if key is not None:
        matched = truth.assign(_id=truth[key].astype(str)).drop_duplicates("_id").set_index("_id") \
            .reindex(catalog["id"].astype(str).to_numpy())
        panels = [(c, t) for c, t in _IFU_TRUTH.items() if t in matched]
        if panels:
            fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.2), squeeze=False)
            for ax, (column, true_column) in zip(axes[0], panels):
                x, y = matched[true_column].to_numpy(float)[ok], catalog[column].to_numpy(float)[ok]
                _scatter_vs(ax, x, y, f"true {true_column}", column)
                resid = y - x if column == "inclination_deg" else y / x - 1
                ax.set_title(_residual_title(column + (" (deg)" if column == "inclination_deg" else " (relative)"),
                                             resid), fontsize=8)
            fig.tight_layout()
            figures.append((f"Predicted against true values (mock release truth table, matched by {key})", _png(fig)))
    return figures


# --------------------------------------------------------------------------- HTML pieces
def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(caption: str, png: bytes) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="{_data_uri(png)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


_NUMERIC = re.compile(r"[-+]?[\d.]+(e[-+]?\d+)?%?( / [-+]?[\d.]+)*")


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...], table_id: str = "") -> str:
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)) \
                or (isinstance(value, str) and _NUMERIC.fullmatch(value) is not None)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _read_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix in (".fits", ".fit") or path.name.endswith((".fits.gz", ".fit.gz")):
        from astropy.table import Table

        table = Table.read(path)
        return table[[c for c in table.colnames if len(table[c].shape) <= 1]].to_pandas()
    return pd.read_csv(path)


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 600 else f"{value:.0f}"


# --------------------------------------------------------------------------- the report
def write_html_report(run_dir: str | os.PathLike, report: dict[str, Any] | None = None,
                      truth: str | os.PathLike | None = None, catalog: pd.DataFrame | None = None,
                      path: str | os.PathLike | None = None,
                      figures_from_tasks: list[tuple[str, Any]] | None = None) -> Path:
    """Write the run's self-contained HTML report.

    Parameters
    ----------
    run_dir : path
        The run's output folder (``report.json``, the catalog, ``progress.json``, plots).
    report : dict, optional
        The run report (:meth:`survey_ml.dask.runner.RunReport.to_dict`);
        default: ``<run_dir>/report.json``.
    truth : path, optional
        A truth table (Parquet, CSV or FITS): a mock release's ``truth.parquet``. Spectra
        rows match by ``obsid`` (``oh12``, ``starforming``, ``z_true`` or ``z``), IFU rows by
        ``catid`` / ``plateifu`` (``vmax_kms``, ``v22_kms``, ``inc_deg``); a table with none
        of these (e.g. MPA-JHU masses) adds no truth figure.
    catalog : pandas.DataFrame, optional
        The catalog as the run finished it (IFU: with the sample-wide ``kin_flag`` post cuts
        applied); default: read from the report's ``catalog_dir``.
    path : path, optional
        Where to write (default ``<run_dir>/report.html``).
    figures_from_tasks : list, optional
        ``(caption, matplotlib Figure)`` pairs the run's tasks add (:meth:`survey_ml.tasks.Task.figures`).

    Returns
    -------
    pathlib.Path
        The report file.
    """
    from .._version import __version__
    from ..catalog.parts import read_catalog
    from .progress import JOURNAL_NAME

    run_dir = Path(run_dir)
    if report is None:
        report = json.loads((run_dir / "report.json").read_text())
    if catalog is None:
        catalog = read_catalog(report.get("catalog_dir") or run_dir / "catalog")
    ifu = "vmax_kms" in catalog.columns
    truth_table = _read_table(truth) if truth is not None and Path(truth).is_file() else None
    journal_path = run_dir / JOURNAL_NAME
    journal = json.loads(journal_path.read_text()) if journal_path.is_file() else {}

    name = report.get("release", "?")
    unit = "galaxies" if ifu else "spectra"
    counts = catalog["status"].astype(str).value_counts()
    sections = [f"<h1>{html.escape(str(name))}: {'kinematic' if ifu else 'metallicity and redshift'} catalog</h1>",
                f'<p class="sub">{len(catalog)} {unit}, {report.get("parts_written", "?")} of '
                f'{report.get("parts_total", "?")} parts written by this run; report made '
                f'{time.strftime("%Y-%m-%d %H:%M:%S")} by survey_ml {html.escape(__version__)}</p>']

    # counts
    status_rows = [(status, int(n), f"{n / len(catalog):.1%}") for status, n in counts.items()]
    if ifu:
        from ..tasks.kinematics import FLAG

        kin_flag = catalog["kin_flag"].to_numpy()
        flags = [("kin_flag == 0 (used by the TFR)", int((kin_flag == 0).sum()))]
        flags += [(f"kin_flag & {bit} ({name})", int(((kin_flag & bit) > 0).sum())) for name, bit in FLAG.items()]
    else:
        flags = [("sf_flag (P(star-forming) >= threshold)", int(catalog["sf_flag"].sum()))] if "sf_flag" in catalog \
            else []
        if "z_cnn_flag" in catalog:
            flags.append(("z_cnn_flag == 0 (reliable z_cnn)", int((catalog["z_cnn_flag"] == 0).sum())))
    sections.append('<h2>Counts</h2><div class="grid">'
                    + _table(status_rows, ("status", unit, "share"), "status-counts")
                    + _table([(k, v, f"{v / len(catalog):.1%}") for k, v in flags], ("flag", unit, "share"), "flags")
                    + "</div>")

    # timings
    timings = report.get("timings", {})
    stages = {k: float(v) for k, v in timings.items() if not k.endswith("_per_s")}
    total = sum(stages.values())
    timing_rows = [(stage, _seconds(sec), f"{sec / total:.0%}" if total else "") for stage, sec in stages.items()]
    timing_rows.append(("total", _seconds(total), ""))
    rates = [(k.replace("_per_s", " per second").replace("_", " "), f"{float(v):.1f}")
             for k, v in timings.items() if k.endswith("_per_s")]
    if "inference" in stages and stages["inference"] > 0 and report.get("parts_written"):
        rates.append(("parts per second (inference)", f"{report['parts_written'] / stages['inference']:.3f}"))
    part_times = [p["seconds"] for p in journal.get("parts", {}).values()
                  if isinstance(p.get("seconds"), (int, float)) and np.isfinite(p["seconds"])]
    if part_times:
        q = np.percentile(part_times, [50, 90, 100])
        rates.append(("task time per part: median / 90% / max (s)", f"{q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f}"))
    sections.append('<h2>Timings</h2><div class="grid">' + _table(timing_rows, ("stage", "seconds", "share"), "timings")
                    + (_table(rates, ("rate", "value"), "rates") if rates else "") + "</div>")

    # relations
    relation_rows = []
    mzr = report.get("mzr")
    if not ifu:
        relation_rows.append(("MZR", mzr["summary"] + f" ({mzr['n']} sf_flag galaxies)" if mzr
                              else "not fitted (no stellar masses: pass --masses)"))
    for kind, fit in (report.get("tfr") or {}).items():
        if "slope" in fit:
            text = (f"slope {fit['slope']:.3f} +- {fit['slope_err']:.3f}, intercept {fit['intercept']:.3f} +- "
                    f"{fit['intercept_err']:.3f} (pivot {fit['pivot']}), rms {fit['rms']:.3f}, {fit['n']} galaxies")
        else:
            text = f"not fitted: {fit.get('error')}"
        relation_rows.append((f"TFR {kind}", text))
    if relation_rows:
        sections.append("<h2>Scaling relations</h2>" + _table(relation_rows, ("relation", "fit"), "relations"))

    # figures
    figures = _ifu_figures(catalog, truth_table) if ifu else _spectra_figures(catalog, truth_table)
    figures += [(caption, _png(fig)) for caption, fig in figures_from_tasks or []]
    outputs = report.get("outputs", {})
    for key, caption in (("mzr_plot", "Mass-metallicity relation of the sf_flag galaxies"),
                         ("tfr_reverse", "Reverse Tully-Fisher relation (log V against log M*)"),
                         ("tfr_forward", "Forward Tully-Fisher relation (log M* against log V)"),
                         ("tfr_r_band", "r-band Tully-Fisher relation")):
        if key in outputs and Path(outputs[key]).is_file():
            figures.append((caption, Path(outputs[key]).read_bytes()))
    sections.append("<h2>Quality assessment</h2>" + "".join(_figure(c, png) for c, png in figures))

    # provenance and outputs
    provenance = dict(report.get("provenance", {}))
    provenance.setdefault("version", f"{__version__} (report writer)")
    prov_rows = []
    for key, value in provenance.items():
        if isinstance(value, dict):
            prov_rows += [(f"{key}: {k}", str(v)) for k, v in value.items()]
        else:
            prov_rows.append((key, str(value)))
    if "store" not in provenance and report.get("store"):
        prov_rows.append(("store", str(report["store"])))
    sections.append("<h2>Provenance</h2>" + _table(prov_rows, ("field", "value"), "provenance"))
    out_rows = [(k, str(v)) for k, v in outputs.items()]
    if report.get("dashboard"):
        out_rows.append(("dashboard (while the run lived)", str(report["dashboard"])))
    sections.append("<h2>Outputs</h2>" + _table(out_rows, ("output", "path"), "outputs"))

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(str(name))} run report</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(sections) + "\n</body></html>\n")
    target = Path(path) if path is not None else run_dir / REPORT_NAME
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
