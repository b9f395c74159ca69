"""Options shared by `chat`, `gen` and `perplexity` (names, help and defaults in one place), model opening."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from ..config import DEMO_NOTE, ModelChoice, resolve_model

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model file (.gguf). Default: $RWKVCHAT_MODEL, the config file, then the demo model.",
        show_default=False,
    ),
]
ThreadsOpt = Annotated[int, typer.Option("--threads", "-t", help="CPU threads (0 = all cores).", min=0)]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help='Where the model runs: "cpu", or "cuda" / "cuda:N" (needs a build with -DRWKVC_CUDA=ON).',
    ),
]
GpuLayersOpt = Annotated[
    int,
    typer.Option("--gpu-layers", help="With --device cuda: layers placed on the GPU (0 = all).", min=0),
]
MmapOpt = Annotated[
    bool | None,
    typer.Option(
        "--mmap/--no-mmap",
        help="--mmap: read the weights from the file mapping only; --no-mmap: copy them into memory before "
        "starting. Default: map the file, then copy the weights into huge-page memory while idle when it fits "
        "(faster decode).",
        show_default=False,
    ),
]


def weights_mode(mmap: bool | None) -> str:
    """Model(weights=...) for the --mmap/--no-mmap flag (None = neither given)."""
    return "auto" if mmap is None else "mmap" if mmap else "copy"


TempOpt = Annotated[
    float | None,
    typer.Option("--temp", help="Temperature (0 = greedy).", min=0.0, max=5.0, show_default=False),
]
TopPOpt = Annotated[
    float | None,
    typer.Option("--top-p", help="Nucleus sampling mass; 0 = greedy.", min=0.0, max=1.0, show_default=False),
]
TopKOpt = Annotated[
    int | None,
    typer.Option("--top-k", help="Keep the k most likely tokens (0 = off).", min=0, show_default=False),
]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="Random seed, for reproducible output.", min=0, show_default=False),
]
StopOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--stop", help="Stop when this text appears (repeatable; \\n is a newline).", show_default=False
    ),
]


def is_plain() -> bool:
    """Plain text (no colours or styles) when stdout is not a terminal or NO_COLOR is set."""
    return bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()


def open_model(
    model: str | None, threads: int, device: str = "cpu", gpu_layers: int = 0, mmap: bool | None = None
) -> tuple[Any, ModelChoice]:
    """Resolves and loads the model; prints one dim line on stderr when the demo model is used.

    A CUDA device on a build without CUDA fails here, as one RwkvchatError line, before anything runs.
    """
    choice = resolve_model(model)
    from ..model import Model

    loaded = Model(
        str(choice.path), threads=threads, device=device, gpu_layers=gpu_layers, weights=weights_mode(mmap)
    )
    if choice.is_demo:
        from ..repl import make_console

        make_console(plain=bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty(), stderr=True).print(
            DEMO_NOTE, style="dim"
        )
    return loaded, choice
