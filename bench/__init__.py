"""survey_ml's benchmarks: scripts that print JSON and keep it in bench/results/.

Each ``bench/<name>.py`` runs alone (``python bench/ingest.py --n 1000``); ``python -m bench``
runs them as a suite at one scale (:mod:`bench.suite`), and ``bench/projection.py`` turns the
measured rates into wall times for full survey releases.
"""
