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
