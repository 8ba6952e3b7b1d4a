"""Personalisation: the patient's measurements (images, YAML, FHIR), the unloaded reference
geometry and the calibration of a small identifiable parameter set against the measurements."""
