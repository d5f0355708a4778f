"""The shared command-line and I/O helpers: exact strings, exit codes, and atomic writes that
leave nothing behind (``orchestrator.cli``, ``orchestrator.storage``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.cli import (
    ArgumentParser,
    cli,
    did_you_mean,
    flops_unit,
    format_flops,
    interrupt_hint,
    plural,
    render_table,
    run_cli,
    write_stdout,
)
from orchestrator.storage import atomic_write
from snnet import SNNetError


def test_one_home_for_the_helpers(capsys):
    """snnet's command and the orchestrator's share one wording (snnet.text; snnet may not import orchestrator),
    and snnet.space's few lines of command-line plumbing answer a mistake as the orchestrator's do."""
    import orchestrator.cli
    import snnet.text
    from snnet.space._command import ArgumentParser as SpaceParser

    for name in ("FLOPS_UNITS", "did_you_mean", "flops_unit", "format_flops", "plural", "render_table"):
        assert getattr(orchestrator.cli, name) is getattr(snnet.text, name)
    errors = []
    for parser_class in (ArgumentParser, SpaceParser):
        parser = parser_class(prog="python -m tool")
        parser.add_argument("--epochs", type=int)
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["--epocs", "1"])
        errors.append((exit_.value.code, capsys.readouterr().err))
    assert errors[0] == errors[1]

# -- suggestions and the command line's own mistakes ---------------------------------------------


def test_did_you_mean_names_the_closest_or_the_names_holding_the_word():
    fields = ["epochs", "batch_size", "anchor_lr", "stitch_lr", "lr_scale_batch", "min_lr", "seed"]
    assert did_you_mean("epochz", fields) == " (did you mean 'epochs'?)"
    assert did_you_mean("lr", fields) == " (did you mean 'anchor_lr', 'stitch_lr' or 'min_lr'?)"  # ending in it first
    assert did_you_mean("scale", fields) == " (did you mean 'lr_scale_batch'?)"
    assert did_you_mean("--epocs", ["-h", "--help", "--epochs"]) == " (did you mean '--epochs'?)"
    assert did_you_mean("--wat", ["--out", "--help"]) == ""  # the dashes alone are no likeness
    assert did_you_mean("bogus", fields) == ""


def _parser(commands: bool) -> ArgumentParser:
    p = ArgumentParser(prog="python -m tool")
    p.add_argument("--epochs", type=int)
    if commands:
        p.add_subparsers(dest="command").add_parser("query").add_argument("--pareto", action="store_true")
    return p


@pytest.mark.parametrize("commands, argv, message", [
    (False, ["--epocs", "1"], "error: unrecognized argument --epocs (did you mean '--epochs'?); "
                              "see python -m tool --help"),
    (False, ["--epocs=1", "--x"], "error: unrecognized arguments --epocs (did you mean '--epochs'?), --x; "
                                  "see python -m tool --help"),
    (False, ["stray"], "error: unrecognized argument stray; see python -m tool --help"),
    (False, ["--epochs", "x"], "error: argument --epochs: invalid int value: 'x'; see python -m tool --help"),
    (True, ["query", "--pareot"], "error: unrecognized argument --pareot (did you mean '--pareto'?); "
                                  "see python -m tool query --help"),  # the sub-command's flags and help
    (True, ["qurey"], "error: argument command: invalid choice: 'qurey' (choose from 'query'); "
                      "see python -m tool --help"),
], ids=["flag", "two-flags", "word", "bad-value", "sub-command-flag", "sub-command"])
def test_argument_mistakes_are_one_error_line_and_exit_2(capsys, commands, argv, message):
    with pytest.raises(SystemExit) as info:
        _parser(commands).parse_args(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n" and captured.out == ""  # no usage dump


# -- FLOPs and tables ----------------------------------------------------------------------------


def test_plural_counts_a_noun():
    assert plural(1, "epoch") == "1 epoch" and plural(21, "epoch") == "21 epochs" and plural(0, "trial") == "0 trials"
    assert plural(2, "Ray Train worker") == "2 Ray Train workers"


def test_format_flops_exact_strings():
    assert format_flops(1.26e9) == "1.260 G"
    assert format_flops(2.5e12) == "2.500 T" and format_flops(1234) == "1.234 K"
    assert format_flops(999) == "999" and format_flops(0) == "0"
    assert format_flops(1.5e8, "G") == "0.150 G"  # a fixed unit, even below one of it
    assert format_flops(12_345_678, "M", digits=2) == "12.35 M"
    assert format_flops(5e6, "M", digits=2, suffix="FLOPs") == "5.00 MFLOPs"
    assert format_flops(5e6, "M", digits=1, sep="") == "5.0M"
    assert format_flops(1.26e9, "G", label=False) == "1.260"  # a column whose header names the unit
    assert format_flops(1234, label=False) == "1.234"
    with pytest.raises(ValueError, match="unit must be one of"):
        format_flops(1, "X")


def test_flops_unit_picks_one_unit_for_a_column():
    assert flops_unit(2e9) == (1e9, "G") and flops_unit(5e8) == (1e6, "M")
    assert flops_unit(5e8, at_least=0.1) == (1e9, "G")  # 0.5 G still reads well in G
    assert flops_unit(10) == (1e6, "M")  # below every unit: the last
    assert flops_unit(3e12, units=("T", "G")) == (1e12, "T")
    with pytest.raises(ValueError):
        flops_unit(1, units=("Q",))


def test_render_table_aligns_columns_and_cuts_trailing_blanks():
    text = render_table([["a", "1.5"], ["bbb", "10.25"]], header=["name", "x"], right=[False, True], rule=True)
    assert text.splitlines() == [
        "name      x",
        "----  -----",
        "a       1.5",
        "bbb   10.25",
    ]
    assert render_table([["x", "y"], ["long", ""]]) == "x     y\nlong"
    assert render_table([[1, 22]], right=lambda i: i == 1, sep=" | ") == "1 | 22"
    assert render_table([]) == ""


# -- running a command ---------------------------------------------------------------------------


def test_run_cli_exit_codes_and_error_paragraph(capsys):
    def mistake(argv):
        raise SNNetError("k must be >= 1, but got 0.")

    assert run_cli(mistake, []) == 2
    err = capsys.readouterr().err
    assert err == "error: k must be >= 1, but got 0.\n"  # one line, no traceback

    class Failed(RuntimeError):
        pass

    def fails(argv):
        raise Failed("export failed")

    assert run_cli(fails, [], exit_codes={Failed: 1}) == 1
    assert capsys.readouterr().err == "error: export failed\n"
    assert run_cli(lambda argv: None, []) == 0 and run_cli(lambda argv: 3, []) == 3
    with pytest.raises(ZeroDivisionError):  # a bug is not a user's mistake: its traceback stays
        run_cli(lambda argv: 1 / 0, [])


def test_ctrl_c_exits_130_with_the_hint(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_cli(interrupted, []) == 130 and capsys.readouterr().err == ""
    assert run_cli(interrupted, [], on_interrupt=lambda: "stopped; resume with --resume") == 130
    assert capsys.readouterr().err == "stopped; resume with --resume\n"

    @cli()
    def main(argv=None):
        with interrupt_hint("outer"):
            with interrupt_hint(f"continue: python -m x --resume {argv[0]}"):
                raise KeyboardInterrupt

    assert main(["run-1"]) == 130
    assert capsys.readouterr().err == "continue: python -m x --resume run-1\n"
    assert main.__name__ == "main"

    finished = []

    def late(argv):  # a callable hint is asked at the moment of the interrupt
        with interrupt_hint(lambda: f"{len(finished)} trials finished"):
            finished.extend([1, 2])
            raise KeyboardInterrupt

    assert run_cli(late, [], on_interrupt=lambda: "not this one") == 130
    assert capsys.readouterr().err == "2 trials finished\n"


def test_broken_pipe_ends_quietly():
    script = (
        "import sys\n"
        "from orchestrator.cli import run_cli, write_stdout\n"
        "def main(argv):\n"
        "    for i in range(200000):\n"
        "        print('line', i)\n"
        "sys.exit(run_cli(main))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == ""


def test_write_stdout_reports_a_closed_reader(tmp_path):
    class Gone:
        def write(self, text):
            raise BrokenPipeError

        def flush(self):
            pass

        def fileno(self):
            raise ValueError  # not a real stream: nothing to redirect

    assert write_stdout("x", Gone()) is False
    with open(tmp_path / "out.txt", "w") as f:
        assert write_stdout("ok\n", f) is True
    assert (tmp_path / "out.txt").read_text() == "ok\n"


# -- atomic writes -------------------------------------------------------------------------------


def test_atomic_write_local_replaces_and_leaves_nothing(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    assert atomic_write(target, lambda f: f.write(b"new")) == str(target)
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    def half(f):
        f.write(b"par")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.pt"]


def test_atomic_write_to_path_keeps_the_suffix(tmp_path):
    seen = []

    def write(path):
        seen.append(path)
        with open(path, "w") as f:
            f.write("graph")

    atomic_write(tmp_path / "net.onnx", write, to_path=True)
    assert seen[0].endswith(".onnx") and os.path.basename(seen[0]).startswith(".net.")
    assert os.listdir(tmp_path) == ["net.onnx"] and (tmp_path / "net.onnx").read_text() == "graph"


def test_atomic_write_on_pyarrow_filesystems(tmp_path):
    import pyarrow.fs as pafs

    # A filesystem that is not pyarrow's LocalFileSystem takes the stream-then-move route.
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    assert (atomic_write("sweep=a/trial-1.parquet", lambda f: f.write(b"rows"), filesystem=fs)
            == "sweep=a/trial-1.parquet")
    assert (tmp_path / "sweep=a" / "trial-1.parquet").read_bytes() == b"rows"
    assert os.listdir(tmp_path / "sweep=a") == ["trial-1.parquet"]

    def broken(f):
        f.write(b"ro")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write("sweep=a/trial-1.parquet", broken, filesystem=fs)
    assert os.listdir(tmp_path / "sweep=a") == ["trial-1.parquet"]
    assert (tmp_path / "sweep=a" / "trial-1.parquet").read_bytes() == b"rows"
    with pytest.raises(ValueError, match="local target"):
        atomic_write("x.onnx", lambda p: None, filesystem=fs, to_path=True)
    # A file:// URI resolves to the local disk.
    atomic_write(f"file://{tmp_path}/c.json", lambda f: f.write(b"{}"))
    assert (tmp_path / "c.json").read_bytes() == b"{}"
