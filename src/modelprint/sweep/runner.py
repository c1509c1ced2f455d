"""Run every point of a grid once, resumably: a point is done when its ``result.json`` is written.

Each point lives in ``WORK/points/<name>/`` (the name comes from its grid values). Its record is written
atomically, and only after the point finished, so after a kill a completed point is read back and skipped
and a half-written one (directory without a record, or a record for another config or other inputs) is
removed and run again. A point that fails becomes a failed row (tried again on the next run); the others run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

from modelprint.errors import ModelprintError, OutputExistsError
from modelprint.io import check_output_path, make_private_dir, write_json_atomic
from modelprint.sweep.grid import Grid, GridPoint

log = logging.getLogger(__name__)

SETTINGS_FILE = "sweep.json"
RESULT_FILE = "result.json"
POINTS_DIR = "points"

#: ``run(point, directory) -> metrics`` (JSON-serialisable numbers and words, never a secret)
PointFn = Callable[[GridPoint, Path], dict[str, Any]]


@dataclasses.dataclass
class SweepResult:
    """Every point's record, in grid order, and which points ran now and which were read back."""

    work: Path
    kind: str
    axes: dict[str, list[Any]]
    records: list[dict[str, Any]]
    ran: list[str]
    skipped: list[str]


def _config_json(point: GridPoint) -> dict[str, Any]:
    return point.config.model_dump(mode="json")


def prepare_work(work: Path, kind: str, inputs: dict[str, Any], overwrite: bool) -> None:
    """Create ``work`` or check that it holds a sweep of the same kind over the same inputs (so resuming is sound).

    The grid itself may change between runs: points are matched by their whole config, so new values add points.
    """
    work = Path(work)
    check_output_path(work, overwrite, directory=True, reuse=True)
    stored = work / SETTINGS_FILE
    if work.exists() and overwrite:
        shutil.rmtree(work)
    elif work.exists() and any(work.iterdir()):
        if not stored.is_file():
            raise OutputExistsError(f"'{work}' exists and is not a sweep (pass --overwrite to replace it)")
        old = json.loads(stored.read_text())
        if old.get("kind") != kind or old.get("inputs") != inputs:
            changed = sorted(k for k in set(old.get("inputs", {})) | set(inputs)
                             if old.get("inputs", {}).get(k) != inputs.get(k)) or ["kind"]
            raise OutputExistsError(f"'{work}' holds a sweep over other inputs ({', '.join(changed)} differ); use "
                                    "another --work or pass --overwrite")
    make_private_dir(work)
    write_json_atomic(stored, {"kind": kind, "inputs": inputs})


def done_record(pdir: Path, point: GridPoint, inputs: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The point's finished record, or None when it has to run (none, failed, or made for another config)."""
    path = pdir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("status") != "ok" or rec.get("config") != _config_json(point) or rec.get("inputs") != inputs:
        return None
    return rec


def run_grid(grid: Grid, work: Path, kind: str, inputs: dict[str, Any], run: PointFn) -> SweepResult:
    """Run (or read back) every point of ``grid`` under ``work``; ``prepare_work`` must have been called."""
    records, ran, skipped = [], [], []
    for i, point in enumerate(grid.points, 1):
        pdir = Path(work) / POINTS_DIR / point.name
        rec = done_record(pdir, point, inputs)
        if rec is not None:
            log.info("point %d/%d %s: done before, read back", i, len(grid.points), point.name)
            records.append(rec)
            skipped.append(point.name)
            continue
        if pdir.exists():  # a killed or failed run's leftovers: start the point afresh
            shutil.rmtree(pdir)
        make_private_dir(pdir)
        log.info("point %d/%d %s", i, len(grid.points), point.name)
        start = time.perf_counter()
        rec = {"point": point.name, "values": point.values, "config": _config_json(point), "inputs": inputs}
        try:
            rec.update(status="ok", metrics=run(point, pdir))
        except ModelprintError as exc:
            rec.update(status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # noqa: BLE001  (one failed point must not stop the sweep; no message: it may quote a key)
            log.debug("point %s failed", point.name, exc_info=True)
            rec.update(status="failed", error=f"unexpected {type(exc).__name__} (run with -vv for the traceback)")
        if rec["status"] != "ok":
            log.warning("point %s failed: %s", point.name, rec["error"])
        rec["seconds"] = time.perf_counter() - start
        write_json_atomic(pdir / RESULT_FILE, rec)
        records.append(rec)
        ran.append(point.name)
    return SweepResult(Path(work), kind, grid.axes, records, ran, skipped)
