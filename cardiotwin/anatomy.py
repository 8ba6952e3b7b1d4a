"""Label table, mesh tags and AHA-17 segment definitions (the one place they are defined)."""

from __future__ import annotations

from enum import IntEnum


class Label(IntEnum):
    """Voxel labels of a NIfTI uint8 label map (ARCHITECTURE.md)."""

    BACKGROUND = 0
    LV_BLOOD = 1
    LV_MYO = 2
    RV_BLOOD = 3
    RV_MYO = 4
    LA = 5
    RA = 6
    AORTA = 7
    PULMONARY_ARTERY = 8
    SCAR = 9


LABEL_NAMES: dict[int, str] = {int(v): v.name.lower() for v in Label}

# Labels a full-heart model predicts (scar only where the modality shows it: LGE MRI).
HEART_LABELS: tuple[int, ...] = tuple(int(v) for v in Label if v not in (Label.BACKGROUND, Label.SCAR))


class ThoraxTissue(IntEnum):
    """Non-cardiac tissue codes of the phantoms' and the synthetic training data's tissue maps
    (appearance only, above the label table's range; never in a label map)."""

    AIR = 20
    LUNG = 21
    FAT = 22
    SOFT = 23
    BONE = 24


class CellTag(IntEnum):
    """Tetrahedron tags of a HeartMesh."""

    LV_MYO = 1
    RV_MYO = 2
    SCAR = 3


class FacetTag(IntEnum):
    """Boundary triangle tags of a HeartMesh."""

    LV_ENDO = 1
    RV_ENDO = 2
    EPI = 3
    BASE = 4


# AHA 17-segment model (Cerqueira et al., Circulation 2002;105:539).
AHA_SEGMENT_NAMES: dict[int, str] = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
    17: "apex",
}
