"""Command line: ``drivesegrt <command> ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``;
only the chosen command's module is imported, so ``drivesegrt run`` does not pay for TensorRT or
training imports. Bad input (ValueError, FileNotFoundError, ...) becomes one line on stderr and
exit code 2; ``--verbose`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS = {
    "run": ("drivesegrt.run", "segment a video, image folder, camera, stream or synthetic: source"),
    "models": ("drivesegrt.bench.catalog", "list the bundled models: classes, size, scores"),
    "eval": ("drivesegrt.train.evaluate", "score models/backends on a labelled dataset split (mIoU)"),
    "train": ("drivesegrt.train.train", "train a model from a config file"),
    "convert": ("drivesegrt.deploy.convert", "public weights (ESPNetv2 Cityscapes) -> a checkpoint"),
    "export": ("drivesegrt.deploy.export", "export a checkpoint to ONNX (+ TensorRT op check)"),
    "build": ("drivesegrt.deploy.trt_build", "build (or reuse) a TensorRT engine from ONNX"),
    "calibrate": ("drivesegrt.deploy.quantize", "INT8 post-training quantization to a Q/DQ ONNX"),
    "bench": ("drivesegrt.bench", "benchmark engines and the end-to-end pipeline"),
    "data": ("drivesegrt.data.download", "download datasets; compute class weights"),
    "replay": ("drivesegrt.capture.replay", "serve a recorded drive as a live network stream"),
    "batch": ("drivesegrt.batch", "many recorded drives on Ray: resumable, with a fleet report"),
}

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError, FileExistsError)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the contract for bad input), not argparse's usage block."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        print(f"drivesegrt: error: {command + ': ' if command else ''}{message} "
              f"(see '{self.prog} -h')", file=sys.stderr)
        raise SystemExit(2)


def _top_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(
        prog="drivesegrt",
        usage="drivesegrt [--version] COMMAND [options]",
        description="Real-time semantic segmentation for driving video.",
        epilog="commands:\n" + "\n".join(f"  {n:<10} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\n'drivesegrt COMMAND -h' shows a command's options; 'drivesegrt run' segments "
          "the built-in synthetic: source with the bundled model.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"drivesegrt {__version__}")
    return p


def _error(msg: str) -> int:
    print(f"drivesegrt: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        # No command: help (or --version); a run needs its command named.
        try:
            _top_parser().parse_args(argv or ["--help"])
        except SystemExit as e:
            return int(e.code or 0)
        return _error(f"options before a command: {argv[0]}; usage: drivesegrt COMMAND "
                      f"[options]")
    command = argv.pop(0)
    if command not in COMMANDS:
        return _error(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = _Parser(prog=f"drivesegrt {command}", description=help_text)
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return int(module.main(args) or 0)
    except USER_ERRORS as e:
        if args.verbose:
            raise
        msg = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        return _error(msg.splitlines()[0])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
