"""`lidarseg synth` into a folder that holds a generation with other parameters is refused (it would leave a mix of
two generations: the sequences and scans the new one does not rewrite)."""
import json

from lidarseg.cli import main

TINY = ["--sequences", "00", "--scans", "1", "--azimuth-steps", "64"]


def test_synth_refuses_to_mix_generations(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["synth", "--out", str(out), *TINY]) == 0
    before = {p: p.read_bytes() for p in (out / "sequences").rglob("*") if p.is_file()}
    capsys.readouterr()
    for extra, what in [(["--seed", "1"], "seed: 0 -> 1"), (["--sequences", "00", "01"], "scans: {'00': 1} -> "),
                        (["--if-missing", "--seed", "2"], "seed: 0 -> 2")]:
        assert main(["synth", "--out", str(out), *TINY, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and what in err and "would mix two generations" in err, err
    assert {p: p.read_bytes() for p in (out / "sequences").rglob("*") if p.is_file()} == before
    assert json.loads((out / ".synthetic.json").read_text())["seed"] == 0
    assert main(["synth", "--out", str(out), *TINY, "--if-missing"]) == 0  # same parameters: nothing to do


def test_synth_sensor_preset(tmp_path, capsys):
    """--sensor vlp16 writes SemanticKITTI-layout scans of that sensor: 16 rings within its +-15 deg field of view
    (elevations measured here from the points), recorded in the marker; a second preset into the same folder is
    refused; an unknown preset is a one-line error naming the valid ones."""
    import numpy as np

    out = tmp_path / "v"
    assert main(["synth", "--out", str(out), *TINY, "--sensor", "vlp16"]) == 0
    scan = np.fromfile(out / "sequences" / "00" / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    assert len(scan)
    pitch = np.degrees(np.arctan2(scan[:, 2], np.hypot(scan[:, 0], scan[:, 1])))
    assert -16.5 < pitch.min() and pitch.max() < 16.5 and pitch.max() - pitch.min() > 20
    # rings: clusters of pitch; the nominal spacing is 2 deg, so sorted pitches jump by > 1 deg 15 times
    jumps = np.diff(np.sort(pitch))
    assert (jumps > 1.0).sum() == 15
    assert json.loads((out / ".synthetic.json").read_text())["sensor"]["beams"] == 16
    capsys.readouterr()
    assert main(["synth", "--out", str(out), *TINY, "--sensor", "hdl32"]) == 2
    assert "sensor" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), *TINY, "--sensor", "hdl65"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "hdl65" in err and "vlp16" in err, err


def test_synth_refuses_a_folder_generated_with_another_road_profile(tmp_path, capsys):
    from lidarseg.data.synthetic import generate

    out = tmp_path / "flat"
    generate(out, sequences=[0], scans=1, azimuth_steps=64, road="flat", log=None)
    capsys.readouterr()
    assert main(["synth", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "road: {" in err and "would mix two generations" in err, err
