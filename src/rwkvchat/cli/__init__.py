"""The `rwkvchat` command: a typer app, one module per command, and the one error boundary.

Every error a user can cause reaches them here as one line on stderr with a non-zero exit
(1 runtime error, 2 usage error, 130 interrupted); `--debug` (or RWKVCHAT_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from ..errors import RwkvchatError

try:  # typer >= 0.29 carries its own copy of click's exceptions and no longer depends on click.
    from typer._click.exceptions import ClickException as _UsageProblem
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer is built on click
    from click import ClickException as _UsageProblem
    from click import UsageError

app = typer.Typer(
    name="rwkvchat",
    help="Chat with RWKV language models on your CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each command module registers itself on `app` when imported.
from . import info as _info  # noqa: E402,F401
from . import convert as _convert  # noqa: E402,F401
from . import generate as _generate  # noqa: E402,F401
from . import chat as _chat  # noqa: E402,F401
from . import quantize as _quantize  # noqa: E402,F401
from . import perplexity as _perplexity  # noqa: E402,F401


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"rwkvchat: error: {message}", file=sys.stderr)
    return code


def run(argv: list[str] | None = None) -> int:
    """Runs the CLI on argv (default sys.argv[1:]) and returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("RWKVCHAT_DEBUG", "") not in ("", "0")
    if "--debug" in args:
        args.remove("--debug")
        debug = True
    try:
        result = app(args=args, prog_name="rwkvchat", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("", file=sys.stderr)
        return 130
    except _UsageProblem as e:
        if debug:
            traceback.print_exc()
        e.show()
        return e.exit_code
    except RwkvchatError as e:
        return _fail(str(e), 1, debug)
    except FileNotFoundError as e:
        return _fail(f"no such file: {e.filename}", 1, debug)
    except IsADirectoryError as e:
        return _fail(f"is a directory: {e.filename}", 1, debug)
    except PermissionError as e:
        return _fail(f"permission denied: {e.filename}", 1, debug)
    except BrokenPipeError:
        # `rwkvchat gen ... | head` closed our stdout: not an error.
        return 0
    except OSError as e:
        return _fail(str(e), 1, debug)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
