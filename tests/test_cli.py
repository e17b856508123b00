"""The console command: every subcommand is registered and its module provides the command protocol."""
import importlib
import subprocess
import sys

import pytest

from lidarseg.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_module_has_protocol(name):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.add_arguments) and callable(module.run)


def test_parser_lists_all_commands():
    help_text = build_parser().format_help()
    for name in COMMANDS:
        assert name in help_text


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "numba" in out and "threads" in out


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "lidarseg", "info"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "lidarseg" in res.stdout


def test_help_texts_are_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "LiDAR range-image semantic segmentation: train, infer, evaluate, submit." in out
    assert "provides\n" not in out and out.rstrip().endswith("has the guides.")
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    out = capsys.readouterr().out
    assert "prediction files" in out and "submission files" not in out


def test_data_readme_is_tracked():
    """A fresh clone has data/ (the layout and .gitignore expect data/README.md)."""
    from lidarseg import PROJECT_ROOT
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "data/README.md"], cwd=PROJECT_ROOT,
                             capture_output=True)
    if tracked.returncode == 128 and b"not a git repository" in tracked.stderr:
        pytest.skip("not a git checkout")
    assert tracked.returncode == 0, tracked.stderr.decode()


def test_quiet_pytest_run_still_prints_the_count():
    """`bash scripts/test.sh -q` passes -q to pytest: the project's pytest config must not add another -q (-qq
    prints only dots, without the count of passed tests)."""
    from lidarseg import PROJECT_ROOT
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_labels.py"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-2000:]


def test_every_option_has_a_help_text():
    """Every option of every command, benchmarks included, says what it does in --help."""
    def walk(parser, path):
        for action in parser._actions:
            if action.option_strings and action.help is None:
                yield f"{path} {action.option_strings[0]}"
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
    assert list(walk(build_parser(), "lidarseg")) == []


def test_visualize_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    assert main(["visualize", "--pred", str(tmp_path / "none"), "--out", str(f)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {f}: is an existing file; expected a directory (new or " \
                                              "existing)"
