"""The `rwkvchat chat` command: the interactive assistant (REPL), optionally a named saved session."""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import typer

from ..commands import Save, parse
from ..config import history_file, sessions_dir
from ..prompts import load_preset, load_prompt_file
from ..repl import Repl, make_console
from ..session import Info, Session
from . import app
from .options import (
    DeviceOpt,
    GpuLayersOpt,
    MmapOpt,
    ModelOpt,
    SeedOpt,
    TempOpt,
    ThreadsOpt,
    TopPOpt,
    is_plain,
    open_model,
)


@app.command("chat")
def chat(
    model: ModelOpt = None,
    session_name: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-s",
            help="Save the conversation under NAME after every turn; resume it if it exists.",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", help="Prompt preset: en-chat, en-qa, zh-chat, zh-qa, ja-chat, ja-qa.")
    ] = "en-chat",
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help="Init prompt file (.json preset or plain text).", show_default=False),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option("--system", help="A system prompt (World and G1 templates).", show_default=False),
    ] = None,
    temp: TempOpt = None,
    top_p: TopPOpt = None,
    seed: SeedOpt = None,
    think: Annotated[
        bool, typer.Option("--think/--no-think", help="G1 models: reason before answering.")
    ] = False,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    gpu_layers: GpuLayersOpt = 0,
    mmap: MmapOpt = None,
) -> None:
    """Chat with a model (ChatRWKV commands and /help inside)."""
    chosen = load_prompt_file(prompt) if prompt else load_preset(preset)
    if system is not None:
        chosen = dataclasses.replace(chosen, system=system)
    if session_name is not None:
        cmd = parse(f"/save {session_name}")  # The same name rules as /save.
        assert isinstance(cmd, Save)
    loaded, choice = open_model(model, threads, device, gpu_layers, mmap)
    with loaded:
        session = Session(loaded, preset=chosen, seed=seed, think=think, save_dir=sessions_dir())
        session.params = session.params.replace(temperature=temp, top_p=top_p)
        plain = is_plain()
        console = make_console(plain)
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        repl = Repl(session, console, interactive=interactive, history_path=history_file())
        if interactive or not plain:
            console.print(
                f"rwkvchat · {choice.path.name} · v{loaded.version} · template {session.template.name}"
                " · /help for commands, Ctrl-D to quit",
                style="dim",
            )

        def startup():
            path = sessions_dir() / f"{session_name}.npz" if session_name else None
            if path is not None and path.exists():
                yield from session.resume(path)
            else:
                yield from session.prime()
                if path is not None:
                    session.save(path)
                    yield Info(f"new session {session_name}: saved after every turn")
            session.save_path = path

        code = repl.run(startup())
    raise typer.Exit(code)
