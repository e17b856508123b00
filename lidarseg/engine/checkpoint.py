"""Checkpoints: one file per checkpoint holding everything needed to continue or to infer.

Keys: format, version, config (resolved), model, optimizer, scheduler, scaler, rng, epoch (epochs completed),
step (optimizer steps done), batch_in_epoch (batches of epoch `epoch` already consumed; 0 at an epoch boundary),
best_metric, best_epoch, metrics (last validation). Written through a temporary file in the same directory and
`os.replace`, so a killed process never leaves a truncated checkpoint under the final name.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..data.io import atomic_write
from ..errors import DataError

FORMAT = "lidarseg-checkpoint"
VERSION = 1


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


#: temporary files of `atomic_write` for the run's checkpoints: .last.pt.XXXXXXXX.tmp, .best.pt.XXXXXXXX.tmp
_TEMPORARY = re.compile(r"^\.(last|best)\.pt\.[A-Za-z0-9_]+\.tmp$")


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Delete checkpoint temporaries a killed write left in `run_dir` (only ours: `_TEMPORARY`); returns them. Call
    it before this run writes a checkpoint (a second writer into the same run directory is refused anyway)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    gone = []
    for p in sorted(run_dir.iterdir()):
        if _TEMPORARY.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def save_checkpoint(path, state: dict) -> Path:
    """Atomically write `state` (plus format/version tags) to `path`. A failed write (disk full, permissions) is a
    DataError naming the file; the previous checkpoint under that name is left as it was."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    path = Path(path)
    try:
        return atomic_write(path, lambda f: torch.save(payload, f), fsync=True)
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0][:200]
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written before"
        raise DataError(f"could not write checkpoint {path}: {reason}; {kept} (check the free disk space and the "
                        "permissions)") from None


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`; DataError if missing, truncated or not ours."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: the file also holds numpy RNG state and the config; only load files you trust.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise DataError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path} is not a lidarseg checkpoint (no '{FORMAT}' tag); "
                        "expected a file written by `lidarseg train`")
    if state.get("version", 0) > VERSION:
        raise DataError(f"checkpoint {path} has format version {state['version']}; this lidarseg reads <= {VERSION}")
    for key in ("config", "model"):
        if key not in state:
            raise DataError(f"checkpoint {path} lacks '{key}'")
    return state


def find_resume(run_dir, resume: str | None) -> Path | None:
    """`--resume auto` -> run_dir/last.pt if present (else None: a fresh start); a path -> that path."""
    if not resume:
        return None
    if resume == "auto":
        last = Path(run_dir) / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise DataError(f"--resume {resume}: checkpoint not found")
    return path
