"""The shipped sample scans: present, small, unchanged (sha256), labels on the scan's grid."""

from __future__ import annotations

import hashlib

from conftest import SAMPLE_SCANS

from cardiotwin.io.scans import read_labels, read_scan

CORE = ("ct_sample.nii.gz", "ct_sample_labels.nii.gz", "mr_sample.nii.gz", "mr_sample_labels.nii.gz")


def test_checksums_match():
    listed = {}
    for line in (SAMPLE_SCANS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    assert set(CORE) <= set(listed)
    for name, digest in listed.items():
        path = SAMPLE_SCANS / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{name} changed"
        assert path.stat().st_size < 5 * 2**20, f"{name} is over 5 MB"


def test_samples_read_with_labels_on_their_grid():
    for stem, modality in (("ct_sample", "CT"), ("mr_sample", "MR")):
        scan = read_scan(SAMPLE_SCANS / f"{stem}.nii.gz")
        labels = read_labels(SAMPLE_SCANS / f"{stem}_labels.nii.gz")
        assert scan.modality == modality
        assert labels.geometry.same_space(scan.geometry)
        assert set(range(1, 9)) <= set(int(v) for v in set(labels.labels.ravel().tolist()))
