"""What a run shows: the self-contained HTML report (:mod:`.html`) and the run's progress on
disk, read by ``survey-ml status`` (:mod:`.progress`)."""
