"""Clinical interoperability: a PACS over DICOMweb (pull a series into a case, push results back as
DICOM SEG, Encapsulated PDF and a TID 1500 Structured Report) and a FHIR R4 export of the results.

Credentials come from environment variables or files (``connection``), never from the command line,
and are never logged. Files written into a case stay free of patient identifiers: the source
patient and study identity is read from the PACS at push time and copied only into pushed objects.
"""
