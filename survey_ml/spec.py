"""Release specs: one TOML per release in ``catalogs/`` (reader, paths, cuts, tasks, simulation)."""
from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["load_release_spec", "spec_digest", "SPEC_DIR"]

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
