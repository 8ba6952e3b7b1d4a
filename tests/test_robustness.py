"""Robustness probes: bad scans, DICOM folders, recipes, bundles, manifests and output locations fed
to the CLI. Each probe asserts exit code 2, exactly one error line naming the file and the problem,
no traceback, and that the files already there (inputs, cases, bystanders) are byte-identical."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from robustness_support import header_with, nifti_with_pixdim, probe, small_scan, snapshot

from conftest import REPO, SAMPLE_SCANS

from cardiotwin.cases import Case
from cardiotwin.cli import main
from cardiotwin.io.scans import write_labels, write_scan
from cardiotwin.types import LabelMap

# -- scans: silent wrong geometry --------------------------------------------------------------


@pytest.mark.parametrize("pixdim", [(0.0, 2.0, 2.0), (2.0, 2.0, 0.0), (-2.0, 2.0, 2.0), (2.0, float("nan"), 2.0)])
def test_nifti_spacing_zero_negative_nan_refused(tmp_path, capsys, pixdim):
    # ITK reads a 0 pixdim as 1 mm with only a warning: every volume (and the LV mass) would be off.
    scan = nifti_with_pixdim(tmp_path / "scan.nii.gz", pixdim)
    probe(capsys, ["info", scan], protect=[tmp_path], match=r"scan\.nii\.gz: header pixdim .*spacing")


@pytest.mark.parametrize("suffix,old,new", [
    (".nrrd", "space directions: (2,0,0)", "space directions: (0,0,0)"),
    (".nrrd", "space directions: (2,0,0) (0,2,0)", "space directions: (2,0,0) (0,nan,0)"),
    (".mha", "ElementSpacing = 2 2 2", "ElementSpacing = 0 2 2"),
    (".mha", "ElementSpacing = 2 2 2", "ElementSpacing = 2 -2 2"),
])
def test_nrrd_mha_spacing_refused(tmp_path, capsys, suffix, old, new):
    path = header_with(write_scan(small_scan(), tmp_path / f"scan{suffix}"), old, new)
    probe(capsys, ["info", path], protect=[tmp_path], match=rf"scan\{suffix}: header .*spacing")


def _dicom_folder(tmp_path: Path, pixel_spacing: str | None) -> Path:
    import pydicom

    from cardiotwin.io.dicom import write_dicom_series

    scan = small_scan()
    folder = write_dicom_series(scan.voxels, scan.geometry, tmp_path / "dicom")
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        if pixel_spacing is None:
            del ds.PixelSpacing
        else:
            ds.PixelSpacing = pixel_spacing.split("\\")
        ds.save_as(f)
    return folder


@pytest.mark.parametrize("pixel_spacing", ["0\\0", "2\\0", "-2\\2", None])
def test_dicom_pixel_spacing_refused(tmp_path, capsys, pixel_spacing):
    folder = _dicom_folder(tmp_path, pixel_spacing)
    probe(capsys, ["info", folder], protect=[tmp_path], match=r"IM\d+_\d+\.dcm: PixelSpacing")


def _bad_scans(tmp_path: Path) -> dict[str, Path]:
    """A corpus of scans the readers must refuse with one clear line."""
    good = write_scan(small_scan(), tmp_path / "good.nii.gz")
    corpus: dict[str, Path] = {}
    (p := tmp_path / "empty.nii.gz").write_bytes(b"")
    corpus["empty"] = p
    (p := tmp_path / "truncated.nii.gz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    corpus["truncated"] = p
    (p := tmp_path / "noise.nii.gz").write_bytes(gzip.compress(np.random.default_rng(1).bytes(5000)))
    corpus["random bytes"] = p
    (p := tmp_path / "text.nrrd").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 99999 99999 99999\n"
                                             "encoding: raw\n\n")
    corpus["huge sizes, no data"] = p
    (p := tmp_path / "scan.txt").write_text("not an image")
    corpus["unknown suffix"] = p
    nan = small_scan()
    nan.voxels[3, 3, 3] = np.nan
    corpus["NaN voxels"] = write_scan(nan, tmp_path / "nan.mha")
    (d := tmp_path / "not_dicom").mkdir()
    (d / "a.dcm").write_bytes(b"DICM" * 40)
    corpus["folder without DICOM"] = d
    (d := tmp_path / "empty_dir").mkdir()
    corpus["empty folder"] = d
    return corpus


def test_bad_scan_corpus_one_line_each(tmp_path, capsys):
    corpus = _bad_scans(tmp_path / "scans")
    case = tmp_path / "case"
    assert main(["case", "new", str(case), "--scan", str(tmp_path / "scans" / "good.nii.gz")]) == 0
    for kind, path in corpus.items():
        name = path.name
        line = probe(capsys, ["info", path], protect=[tmp_path], match=name)
        assert len(line) < 600, (kind, line)
        # the same scan given to an existing case: refused before the case is touched
        probe(capsys, ["segment", path, "--out", case], protect=[tmp_path], match=name)


# -- recipes: outputs outside the case, alias bombs, unknown and oversized options -------------


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("stage,option", [
    ("segment", "out"), ("mesh", "out"), ("segment", "force"), ("mesh", "export"), ("crt", "out"),
])
def test_recipe_cannot_name_an_output_path(tmp_path, capsys, stage, option):
    victim = tmp_path / "victim.nii.gz"
    victim.write_bytes(b"precious data the recipe must not replace")
    recipe = _recipe(tmp_path, f"stages:\n  - {stage}: {{{option}: {victim}}}\n")
    case = tmp_path / "case"
    probe(capsys, ["run", recipe, "--scan", SAMPLE_SCANS / "mr_sample.nii.gz", "--out", case], protect=[tmp_path],
          match=rf"recipe\.yaml.*{option}")
    assert not case.exists()


ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
stages:
  - mesh: {edge_mm: *c}
"""


