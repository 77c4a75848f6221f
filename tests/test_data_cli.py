"""``adafuse synth`` and ``adafuse prepare``: help texts, and a one-line reason with exit status 2 on bad input."""

from __future__ import annotations

import pytest

from adafuse.cli import main


@pytest.mark.parametrize("argv", [["synth"], ["prepare"], ["prepare", "frames"], ["prepare", "lists"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0 and "usage: adafuse" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prepare", "frames", "--videos", "{tmp}/none", "--out", "{tmp}/f"], "none: video folder not found"),
        (["prepare", "frames", "--videos", "{tmp}", "--out", "{tmp}/f"], "no video files (.mp4"),
        (["prepare", "frames", "--videos", "{tmp}", "--out", "{tmp}/f", "--workers", "0"], "need --workers >= 1"),
        (["prepare", "lists", "--source", "jester", "--root", "{tmp}", "--out", "{tmp}/o"], "needs --labels, --train"),
        (["prepare", "lists", "--source", "tree", "--root", "{tmp}", "--out", "{tmp}/o"], "train: folder not found"),
        (["prepare", "lists", "--source", "kinetics", "--root", "{tmp}", "--out", "{tmp}/o"], "invalid choice"),
        (["synth", "--kind", "temporal", "--out", "{tmp}/s", "--size", "16"], "need --size >= 32"),
        (["synth", "--kind", "motion", "--out", "{tmp}/s"], "invalid choice: 'motion'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err, captured.err
