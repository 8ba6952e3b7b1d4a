"""Label map -> tagged biventricular tetrahedral mesh, quality report, analytic verification geometries.

Modules: ``tets`` (topology helpers on plain arrays), ``analytic`` (Niederer slab, Land ellipsoid,
idealised biventricle), ``surface`` (label map -> cleaned labels, base plane, fine smoothed surface),
``remesh`` (uniform remeshing and repair at the target edge), ``volume`` (the mesher's steps:
TetGen / fTetWild tetrahedralisation and tagging), ``optimize`` (sliver removal), ``tetgen_run``
(the tet meshers in a child process), ``quality`` (quality report), ``fem`` (HeartMesh ->
dolfinx mesh and tags under MPI). Nothing heavy is imported here.
"""
