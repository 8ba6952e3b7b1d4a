#!/usr/bin/env bash
# System packages cardiotwin needs beyond Python wheels. Installs only what is missing (needs root
# or sudo; without either it says what to install and carries on, tests that need them skip).
set -euo pipefail
need=()
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
# WeasyPrint (PDF reports, cardiotwin/report) needs Pango, HarfBuzz subsetting and a font
ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so.0' || need+=(libpango-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libpangoft2-1.0.so.0' || need+=(libpangoft2-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libharfbuzz-subset.so.0' || need+=(libharfbuzz-subset0)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -x /usr/bin/chromium ] || need+=(chromium)  # headless browser for the viewer tests (tests/test_viewer*.py)
# PACS round trip (cardiotwin/interop, tests/test_pacs.py): Orthanc with its DICOMweb plugin, dciodvfy
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || need+=(orthanc-dicomweb)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "warning: missing system packages: ${need[*]} (install them with apt-get)"; exit 0; fi
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
