"""Label map -> tagged biventricular tetrahedral mesh, quality report, analytic verification geometries.

Modules: ``tets`` (topology helpers on plain arrays), ``analytic`` (Niederer slab, Land ellipsoid,
idealised biventricle), ``surface`` (label map -> watertight smoothed surface), ``volume``
(TetGen tetrahedralisation and tagging), ``quality`` (quality report), ``fem`` (HeartMesh ->
dolfinx mesh and tags under MPI). Nothing heavy is imported here.
"""
