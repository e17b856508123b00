"""Cross-check of the nuScenes reader against the official nuscenes-devkit: on a synthetic dataset written in the
nuScenes format, our reader returns exactly the points and labels the devkit's `NuScenes` object loads for every
sample. The devkit pins numpy < 2, so it is not in the test extras; this test runs where it is installed
(`pip install nuscenes-devkit` in an environment with numpy 1.x) and is skipped elsewhere."""
import os

import numpy as np
import pytest

nuscenes = pytest.importorskip("nuscenes.nuscenes", reason="nuscenes-devkit is not installed (it needs numpy < 2)")


def test_reader_matches_devkit(tmp_path):
    from nuscenes.utils.data_classes import LidarPointCloud

    from lidarseg.data.sources import build_source
    from lidarseg.data.sources.nuscenes import write_synthetic

    write_synthetic(tmp_path, scans=3, azimuth_steps=256, log=None)
    nusc = nuscenes.NuScenes(version="v1.0-trainval", dataroot=str(tmp_path), verbose=False)
    src = build_source("nuscenes", tmp_path)
    ours = {it.token: it for split in ("train", "valid") for it in src.items(split)}
    assert len(ours) == len(nusc.sample) == 6
    for sample in nusc.sample:
        sd_token = sample["data"]["LIDAR_TOP"]
        item = ours[sd_token]
        assert item.sequence == nusc.get("scene", sample["scene_token"])["name"]
        devkit_points = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_token)).points.T  # [N,4]
        devkit_labels = np.fromfile(os.path.join(nusc.dataroot, nusc.get("lidarseg", sd_token)["filename"]),
                                    dtype=np.uint8)
        points = src.read_points(item)
        np.testing.assert_array_equal(points, devkit_points)
        np.testing.assert_array_equal(src.read_raw_labels(item, len(points)), devkit_labels)
        names = [nusc.lidarseg_idx2name_mapping[int(i)] for i in np.unique(devkit_labels)]
        assert names == [src.label_map.raw_names[int(i)] for i in np.unique(devkit_labels)]


def test_label_config_matches_devkit(tmp_path):
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    from nuscenes.utils.splits import create_splits_scenes

    from lidarseg.data.sources import build_source
    from lidarseg.data.sources.nuscenes import write_synthetic

    write_synthetic(tmp_path, scans=1, azimuth_steps=128, log=None)
    nusc = nuscenes.NuScenes(version="v1.0-trainval", dataroot=str(tmp_path), verbose=False)
    lm = build_source("nuscenes", tmp_path).label_map
    assert lm.learning_map == LidarsegClassMapper(nusc).fine_idx_2_coarse_idx_mapping
    splits = create_splits_scenes()
    assert lm.split["valid"] == splits["val"]
    assert lm.split["mini_train"] == splits["mini_train"] and lm.split["mini_val"] == splits["mini_val"]
