"""Catalog tasks: the :class:`Task` contract, the registry, and survey_ml's own tasks.

Each task is one module (:mod:`~survey_ml.tasks.metallicity`, :mod:`~survey_ml.tasks.sfclass`,
:mod:`~survey_ml.tasks.redshift`, :mod:`~survey_ml.tasks.strong_lines`,
:mod:`~survey_ml.tasks.kinematics`); other packages add theirs through the ``survey_ml.tasks``
entry-point group (:mod:`~survey_ml.tasks.registry`).
"""
from .base import Batch, Block, Column, Task
from .registry import available_tasks, get_task, register

__all__ = ["Task", "Column", "Block", "Batch", "register", "get_task", "available_tasks"]
