"""Virtual CRT on the twin: LBBB baseline, lead candidates, pacing protocols, sweeps, ranking, UQ.

Modules: ``conduction`` (conduction parameters and the activation-solver protocol), ``baseline``
(LBBB sources, scar), ``candidates`` (RV / LV lead sites), ``protocols`` (AV / VV timing and
fusion with intrinsic conduction), ``metrics`` (TAT, LVAT, t90, QRS), ``ranking`` (order and
TARGET-trial concordance), ``uq`` (quasi-Monte Carlo inputs, probability of being best, CIs,
sensitivity indices), ``sweep`` (idempotent Dask tasks that write into the case),
``response`` (electromechanics of the best candidates), ``outputs`` (JSON, CSV, plots) and
``stage`` (the ``crt`` stage function).
"""
