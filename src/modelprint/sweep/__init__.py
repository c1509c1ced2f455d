"""sweep: run a recipe or stress configuration over a grid of parameter values, resumably, into one table and plot.

``load_grid(kind, yaml, sets)`` reads ``{grid: [...]}`` leaves and ``key=[a,b]`` pairs into validated points;
``sweep_embed`` (embed → verify per point) and ``sweep_stress`` (the stress suite per point) run them under a
work directory, skipping points whose record exists, and write ``sweep.md|csv|jsonl|png`` there.
"""
from modelprint.sweep.grid import Grid, GridPoint, expand_grid, point_name
from modelprint.sweep.report import write_sweep_report
from modelprint.sweep.runner import SweepResult, run_grid
from modelprint.sweep.stages import StressSweepConfig, load_grid, sweep_embed, sweep_stress

__all__ = ["Grid", "GridPoint", "expand_grid", "point_name", "load_grid", "sweep_embed", "sweep_stress",
           "StressSweepConfig", "SweepResult", "run_grid", "write_sweep_report"]
