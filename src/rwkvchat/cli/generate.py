"""The `rwkvchat gen` command: one-shot generation to stdout (prompt argument and/or stdin).

`cat file | rwkvchat gen "summarize"` puts the instruction before the piped text, as RWKV needs
(Instruction:/Input:/Response:); `rwkvchat gen -` reads the whole prompt from stdin; without --raw a
prompt is asked as one chat turn of the model's template; --raw continues the text as it is.
Exit codes: 0 ok, 1 runtime error, 2 usage error (130 when interrupted).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any

import typer

from ..prompts import instruction_prompt
from ..repl import printable
from ..session import Session, Stats, Stopped, TokenText
from . import UsageError, app
from .options import (
    DeviceOpt,
    GpuLayersOpt,
    MmapOpt,
    ModelOpt,
    SeedOpt,
    StopOpt,
    TempOpt,
    ThreadsOpt,
    TopKOpt,
    TopPOpt,
    open_model,
)


def _read_stdin() -> str:
    data = sys.stdin.buffer.read()
    return data.decode("utf-8", errors="replace")


def parse_logit_bias(items: list[str] | None) -> tuple[tuple[int, float], ...]:
    """`--logit-bias ID:BIAS` values as (token id, additive bias in logits) pairs; a bad one is a usage error."""
    out = []
    for item in items or []:
        tid, sep, bias = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out.append((int(tid), float(bias)))
        except ValueError:
            raise UsageError(f"--logit-bias wants ID:BIAS (for example 11:-2.5), got {item!r}") from None
    return tuple(out)


def check_token_ids(ids: list[int], n_vocab: int, option: str) -> None:
    """Token ids given on the command line must exist in the model's vocabulary."""
    for i in ids:
        if not 0 <= i < n_vocab:
            raise UsageError(f"{option}: token id {i} is out of range [0, {n_vocab})")


def build_prompt(
    prompt: str | None, stdin_text: str | None, raw: bool, session: Session
) -> tuple[str, tuple[str, ...], bool]:
    """(text to feed, stop strings, strip the reply's leading space) for the prompt and piped text."""
    if stdin_text is not None and prompt is not None and stdin_text.strip():
        if raw:
            return f"{prompt}\n\n{stdin_text}", (), False
        return instruction_prompt(prompt, stdin_text), ("\n\n",), True
    text = prompt if prompt is not None else (stdin_text or "")
    if raw:
        return text, (), False
    t = session.template
    return t.user_turn(text) + t.bot_header(), t.stops(), True


@app.command("gen")
def gen(
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="The prompt; '-' reads it from stdin. With piped text, the prompt is the instruction"
            " and the text its Input.",
            show_default=False,
        ),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("-n", "--max-tokens", help="Most tokens to generate.", min=1)
    ] = 256,
    temp: TempOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    seed: SeedOpt = None,
    stop: StopOpt = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Plain completion: no chat template, no default stops.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of streaming text.")
    ] = False,
    ban: Annotated[
        list[int] | None,
        typer.Option("--ban", help="A token id that is never generated (repeatable).", show_default=False),
    ] = None,
    logit_bias: Annotated[
        list[str] | None,
        typer.Option(
            "--logit-bias",
            help="ID:BIAS adds BIAS to that token's logit at every step (repeatable).",
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    gpu_layers: GpuLayersOpt = 0,
    mmap: MmapOpt = None,
) -> None:
    """Generate text from a prompt (and/or stdin) and stream it to stdout."""
    biases = parse_logit_bias(logit_bias)
    piped = not sys.stdin.isatty()
    stdin_text: str | None = None
    if prompt == "-":
        prompt, stdin_text = None, _read_stdin()
        if not stdin_text.strip():
            raise UsageError("'-' reads the prompt from stdin, but stdin was empty")
    elif prompt is None:
        if not piped:
            raise UsageError("no prompt: give PROMPT, or pipe text on stdin (rwkvchat gen - < file)")
        stdin_text = _read_stdin()
        if not stdin_text.strip():
            raise UsageError("no prompt: stdin was empty")
    elif piped:
        stdin_text = _read_stdin()
    loaded, choice = open_model(model, threads, device, gpu_layers, mmap)
    try:
        with loaded:
            check_token_ids(list(ban or []), loaded.n_vocab, "--ban")
            check_token_ids([i for i, _ in biases], loaded.n_vocab, "--logit-bias")
            shaping = {"token_ban": tuple(ban or ()), "logit_bias": biases}
            _stream(
                loaded,
                choice,
                prompt,
                stdin_text,
                raw,
                seed,
                temp,
                top_p,
                top_k,
                max_tokens,
                stop,
                as_json,
                shaping,
            )
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly and succeed, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _stream(
    loaded: Any,
    choice: Any,
    prompt: str | None,
    stdin_text: str | None,
    raw: bool,
    seed: int | None,
    temp: float | None,
    top_p: float | None,
    top_k: int | None,
    max_tokens: int,
    stop: list[str] | None,
    as_json: bool,
    shaping: dict[str, Any],
) -> None:
    """Generates and writes to stdout: streamed text, or one JSON object.

    shaping: SamplingParams fields from --ban and --logit-bias (token_ban, logit_bias), empty ones ignored.
    """
    session = Session(loaded, seed=seed)
    text, stops, strip = build_prompt(prompt, stdin_text, raw, session)
    extra = tuple(s.replace("\\n", "\n") for s in (stop or []))
    params = session.params.replace(
        temperature=temp,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_tokens,
        stop=stops + extra,
        **{k: v for k, v in shaping.items() if v},
    )
    out, result, stats = [], None, None
    safe = printable if sys.stdout.isatty() else (lambda t: t)  # Exact bytes when piped.
    t0 = time.perf_counter()
    for e in session.generate(text, params, strip_leading=strip):
        if isinstance(e, TokenText):
            out.append(e.text)
            if not as_json:
                sys.stdout.write(safe(e.text))
                sys.stdout.flush()
        elif isinstance(e, Stopped):
            result = e
        elif isinstance(e, Stats):
            stats = e
    text_out = "".join(out)
    if as_json:
        print(
            json.dumps(
                {
                    "text": result.text if result else text_out,
                    "stop_reason": result.reason if result else "interrupted",
                    "prompt_tokens": stats.prompt_tokens if stats else 0,
                    "generated_tokens": stats.generated_tokens if stats else 0,
                    "prefill_s": round(stats.prefill_s, 4) if stats else 0.0,
                    "generate_s": round(stats.generate_s, 4) if stats else 0.0,
                    "tokens_per_s": round(stats.tokens_per_s, 2) if stats else 0.0,
                    "total_s": round(time.perf_counter() - t0, 4),
                    "model": str(choice.path),
                    "seed": seed,
                },
                ensure_ascii=False,
            )
        )
    elif not text_out.endswith("\n"):
        sys.stdout.write("\n")
        sys.stdout.flush()
