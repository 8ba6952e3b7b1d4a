"""Electrophysiology compute core: monodomain and eikonal solvers (torch, CPU/GPU), ionic models,
stimulation, pseudo-ECG. Units: mm, ms, mV, mV/ms for source terms, mm^2/ms for diffusivities."""
