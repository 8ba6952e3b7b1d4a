"""cardiotwin: patient-specific cardiac digital twin pipeline.

Nothing runs at import time; stages live in sub-packages and are composed by ``cardiotwin.cli``
and the YAML recipes in ``pipelines/``.
"""

__version__ = "0.1.0"
