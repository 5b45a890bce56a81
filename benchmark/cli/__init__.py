"""The `ctxray-bench` command line: thin wrappers that parse arguments and print; the work is elsewhere."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from benchmark.cli.options import build_parser
from benchmark.errors import CtxrayError, OutputError, describe_os_error
from benchmark.outputs import terminal_safe

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ctxray-bench` console script: every error is one line (exit 2 for bad input, 1 for the
    machine's), with its traceback under --debug."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        sys.stderr.close()
        return 0
    except (CtxrayError, OSError) as exc:  # ours, or the machine's (permissions, full disk): one line each
        if args.debug:
            traceback.print_exc()
        message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        print(f"ctxray-bench: error: {terminal_safe(' '.join(message.split()), keep_newlines=False)}", file=sys.stderr)
        return 2 if isinstance(exc, CtxrayError) and not isinstance(exc, OutputError) else 1
