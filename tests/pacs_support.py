"""A real PACS for the tests: Orthanc with its DICOMweb plugin on a free loopback port, throw-away storage.

``scripts/setup_system.sh`` installs the Debian packages ``orthanc``, ``orthanc-dicomweb`` and
``dicom3tools``; tests skip only when the Orthanc binary is absent.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "cardiology", "pacs-test-secret"
PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
# The hospital identity given to the uploaded phantom study: it must reach pushed objects and nothing in the case.
IDENTITY = {"PatientName": "DOE^JANE", "PatientID": "MRN-4711-0815", "PatientBirthDate": "19561103",
            "PatientSex": "F", "AccessionNumber": "ACC-99123", "StudyID": "CT4711", "StudyDate": "20260301",
            "StudyTime": "101500", "ReferringPhysicianName": "HOUSE^GREGORY", "InstitutionName": "St Elsewhere"}


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc")


def dicomweb_plugin() -> str | None:
    for p in PLUGIN_PATHS:
        if Path(p).is_file():
            return p
    hits = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")) if Path("/usr/lib/orthanc").is_dir() else []
    return str(hits[0]) if hits else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    url: str          # DICOMweb root
    root: str         # REST root
    folder: Path
    log: Path

    def rest(self, path: str):
        import requests

        r = requests.get(self.root + path, auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()
        return r.json()


def _die_with_parent() -> None:
    """In the child: ask Linux to stop it when the test process dies (a killed pytest leaves no Orthanc)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@contextlib.contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """Start Orthanc (HTTP basic auth, DICOMweb at /dicom-web) with storage in ``folder``; stop it after."""
    import requests

    binary, plugin = orthanc_binary(), dicomweb_plugin()
    assert binary, "Orthanc binary not found"
    assert plugin, "Orthanc is installed but its DICOMweb plugin is not (Debian package orthanc-dicomweb)"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {"Name": "cardiotwin-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "Plugins": [plugin],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                           "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
              "HttpThreadsCount": 4, "StableAge": 1, "ConcurrentJobs": 1}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(root + "/system", auth=(USER, PASSWORD), timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Orthanc(url=root + "/dicom-web", root=root, folder=folder, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def hospital_series(voxels, geometry, folder: Path, *, modality: str = "CT", body_part: str = "CHEST",
                    identity: dict | None = None) -> list:
    """Write a phantom volume as a DICOM series the way a scanner would (patient identity, frame of
    reference, body part) and return the datasets."""
    import pydicom
    from pydicom.uid import generate_uid

    from cardiotwin.io.dicom import write_dicom_series

    write_dicom_series(voxels, geometry, folder, modality=modality)
    for_uid = generate_uid()
    out = []
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        for k, v in (identity or IDENTITY).items():
            setattr(ds, k, v)
        ds.FrameOfReferenceUID = for_uid
        ds.BodyPartExamined = body_part
        ds.SeriesDescription = f"{modality} heart phantom"
        ds.SeriesNumber = 3
        ds.save_as(f)
        out.append(ds)
    return out


def upload(server: Orthanc, datasets: list) -> str:
    """STOW-RS the datasets into the server; their StudyInstanceUID."""
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    client = DICOMwebClient(server.url, session=create_session_from_user_pass(USER, PASSWORD))
    client.store_instances(datasets)
    return str(datasets[0].StudyInstanceUID)


def client(server: Orthanc):
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    return DICOMwebClient(server.url, session=create_session_from_user_pass(USER, PASSWORD))
