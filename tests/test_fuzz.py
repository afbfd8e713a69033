"""The fuzz corpus (issue 17): ~40 kinds of damage beside good files, through a real Dask ingest.

Every damaged file must be flagged with the promised status and a message naming it and the
problem; every good file must be present, ``ok``, and stored exactly as a clean ingest of the
good files alone stores it.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from survey_ml.simulate.fuzz import DAMAGE, account, write_fuzz_corpus
from survey_ml.store import ingest, open_release


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_fixtures, client):
    root = tmp_path_factory.mktemp("fuzz")
    good = sorted((real_fixtures / "lamost").glob("*.fits.gz"))
    manifest = write_fuzz_corpus(root / "corpus", good, copies=1, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns of the zero padding it reads past
        report = ingest(root / "corpus", root / "store", "dr10", client=client, chunk_rows=16)
        clean = ingest(root / "corpus" / "good", root / "clean", "dr10", client=client, chunk_rows=16)
    return manifest, report, clean, root


def test_the_corpus_has_over_thirty_kinds_of_damage():
    assert len({d.name for d in DAMAGE}) == len(DAMAGE) >= 30
    assert len({d.status for d in DAMAGE}) >= 10


def test_every_damaged_file_is_flagged_for_the_right_reason(corpus):
    manifest, report, _, root = corpus
    rows = open_release(root / "store").rows
    figures = account(manifest, rows)
    assert figures["wrong"] == {}, figures["wrong"]
    assert figures["share_right"] == 1.0 and figures["damaged"] == len(DAMAGE) + 2
    assert report.n_new == len(manifest)
    flagged = rows[~rows["status"].isin(["ok", "masked_values"])]
    assert all(m.startswith(f) for f, m in zip(flagged["file"], flagged["message"]))  # every message names its file


def test_no_good_row_is_lost_or_changed(corpus):
    manifest, _, clean, root = corpus
    rows = open_release(root / "store").rows
    assert account(manifest, rows)["good_rows_lost"] == 0
    store, reference = open_release(root / "store"), open_release(root / "clean")
    ours, theirs = store.read_block(0, store.n_rows), reference.read_block(0, reference.n_rows)
    ok = rows[rows["status"] == "ok"]
    where = dict(zip(ok["obsid"], ok["row"]))
    for i, obsid in enumerate(reference.rows["obsid"]):
        for name in theirs:
            np.testing.assert_array_equal(ours[name][where[obsid]], theirs[name][i], err_msg=f"{name} of {obsid}")
