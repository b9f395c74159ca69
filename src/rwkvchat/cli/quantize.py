"""The `rwkvchat quantize` command: a GGUF model to a smaller weight type (Q8_0, Q4_0, ... Q6_K)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import ConversionError
from . import app


@app.command()
def quantize(
    model: str = typer.Argument(..., help="The GGUF model to read (F32, F16, BF16 or already quantized)."),
    out: str = typer.Argument(..., help="The GGUF file to write."),
    type_name: str = typer.Argument(..., metavar="TYPE",
                                    help="Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16, BF16 or F32."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
    pure: bool = typer.Option(False, "--pure",
                              help="Give the output head TYPE too (default: at least Q6_K/Q8_0, as llama.cpp)."),
    keep_emb_head: bool = typer.Option(False, "--keep-emb-head",
                                       help="Leave the embedding and the head as they are (rwkv.cpp's choice: "
                                            "more accurate, larger files)."),
) -> None:
    """Quantize the large matrices of a model; vectors and LoRA matrices keep their type (as llama.cpp does)."""
    from ..quantize import quantize_gguf, type_id

    try:
        type_id(type_name)
    except ConversionError as e:
        # A wrong TYPE is a usage error (exit 2), reported on one line with the valid names.
        print(f"rwkvchat: error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(f"-> {type_name.upper()}", total=None)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"{type_name.upper()} {name[:32]:<32}")

        result = quantize_gguf(model, out, type_name, force=force, pure=pure, keep_emb_head=keep_emb_head,
                               progress=progress)
    console.print(f"wrote {out}: {result.n_quantized} matrices to {type_name.upper()}, {result.n_kept} tensors kept, "
                  f"{result.bytes_in / 2**20:.1f} MiB -> {result.bytes_out / 2**20:.1f} MiB")
