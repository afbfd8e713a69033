"""Release specs: one TOML per release in ``catalogs/`` (reader, paths, cuts, tasks, simulation)."""
from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["SpecError", "load_release_spec", "validate_spec", "spec_digest", "SPEC_DIR", "SPEC_KEYS"]

class SpecError(ValueError):
    """A release spec that cannot be used as written (the message names the file and the key)."""


#: The release specs shipped with survey_ml (``catalogs/`` at the top of the repository).
SPEC_DIR = Path(__file__).resolve().parent / "catalogs"


def load_release_spec(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Read a release spec by name (``"dr10"``) or from a TOML file path.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A shipped release name, or the path of a user's own TOML.

    Returns
    -------
    dict
        The parsed TOML, with ``spec["release"]["spec_path"]`` set to where it was read.

    Examples
    --------
    >>> spec = load_release_spec("dr10")
    >>> spec["release"]["reader"], spec["cuts"]["z_max"]
    ('lamost', 0.3)
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = SPEC_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in SPEC_DIR.glob("*.toml"))
        raise FileNotFoundError(f"no release spec {name_or_path!r} (shipped: {', '.join(known)})")
    with path.open("rb") as fh:
        spec = tomllib.load(fh)
    spec.setdefault("release", {})["spec_path"] = str(path)
    validate_spec(spec)
    return spec


#: What a key's value must be: a TOML string, integer, number (integer or float) or a pair of numbers.
TEXT, INTEGER, NUMBER, RANGE = "a string", "an integer", "a number", "a pair of numbers [low, high]"

#: The tables of a release spec, the keys each takes and what each value must be (None: free-form,
#: read by its own module: ``[simulate]`` by survey_ml.simulate, ``[cluster.<kind>]`` by
#: survey_ml.cluster.hpc, ``[tasks.<name>]`` by each task's ``Options``, a frozen dataclass).
SPEC_KEYS: dict[str, dict[str, str] | None] = {
    "release": {"name": TEXT, "kind": TEXT, "survey": TEXT, "description": TEXT, "reader": TEXT, "catalogue": TEXT,
                "spectra": TEXT, "spec_path": TEXT},
    "ingest": {"chunk_rows": INTEGER, "cube_window": RANGE, "wave_chunk": INTEGER, "max_decompressed_mb": NUMBER,
               "window": RANGE, "segment_pixels": INTEGER},
    "cuts": {"z_min": NUMBER, "z_max": NUMBER, "snr_r_min": NUMBER},
    "prepare": {"min_snr": NUMBER, "min_good": INTEGER, "min_vmax": NUMBER},
    "mzr": {"x_range": RANGE, "match_radius_arcsec": NUMBER},
    "outputs": {"catalog": TEXT, "fits": TEXT, "votable": TEXT, "hats": TEXT, "hats_margin_arcsec": NUMBER},
    "tasks": None, "simulate": None, "cluster": None,
}


def _is(value: Any, kind: str) -> bool:
    """Whether ``value`` (as TOML gives it) is ``kind`` (booleans are not numbers)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == TEXT:
        return isinstance(value, str)
    if kind == INTEGER:
        return number and float(value).is_integer()
    if kind == NUMBER:
        return number
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is(v, NUMBER) for v in value) \
        and value[0] < value[1]


def validate_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Check a release spec's tables, keys and values: a typo or a wrong type is an error naming the key and the file.

    The ``[tasks.<name>]`` tables are checked by the tasks themselves
    (:func:`survey_ml.tasks.registry.tasks_from_spec`).

    Examples
    --------
    >>> validate_spec({"release": {"name": "x", "spec_path": "my.toml"}, "cuts": {"z_mx": 0.3}})
    Traceback (most recent call last):
    ...
    survey_ml.config.SpecError: my.toml: unknown key 'z_mx' in [cuts] (known: snr_r_min, z_max, z_min)
    >>> validate_spec({"release": {"name": "x", "spec_path": "my.toml"}, "cuts": {"z_max": "0.3"}})
    Traceback (most recent call last):
    ...
    survey_ml.config.SpecError: my.toml: [cuts] z_max must be a number, not '0.3'
    """
    where = spec.get("release", {}).get("spec_path", "<spec>")
    for table, value in spec.items():
        if table not in SPEC_KEYS:
            raise SpecError(f"{where}: unknown table [{table}] (known: {', '.join(sorted(SPEC_KEYS))})")
        known = SPEC_KEYS[table]
        if known is None:
            continue
        if not isinstance(value, dict):
            raise SpecError(f"{where}: [{table}] must be a table, not {value!r}")
        for key, item in value.items():
            if key not in known:
                raise SpecError(f"{where}: unknown key {key!r} in [{table}] (known: {', '.join(sorted(known))})")
            if not _is(item, known[key]):
                raise SpecError(f"{where}: [{table}] {key} must be {known[key]}, not {item!r}")
    if "name" not in spec.get("release", {}):
        raise SpecError(f"{where}: [release] needs name = \"...\"")
    for name, table in spec.get("tasks", {}).items():
        if not isinstance(table, dict):
            raise SpecError(f"{where}: [tasks.{name}] must be a table, not {table!r}")
    return spec


def spec_digest(spec: dict[str, Any], tables: tuple[str, ...]) -> str:
    """A short hash of the spec ``tables`` a catalog's values depend on (its parts' provenance).

    A re-run keeps a part only if this is unchanged, so editing e.g. ``[cuts]`` redoes the
    catalog while editing ``[outputs]`` does not.

    Examples
    --------
    >>> spec_digest({"cuts": {"z_max": 0.3}}, ("cuts", "tasks")) == spec_digest({"cuts": {"z_max": 0.3}, "outputs": {}},
    ...                                                                          ("cuts", "tasks"))
    True
    """
    keep = {k: spec.get(k) for k in tables}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]
