"""In-silico evidence report (ASME V&V 40), clinical summary, code and calculation verification."""