def test_recipe_alias_bomb_refused_before_expansion(tmp_path, capsys):
    # three levels expand to 729 strings here; nine would be gigabytes once turned into a string
    recipe = _recipe(tmp_path, ALIAS_BOMB)
    probe(capsys, ["run", recipe, "--scan", SAMPLE_SCANS / "mr_sample.nii.gz", "--out", tmp_path / "case"],
          protect=[tmp_path], match=r"recipe\.yaml: line \d+: YAML aliases")


@pytest.mark.parametrize("body,match", [
    ("stages:\n  - mesh: {edge_mm: '" + "9" * 5000 + " mm'}\n", "characters"),
    ("stages:\n  - mesh: {edge_mm: {nested: 1}}\n", "expected a number, string"),
    ("stages:\n  - mesh: {edge_mm: [" + ", ".join(["1"] * 40) + "]}\n", "a list of 40"),
    ("stages:\n  - mesh: {no_such_option: 1}\n", "unknown option"),
    ("stages:\n  - crt: {uq: {samples: 'many'}}\n", "samples"),
    ("stages:\n  - crt: {report_to: /etc/passwd}\n", "unknown key"),
    ("stages:\n  - mesh: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ("stages: [mesh]\nname: " + "x" * 5000 + "\n", "characters"),
    ("stages: [mesh]\nquestion_of_interest: " + "[" * 500 + "]" * 500 + "\n", "nested|invalid YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("\x00\x01binary", "invalid YAML|not UTF-8"),
])
def test_bad_recipes(tmp_path, capsys, body, match):
    recipe = _recipe(tmp_path, body)
    probe(capsys, ["run", recipe, "--scan", SAMPLE_SCANS / "mr_sample.nii.gz", "--out", tmp_path / "case"],
          protect=[tmp_path], match=r"recipe\.yaml.*(" + match + ")")


# -- bundles: sizes and ranges validated on load ------------------------------------------------


def _bundle(tmp_path: Path, inference: dict | None = None, metadata_patch: dict | None = None) -> Path:
    src = REPO / "models" / "heart_seg_v1"
    dst = tmp_path / "bundle"
    dst.mkdir()
    for f in ("metadata.json", "inference.json", "LICENSE"):
        shutil.copy(src / f, dst / f)
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    if inference is not None:
        data = json.loads((src / "inference.json").read_text())
        data.update(inference)
        (dst / "inference.json").write_text(json.dumps(data))
    if metadata_patch is not None:
        meta = json.loads((src / "metadata.json").read_text())
        meta.update(metadata_patch)
        (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("patch,match", [
    ({"roi_size": 100000}, "roi_size must be an integer in 16-256"),  # would allocate petabytes
    ({"roi_size": "abc"}, "roi_size"),
    ({"roi_size": 1.5}, "roi_size"),
    ({"roi_size": -16}, "roi_size"),
    ({"roi_size": None}, "roi_size"),
    ({"roi_size": True}, "roi_size"),
    ({"roi_size": 40}, "multiple of"),
    ({"sw_batch_size": 10**9}, "sw_batch_size"),
    ({"overlap": 1.0}, "overlap"),
    ({"threads": 0}, "threads"),
    ({"rv_wall_mm": "1e400 mm"}, "rv_wall_mm"),
    ({"mystery": 1}, "unknown key"),
])
def test_bad_bundle_inference_config(tmp_path, capsys, patch, match):
    bundle = _bundle(tmp_path, inference=patch)
    scan = write_scan(small_scan(), tmp_path / "scan.nii.gz")
    probe(capsys, ["segment", scan, "--model", bundle, "--out", tmp_path / "labels.nii.gz"], protect=[tmp_path],
          match=r"bundle .*bundle.*" + match)
    assert not (tmp_path / "labels.nii.gz").exists()


@pytest.mark.parametrize("patch,match", [
    ({"outputs": ["LV"]}, "'outputs' must be a JSON object"),
    ({"network": "unet"}, "'network' must be a JSON object"),
    ({"network": {"type": "unet", "channels": [100000, 200000], "strides": [2], "out_channels": 9}}, "channels"),
    ({"weights": {"file": "../../etc/passwd"}}, "inside the bundle"),
])
def test_bad_bundle_metadata(tmp_path, capsys, patch, match):
    bundle = _bundle(tmp_path, metadata_patch=patch)
    scan = write_scan(small_scan(), tmp_path / "scan.nii.gz")
    probe(capsys, ["segment", scan, "--model", bundle, "--out", tmp_path / "labels.nii.gz"], protect=[tmp_path],
          match=match)


# -- manifests: a damaged case is refused, never a traceback ------------------------------------


@pytest.mark.parametrize("manifest", [
    '{"stages": [], "inputs": {}}',
    '{"stages": {"segment": 5}, "inputs": {}}',
    '{"stages": {}, "inputs": []}',
    '{"stages": {}, "inputs": {"scan": {"sha256": "x"}}}',
    '{"stages": {"mesh": {"status": "ok", "outputs": ["mesh.vtu"]}}, "inputs": {}}',
    '[]',
    '"stages"',
    '{"stages": {}, "case_id": 7}',
    '{"stages": ' * 2000 + '{}' + '}' * 2000,
    '{"stages": {}, "inputs": {}',
    '\xff\xfe not utf-8',
])
def test_damaged_manifest(tmp_path, capsys, manifest):
    case = tmp_path / "case"
    case.mkdir()
    (case / "manifest.json").write_bytes(manifest.encode("latin-1"))
    (case / "segment").mkdir()
    for argv in (["case", "show", case], ["mesh", case], ["view", case, "--export", tmp_path / "r.html"],
                 ["segment", SAMPLE_SCANS / "mr_sample.nii.gz", "--out", case]):
        probe(capsys, argv, protect=[tmp_path], match=r"case/manifest\.json|case: not a case|case/manifest")


def test_manifest_input_outside_the_case(tmp_path, capsys):
    case = Case.create(tmp_path / "case")
    m = json.loads((case.root / "manifest.json").read_text())
    m["inputs"]["scan"] = {"path": "../../../etc/hostname", "sha256": "0"}
    (case.root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(Exception, match="points outside the case"):
        case.input_path("scan")


# -- output locations: checked before any computation -------------------------------------------


def test_unwritable_out_refused_before_computing(tmp_path, capsys, monkeypatch):
    import cardiotwin.viewer.scene as scene

    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder is needed")
    case = Case.create(tmp_path / "case")
    called = []
    monkeypatch.setattr(scene, "build_scene", lambda *a, **k: called.append(1))
    probe(capsys, ["view", case.root, "--export", blocker / "review.html"], protect=[tmp_path],
          match=r"a_file/review\.html: --export cannot be created")
    probe(capsys, ["segment", SAMPLE_SCANS / "mr_sample.nii.gz", "--out", blocker / "labels.nii.gz"],
          protect=[tmp_path], match=r"--out cannot be created")
    probe(capsys, ["run", REPO / "pipelines" / "crt_ct.yaml", "--scan", SAMPLE_SCANS / "ct_sample.nii.gz",
                   "--out", blocker / "sub" / "case"], protect=[tmp_path], match=r"--out cannot be created")
    assert not called


def test_os_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import errno

    import cardiotwin.cases as cases

    case = Case.create(tmp_path / "case")
    scan = write_scan(small_scan(), tmp_path / "scan.nii.gz")
    labels = LabelMap(labels=np.zeros(small_scan().geometry.shape, np.uint8), geometry=small_scan().geometry)
    write_labels(labels, tmp_path / "labels.nii.gz")

    def full_disk(self, name, work, *new_inputs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.root / name))

    monkeypatch.setattr(cases.Case, "_commit", full_disk)
    recipe = _recipe(tmp_path, "stages:\n  - segment: {}\n")
    argv = ["run", recipe, "--scan", scan, "--labels", tmp_path / "labels.nii.gz", "--out", case.root]
    probe(capsys, argv, protect=[tmp_path], match=r"case/segment: No space left on device")
    assert main(["--debug", *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("cardiotwin: error:")


def test_unwritable_case_files_one_line(tmp_path, capsys, monkeypatch):
    """What a read-only case folder does to a process that may not write it (simulated in-process
    for every user, root included): the first write into the case is denied."""
    import builtins
    import errno

    import cardiotwin.cases as cases
    import cardiotwin.io.atomic as atomic

    case = Case.create(tmp_path / "case")
    scan = write_scan(small_scan(), tmp_path / "scan.nii.gz")
    write_labels(LabelMap(labels=np.zeros(small_scan().geometry.shape, np.uint8), geometry=small_scan().geometry),
                 tmp_path / "labels.nii.gz")
    root = str(case.root)

    def denied_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(root) and any(c in mode for c in "wa+x"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(cases, "open", denied_open, raising=False)
    monkeypatch.setattr(atomic, "open", denied_open, raising=False)
    recipe = _recipe(tmp_path, "stages:\n  - segment: {}\n")
    probe(capsys, ["run", recipe, "--scan", scan, "--labels", tmp_path / "labels.nii.gz", "--out", case.root],
          protect=[tmp_path], match=r"case/\.lock: Permission denied")


def test_read_only_case_folder(tmp_path):
    """A case folder the user cannot write: one line, exit 2, nothing changed. Run as an
    unprivileged user (root writes through read-only permissions), in a subprocess."""
    import os
    import subprocess
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ct21-ro-"))
    try:
        os.chmod(base, 0o755)
        case = Case.create(base / "case")
        scan = write_scan(small_scan(), base / "scan.nii.gz")
        labels = LabelMap(labels=np.zeros(small_scan().geometry.shape, np.uint8), geometry=small_scan().geometry)
        write_labels(labels, base / "labels.nii.gz")
        (base / "recipe.yaml").write_text("stages:\n  - segment: {}\n")
        for p in [case.root, *case.root.rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        kwargs = {}
        if os.geteuid() == 0:
            kwargs = {"user": 65534, "group": 65534}
        before = snapshot([base])
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(base), "MPLCONFIGDIR": str(base / "mpl")}
        argv = [sys.executable, "-m", "cardiotwin", "run", str(base / "recipe.yaml"), "--scan", str(scan),
                "--labels", str(base / "labels.nii.gz"), "--out", str(case.root)]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, **kwargs)
        except PermissionError as exc:
            pytest.skip(f"cannot run as an unprivileged user here ({exc})")
        if "Permission denied" in out.stderr and "cardiotwin" not in out.stderr:
            pytest.skip(f"the unprivileged user cannot read the project here: {out.stderr[-300:]}")
        assert out.returncode == 2, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("cardiotwin: error:")]
        assert len(errors) == 1 and ("not writable" in errors[0] or "Permission denied" in errors[0]), out.stderr[-2000:]
        assert snapshot([base]) == before
    finally:
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base, ignore_errors=True)
