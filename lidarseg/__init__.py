"""lidarseg: LiDAR range-image semantic segmentation with the subclassified loss.

Flow: scan file -> points (lidarseg.data.io) -> projection (lidarseg.data.projection) -> batch
(lidarseg.data.dataset) -> network (models) -> logits -> loss (lidarseg.losses); logits -> back-projection
(lidarseg.postproc) -> metrics (lidarseg.metrics).
"""
from pathlib import Path

__version__ = "0.1.0"


def _locate(package_dir: Path, cwd: Path) -> tuple[Path, Path]:
    """(project root, config folder). In a checkout (editable install) both are the repository's: configs/ beside
    the package. An installed wheel carries the configs inside the package (lidarseg/configs, setup.cfg) and uses
    the working directory as its project root, for the default data/ and runs/ folders."""
    root = package_dir.parent
    if (root / "configs" / "base.yaml").is_file():
        return root, root / "configs"
    return cwd, package_dir / "configs"


#: Repository root in a checkout, else the working directory: default data/ and runs/ live here.
#: CONFIG_DIR: the training and label configs (configs/ of the checkout, or the copy shipped in the wheel).
PROJECT_ROOT, CONFIG_DIR = _locate(Path(__file__).resolve().parent, Path.cwd())
DEFAULT_LABEL_CONFIG = CONFIG_DIR / "semantic-kitti.yaml"
DEFAULT_DATA_ROOT = PROJECT_ROOT / "data" / "synthetic-kitti"
