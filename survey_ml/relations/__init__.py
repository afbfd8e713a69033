"""Scaling relations a catalog supports: the mass-metallicity relation (:mod:`.mzr`), the
Tully-Fisher relations with asymmetric drift (:mod:`.tfr`), and their fits on a finished
catalog (:mod:`.catalog`)."""
