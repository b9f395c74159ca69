"""The `rwkvchat convert` command: an official `.pth` checkpoint or an rwkv.cpp `.bin` file to GGUF."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import RwkvchatError
from . import app


@app.command()
def convert(
    model: str = typer.Argument(..., help="An official BlinkDL checkpoint (.pth) or an rwkv.cpp model file (.bin)."),
    out: str = typer.Argument(..., help="The GGUF file to write."),
    dtype: str = typer.Option(
        None,
        "--dtype",
        help="Type of the large matrices: f32, f16, bf16, or a quantized type "
        "(q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k). Default: f16 for .pth; for an rwkv.cpp file, "
        "its own type (quantized blocks are copied bit for bit).",
    ),
    tokenizer: str = typer.Option(
        "auto",
        "--tokenizer",
        help="Vocabulary to embed: auto (by vocabulary size), world, 20b, bytes, none, or a vocabulary file.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
) -> None:
    """Convert an official RWKV checkpoint or an rwkv.cpp file to GGUF (llama.cpp's layout where it has one)."""
    from ..checkpoint import detect_version, read_checkpoint
    from ..convert import write_gguf

    if os.path.exists(out) and not force:
        raise RwkvchatError(f"{out} exists; add --force to overwrite it")
    console = Console(stderr=True)
    from ..rwkvcpp import is_rwkvcpp_file

    # An unreadable path is not an rwkv.cpp file here; read_checkpoint then reports it.
    if is_rwkvcpp_file(model):
        sd, file_type = _read_rwkvcpp(model)
        dtype = dtype or file_type
    else:
        sd = read_checkpoint(model)
        dtype = dtype or "f16"
    version = detect_version(sd)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"RWKV-{version} -> {dtype}", total=None)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"RWKV-{version} {name[:32]:<32}")

        result = write_gguf(
            sd,
            out,
            dtype=dtype,
            tokenizer=tokenizer,
            name=os.path.splitext(os.path.basename(model))[0],
            progress=progress,
        )
    console.print(
        f"{model}: RWKV-{result.version}, {dtype} matrices, tokenizer: {result.tokenizer}", soft_wrap=True
    )
    console.print(
        f"wrote {out}: {result.n_tensors} tensors, {result.n_bytes / 2**20:.1f} MiB", soft_wrap=True
    )


def _read_rwkvcpp(path: str) -> tuple[dict, str]:
    """The file's official-layout state dict, and the dtype its float matrices should keep (f32 or f16)."""
    from ..rwkvcpp import load_rwkvcpp

    loaded = load_rwkvcpp(path)
    # Quantized tensors pass through write_gguf unchanged whatever dtype says; FP32 files stay F32.
    return loaded.state_dict, ("f32" if loaded.data_type == "FP32" else "f16")
