"""CLI basics: every listed command exists and parses, `info --json` reports geometry exactly."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import numpy as np

from conftest import SAMPLE_SCANS

from cardiotwin.cli import COMMANDS, build_parser, main
from cardiotwin.io.scans import read_scan


def test_every_command_has_help():
    parser = build_parser()
    text = parser.format_help()
    for name in COMMANDS:
        module = importlib.import_module(f"cardiotwin.commands.{name}")
        assert module.NAME in text and callable(module.run)
    assert main([]) == 2  # no command: help and a usage exit code


def test_info_json_matches_reader(capsys):
    path = SAMPLE_SCANS / "mr_sample.nii.gz"
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    scan = read_scan(path)
    assert info["shape"] == list(scan.geometry.shape)
    np.testing.assert_allclose(info["spacing_mm"], scan.geometry.spacing_mm)
    np.testing.assert_allclose(info["origin_mm"], scan.geometry.origin_mm)
    np.testing.assert_allclose(np.ravel(info["direction"]), scan.geometry.direction)
    assert info["modality"] == "MR" and info["sha256"] == scan.sha256
    assert info["intensity"]["min"] <= info["intensity"]["median"] <= info["intensity"]["max"]


def test_console_script_and_version():
    out = subprocess.run([sys.executable, "-m", "cardiotwin", "version", "--json"], capture_output=True, text=True, check=True)
    versions = json.loads(out.stdout)
    assert versions["cardiotwin"] and versions["python"].startswith("3.12")
