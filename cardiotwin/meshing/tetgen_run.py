"""Run TetGen (or fTetWild) in a child process inside a private temporary folder.

TetGen writes ``_skipped.face`` / ``_skipped.node`` into the current working directory when it
skips self-intersecting surface facets, and can abort the whole process on some broken inputs.
Running it in a child process whose working directory is a temporary folder keeps the caller's
folder clean, turns a crash into a ``StageError``, and lets us read the skipped-facet count from
those files before the folder is removed.

fTetWild (Hu et al. 2020, through the maintained ``pytetwild`` wheel) tetrahedralises surfaces
with self-intersections, gaps and slivers within a small envelope of the input; it runs the same
way, so its time limit also holds.

``python -m cardiotwin.meshing.tetgen_run IN.npz OUT.npz`` is the child's entry point; the parent
API is ``run_tetgen`` and ``run_ftetwild``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cardiotwin.errors import StageError

log = logging.getLogger(__name__)

_INPUT = "surface.npz"


class SurfaceRejectedError(StageError):
    """TetGen could not mesh the input surface as given (a coarser or smoother surface may fail
    differently, so the mesher retries with its fallbacks)."""


class SelfIntersectionError(SurfaceRejectedError):
    """TetGen found (and skipped) self-intersecting facets in the input surface."""

    def __init__(self, message: str, *, n_facets: int) -> None:
        super().__init__(message)
        self.n_facets = n_facets

_OUTPUT = "tets.npz"


class MesherTimeoutError(StageError):
    """The tetrahedral mesher did not finish within the time left to the mesh."""


def run_ftetwild(
    points: np.ndarray, triangles: np.ndarray, *, edge_mm: float, epsilon: float = 1e-3, timeout_s: float = 600.0,
    source: str = "label map",
) -> tuple[np.ndarray, np.ndarray]:
    """Tetrahedralise a surface with fTetWild in a child process: target edge ``edge_mm``, envelope
    ``epsilon`` x the bounding-box diagonal. Returns (nodes (P, 3), tets (M, 4)); StageError as
    ``run_tetgen``."""
    return run_tetgen(points, triangles, options={"mesher": "ftetwild", "edge_length_abs": float(edge_mm),
                                                  "epsilon": float(epsilon)}, timeout_s=timeout_s, source=source)


def run_tetgen(
    points: np.ndarray, triangles: np.ndarray, *, options: dict[str, float | int | bool | str],
    timeout_s: float = 600.0, source: str = "label map",
) -> tuple[np.ndarray, np.ndarray]:
    """Tetrahedralise a closed triangulated surface with TetGen in a child process.

    points: (N, 3) mm; triangles: (F, 3) vertex indices; ``options``: keyword arguments of
    ``tetgen.TetGen.tetrahedralize``. Returns (nodes (P, 3) float64, tets (M, 4) int64). Raises
    StageError naming ``source`` and the cause (a crash, a timeout, no tetrahedra), or its subclass
    SelfIntersectionError when TetGen skipped self-intersecting facets.
    """
    name = "fTetWild" if options.get("mesher") == "ftetwild" else "TetGen"
    with tempfile.TemporaryDirectory(prefix="cardiotwin-tetgen-") as tmp:
        folder = Path(tmp)
        np.savez(folder / _INPUT, points=np.asarray(points, dtype=np.float64),
                 triangles=np.asarray(triangles, dtype=np.int32), options=json.dumps(options))
        env = dict(os.environ)
        # The child must import this package the same way the parent did.
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "cardiotwin.meshing.tetgen_run", _INPUT, _OUTPUT],
                cwd=folder, env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise MesherTimeoutError(f"{source}: {name} did not finish within {timeout_s:.0f} s (the time left to this "
                                     "mesh); mesher failed") from exc
        skipped = _count_skipped(folder / "_skipped.face")
        if proc.returncode != 0 or not (folder / _OUTPUT).is_file():
            detail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
            if skipped:
                raise SelfIntersectionError(
                    f"{source}: mesher failed: the surface intersects itself ({skipped} facets skipped by TetGen)",
                    n_facets=skipped,
                )
            if proc.returncode < 0:
                raise SurfaceRejectedError(f"{source}: mesher failed: {name} crashed (signal {-proc.returncode})")
            # Exit 3: TetGen raised an error on this input (e.g. "Internal TetGen error within
            # split_subface" at nearly degenerate surface triangles).
            raise SurfaceRejectedError(f"{source}: mesher failed: {name} failed (exit {proc.returncode}): {detail}")
        with np.load(folder / _OUTPUT) as data:
            nodes = np.asarray(data["nodes"], dtype=np.float64)
            tets = np.asarray(data["tets"], dtype=np.int64)
    if tets.size == 0:
        raise SurfaceRejectedError(f"{source}: mesher failed: {name} produced no tetrahedra from the myocardial surface")
    return nodes, tets


def _count_skipped(path: Path) -> int:
    """Number of facets listed in a TetGen ``_skipped.face`` file (first token), 0 if absent."""
    if not path.is_file():
        return 0
    try:
        return int(path.read_text().split()[0])
    except (IndexError, ValueError):
        return 1


def _child(input_name: str, output_name: str) -> int:
    with np.load(input_name) as data:
        points = data["points"]
        triangles = data["triangles"]
        options = json.loads(str(data["options"]))
    try:
        if options.pop("mesher", "tetgen") == "ftetwild":
            import pytetwild

            # Threads as the caller allows (OMP_NUM_THREADS), all cores otherwise.
            threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
            nodes, elems = pytetwild.tetrahedralize(points, triangles, num_threads=threads, **options)
        else:
            import tetgen

            nodes, elems, *_ = tetgen.TetGen(points, triangles).tetrahedralize(**options)
    except RuntimeError as exc:
        sys.stderr.write(f"{exc}\n")
        return 3
    np.savez(output_name, nodes=np.asarray(nodes, dtype=np.float64), tets=np.asarray(elems, dtype=np.int64))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1], sys.argv[2]))
