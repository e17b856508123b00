"""lidarseg: LiDAR range-image semantic segmentation with the subclassified loss.

Flow: scan file -> points (lidarseg.data.io) -> projection (lidarseg.data.projection) -> batch
(lidarseg.data.dataset) -> network (models) -> logits -> loss (lidarseg.losses); logits -> back-projection
(lidarseg.postproc) -> metrics (lidarseg.metrics).
"""
from pathlib import Path

__version__ = "0.1.0"

#: Repository root (the package is installed in editable mode); configs/ and data/ live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
DEFAULT_LABEL_CONFIG = CONFIG_DIR / "semantic-kitti.yaml"
DEFAULT_DATA_ROOT = PROJECT_ROOT / "data" / "synthetic-kitti"
