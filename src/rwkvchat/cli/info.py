"""The `rwkvchat info` command: what a model file holds, or what this CPU and build can do."""

from __future__ import annotations

from collections import Counter

import typer
from rich.console import Console
from rich.table import Table

from ..errors import RwkvchatError
from ..model import Model, system_info
from . import app


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _count(n: int) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{suffix} ({n:,})"
    return str(n)


_TOKENIZER_NAMES = {"rwkv": "World", "gpt2": "BPE", "rwkvchat-bytes": "bytes"}


def _tokenizer_kind(model: Model) -> str:
    """From `tokenizer.ggml.model` ("rwkv" is the World tokenizer), or a note that the file has none."""
    kind = model.metadata_value("tokenizer.ggml.model")
    if kind is None:
        return "none in the file"
    tokens = model.metadata_value("tokenizer.ggml.tokens")
    count = f", {len(tokens):,} tokens" if isinstance(tokens, list) else ""
    return f"{_TOKENIZER_NAMES.get(str(kind), str(kind))} ({kind}{count})"


def _system_info() -> None:
    text = system_info()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for part in text.split():
        key, sep, value = part.partition("=")
        table.add_row(key, value if sep else "")
    Console().print(table)


@app.command()
def info(
    model: str | None = typer.Argument(None, help="A model file (.gguf)."),
    system: bool = typer.Option(False, "--system", help="Show the CPU features and kernels this build uses."),
) -> None:
    """Show a model's architecture, sizes and weight types (or --system: the CPU kernels in use)."""
    if system:
        _system_info()
        return
    if model is None:
        raise RwkvchatError("give a model file, or --system")
    with Model(model) as m:
        types = Counter(t for _, t, _ in m.tensors())
        rows = [
            ("file", m.path),
            ("architecture", f"RWKV-{m.version}"),
            ("vocabulary", f"{m.n_vocab:,}"),
            ("embedding", str(m.n_embd)),
            ("layers", str(m.n_layer)),
            ("ffn", str(m.n_ffn)),
        ]
        if m.head_size:
            rows.append(("heads", f"{m.n_head} × {m.head_size}"))
        rows += [
            (
                "weights",
                f"{m.weight_type} (tensors: " + ", ".join(f"{n} {t}" for t, n in types.most_common()) + ")",
            ),
            ("parameters", _count(m.n_params)),
            ("file size", _size(m.file_size)),
            ("state", f"{m.state_len:,} floats ({_size(m.state_len * 4)})"),
            ("tokenizer", _tokenizer_kind(m)),
        ]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
