"""The Dask layer: tasks lifted over a release's blocks, lazily (:mod:`.catalog`) or to catalog parts (:mod:`.blocks`)."""
