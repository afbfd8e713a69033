"""The strong-line metallicity baseline as a catalog task: N2 and O3N2 (PP04) from fitted lines.

No network: Gaussian fits of Hbeta, [OIII] 5007, Halpha and [NII] 6584 at the catalogue
redshift, turned into 12 + log(O/H) with the Pettini & Pagel (2004) calibrations
(:func:`survey_ml.core.strong_lines.strong_line_metallicity`). Add ``[tasks.strong_lines]`` to a
release spec and ``run-catalog`` writes these columns beside the network's, so the two can
be compared row by row on the same spectra.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.strong_lines import BASELINE_COLUMNS, strong_line_metallicity
from .base import Batch, Block, Column, Task

__all__ = ["StrongLines"]

_FLUX = "1e-17 erg / (s cm2)"


@dataclass(frozen=True)
class StrongLineOptions:
    """``[tasks.strong_lines]``: the fit and the calibrations' S/N floor."""

    r_instrument: float = 1800.0   #: resolving power lambda / FWHM (LAMOST LRS: 1800)
    method: str = "fast"           #: "fast" (vectorised block fit) or "exact" (scipy, row by row)
    min_snr: float = 3.0           #: lowest line S/N the calibrations use

    def __post_init__(self) -> None:
        if self.method not in ("fast", "exact"):
            raise ValueError(f"method must be 'fast' or 'exact', not {self.method!r}")


class StrongLines(Task):
    """Line fluxes and PP04 N2 / O3N2 metallicities for every selected spectrum."""

    name = "strong_lines"
    input_kind = "spectra"
    Options = StrongLineOptions
    needs_weights = False
    columns = (
        *(Column(line + err, "float64", _FLUX, f"{label} line flux{' 1-sigma error' if err else ''} (Gaussian fit)",
                 ucd=("stat.error;" if err else "") + "phys.flux;spect.line")
          for line, label in (("hb", "Hbeta"), ("oiii5007", "[OIII] 5007"), ("ha", "Halpha"),
                              ("nii6584", "[NII] 6584")) for err in ("", "_err")),
        Column("oh12_n2", "float64", "dex", "12 + log(O/H) from N2 (Pettini & Pagel 2004)", ucd="phys.abund.Z"),
        Column("oh12_o3n2", "float64", "dex", "12 + log(O/H) from O3N2 (Pettini & Pagel 2004)", ucd="phys.abund.Z"),
        Column("baseline_status", "string", "", "ok, partial, or why no metallicity (bad_redshift, low_snr, ...)",
               fill="not_fitted", ucd="meta.code.qual"),
        Column("baseline_message", "string", "", "why a value is missing (empty when nothing is)", ucd="meta.note"),
    )

    def prepare(self, block: Block, rows: np.ndarray) -> Batch:
        a = block.arrays
        return Batch(rows, {"wavelength": block.wavelength(), "flux": a["flux"][rows], "ivar": a["ivar"][rows],
                            "mask": a["mask"][rows], "z": block.rows["z"].to_numpy(float)[rows]})

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        frame = strong_line_metallicity(**batch.inputs, r_instrument=self.options.r_instrument,
                                        method=self.options.method, min_snr=self.options.min_snr)
        return {name: frame[name].to_numpy() for name in BASELINE_COLUMNS}

    def figures(self, catalog) -> list:
        """O3N2 against N2 metallicity of the rows with both (and against the network's oh12 when it ran)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n2, o3n2 = catalog["oh12_n2"].to_numpy(float), catalog["oh12_o3n2"].to_numpy(float)
        panels = [("12 + log(O/H), N2 (PP04)", n2)]
        if "oh12" in catalog:
            panels.append(("12 + log(O/H), network", catalog["oh12"].to_numpy(float)))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
        for ax, (label, x) in zip(axes[0], panels):
            both = np.isfinite(x) & np.isfinite(o3n2)
            ax.scatter(x[both], o3n2[both], s=4, alpha=0.5, rasterized=True)
            if both.any():
                lo, hi = np.nanmin([x[both].min(), o3n2[both].min()]), np.nanmax([x[both].max(), o3n2[both].max()])
                ax.plot([lo, hi], [lo, hi], "k--", lw=1)
            ax.set_xlabel(label)
            ax.set_ylabel("12 + log(O/H), O3N2 (PP04)")
            ax.set_title(f"{int(both.sum())} rows with both")
        fig.tight_layout()
        return [("Strong-line baseline: O3N2 against N2 (and the network) metallicities", fig)]

