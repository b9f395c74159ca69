"""The `rwkvchat perplexity` command: perplexity of a model on a text file, and its speed in ms/token."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import RwkvchatError
from . import app
from .options import DeviceOpt, GpuLayersOpt, MmapOpt, weights_mode


@app.command()
def perplexity(
    model: str = typer.Argument(..., help="The model file (.gguf)."),
    textfile: str = typer.Argument(..., help="A UTF-8 text file to score."),
    ctx: int = typer.Option(512, "--ctx", min=1,
                            help="Tokens per forward call; the state carries over, so the whole text is context."),
    threads: int = typer.Option(0, "--threads", "-t", min=0, help="CPU threads (0 = all cores)."),
    device: DeviceOpt = "cpu",
    gpu_layers: GpuLayersOpt = 0,
    mmap: MmapOpt = None,
) -> None:
    """Measure how well MODEL predicts TEXTFILE (perplexity, lower is better) and how fast (ms/token)."""
    from ..model import Model
    from ..perplexity import perplexity as measure

    try:
        with open(textfile, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise RwkvchatError(f"{textfile} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    console = Console(stderr=True)
    with Model(
        model, threads=threads, device=device, gpu_layers=gpu_layers, weights=weights_mode(mmap)
    ) as m:
        tokens = m.tokenizer.encode(text)
        with Progress(TextColumn("perplexity"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("tokens", total=max(len(tokens) - 1, 0))
            result = measure(m, tokens, chunk=ctx, progress=lambda done, total: bar.update(task, completed=done))
    print(f"perplexity {result.perplexity:.4f} (nll {result.nll:.4f} nats/token) over {result.n_scored} tokens; "
          f"{result.ms_per_token:.2f} ms/token")
