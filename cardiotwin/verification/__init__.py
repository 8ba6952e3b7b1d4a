"""Code verification (registered checks against known answers, their results store) and the
calculation-verification studies on a patient (mesh and time-step refinement with GCI).

Everything here writes JSON into the case (``verify/verification.json``,
``calcver/calcver.json``) or a standalone file; ``cardiotwin.report`` only reads it.
"""
