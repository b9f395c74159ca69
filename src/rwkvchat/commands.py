"""The chat command grammar: one pure function from an input line to a typed value.

ChatRWKV's grammar (`+`, `++`, `+++`, `+gen`, `+i`, `+qq`, `+qa`, `+reset`, `+prompt`, inline `-temp=`
and `-top_p=`) plus slash commands in the manner of ollama and llm. A registry of `Spec`s drives both
parsing of slash commands and `/help` (English and Chinese), so the two never drift apart.
Fixed quirks (chat-behaviour.md B2): inline overrides are always removed from the text whatever their
formatting, and a malformed command raises `CommandError` with a message saying what is expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import CommandError

__all__ = [
    "REGISTRY",
    "SETTINGS",
    "AskQ",
    "AskQA",
    "Command",
    "Continue",
    "Exit",
    "Export",
    "Gen",
    "Help",
    "Instruct",
    "Load",
    "LoadPrompt",
    "Message",
    "Overrides",
    "Reply",
    "Reset",
    "Retry",
    "Save",
    "Set",
    "Spec",
    "Stats",
    "Think",
    "completions",
    "help_text",
    "parse",
]


@dataclass(frozen=True)
class Overrides:
    """Per-message sampling overrides from inline `-temp=X` / `-top_p=X` (None: keep the default)."""

    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of every parsed input; `overrides` apply to this message only."""

    overrides: Overrides = field(default_factory=Overrides)


@dataclass(frozen=True, kw_only=True)
class Message(Command):
    """Plain chat text (already cleaned of overrides; may contain newlines)."""

    text: str


@dataclass(frozen=True, kw_only=True)
class Reply(Command):
    """`+`: another reply to the last message (from `chat_pre`)."""


@dataclass(frozen=True, kw_only=True)
class Gen(Command):
    """`+gen TEXT` / `/gen TEXT`: free generation from an empty state."""

    text: str


@dataclass(frozen=True, kw_only=True)
class Instruct(Command):
    """`+i TEXT`: free generation in the Alpaca instruction format."""

    text: str


@dataclass(frozen=True, kw_only=True)
class AskQ(Command):
    """`+qq TEXT`: free generation of `Q: TEXT / A:` from an empty state."""

    text: str


@dataclass(frozen=True, kw_only=True)
class AskQA(Command):
    """`+qa TEXT` / `/ask TEXT`: a one-off question from `chat_init`, ignoring the chat so far."""

    text: str


@dataclass(frozen=True, kw_only=True)
class Retry(Command):
    """`++` / `/retry`: sample the last free generation again (from `gen_0`)."""


@dataclass(frozen=True, kw_only=True)
class Continue(Command):
    """`+++` / `/continue`: continue the last free generation (from `gen_1`)."""


@dataclass(frozen=True, kw_only=True)
class Reset(Command):
    """`+reset` / `/reset`: back to the state right after the init prompt."""


@dataclass(frozen=True, kw_only=True)
class LoadPrompt(Command):
    """`+prompt PATH` / `/prompt PATH`: a fresh state primed with another init prompt (new reset point)."""

    path: str


@dataclass(frozen=True, kw_only=True)
class Help(Command):
    """`/help`."""


@dataclass(frozen=True, kw_only=True)
class Save(Command):
    """`/save NAME`: write the conversation to a named session file."""

    name: str


@dataclass(frozen=True, kw_only=True)
class Load(Command):
    """`/load NAME`: resume a named session."""

    name: str


@dataclass(frozen=True, kw_only=True)
class Set(Command):
    """`/set KEY VALUE`: change a default for the rest of the session (value already typed)."""

    key: str
    value: float | int


@dataclass(frozen=True, kw_only=True)
class Stats(Command):
    """`/stats`: token counts and speeds."""


@dataclass(frozen=True, kw_only=True)
class Exit(Command):
    """`/exit` (also /quit, /bye)."""


@dataclass(frozen=True, kw_only=True)
class Export(Command):
    """`/export md|json [PATH]`: the transcript as Markdown or JSON."""

    fmt: str
    path: str | None = None


@dataclass(frozen=True, kw_only=True)
class Think(Command):
    """`/think on|off`: G1 reasoning mode (the reply starts with `<think`)."""

    on: bool


# /set keys: canonical name, accepted spellings, type and valid range (inclusive).
SETTINGS: dict[str, tuple[tuple[str, ...], type, float, float]] = {
    "temperature": (("temp", "temperature", "t"), float, 0.0, 5.0),
    "top_p": (("top_p", "top-p", "topp"), float, 0.0, 1.0),
    "top_k": (("top_k", "top-k", "topk"), int, 0, 1 << 30),
    "presence": (("presence", "presence_penalty"), float, -10.0, 10.0),
    "frequency": (("frequency", "frequency_penalty"), float, -10.0, 10.0),
    "decay": (("decay", "penalty_decay"), float, 0.0, 1.0),
    "max_tokens": (("max_tokens", "max", "n"), int, 1, 1 << 30),
    "seed": (("seed",), int, 0, (1 << 63) - 1),
}

_NAME_RE = re.compile(r"^[\w.\-]{1,100}$")


def _need_text(usage: str) -> Callable[[str], str]:
    def check(arg: str) -> str:
        if not arg:
            raise CommandError(f"missing text: usage is {usage}")
        return arg

    return check


def _no_arg(name: str) -> Callable[[str], None]:
    def check(arg: str) -> None:
        if arg:
            raise CommandError(f"{name} takes no argument (got {arg!r})")

    return check


def _session_name(arg: str) -> str:
    if not arg:
        raise CommandError("missing name: usage is /save NAME or /load NAME")
    if not _NAME_RE.match(arg) or arg.startswith("."):
        raise CommandError(
            f"bad session name {arg!r}: use letters, digits, '_', '-' or '.', no spaces or slashes"
        )
    return arg


def _parse_set(arg: str) -> Set:
    parts = arg.replace("=", " ").split()
    if len(parts) != 2:
        keys = ", ".join(v[0][0] for v in SETTINGS.values())
        raise CommandError(f"usage is /set KEY VALUE, e.g. /set temp 0.8 (keys: {keys})")
    key, raw = parts[0].lower(), parts[1]
    for canonical, (aliases, kind, lo, hi) in SETTINGS.items():
        if key in aliases:
            try:
                value = kind(raw) if kind is float else int(raw, 10)
            except ValueError:
                raise CommandError(
                    f"/set {key}: {raw!r} is not {'a number' if kind is float else 'an integer'}"
                ) from None
            if not lo <= value <= hi:
                raise CommandError(f"/set {key}: {value} is outside [{lo:g}, {hi:g}]")
            return Set(key=canonical, value=value)
    raise CommandError(
        f"/set: unknown setting {parts[0]!r} (keys: {', '.join(v[0][0] for v in SETTINGS.values())})"
    )


def _parse_export(arg: str) -> Export:
    parts = arg.split(maxsplit=1)
    if not parts or parts[0].lower() not in ("md", "json"):
        raise CommandError("usage is /export md|json [PATH]")
    return Export(fmt=parts[0].lower(), path=parts[1] if len(parts) > 1 else None)


def _parse_think(arg: str) -> Think:
    if arg.lower() not in ("on", "off"):
        raise CommandError("usage is /think on|off")
    return Think(on=arg.lower() == "on")


@dataclass(frozen=True)
class Spec:
    """One command of the registry: its spellings, usage line, bilingual help and builder."""

    names: tuple[str, ...]
    usage: str
    en: str
    zh: str
    build: Callable[[str], Command]


REGISTRY: tuple[Spec, ...] = (
    Spec(("/help", "/?"), "/help", "show this help", "显示帮助", lambda a: Help()),
    Spec(("+",), "+", "another reply to your last message", "重新生成上一条回复", lambda a: Reply()),
    Spec(
        ("/retry", "++"),
        "++  or /retry",
        "sample the last free generation again",
        "重新生成上一次自由生成",
        lambda a: (_no_arg("/retry")(a), Retry())[1],
    ),
    Spec(
        ("/continue", "+++"),
        "+++  or /continue",
        "continue the last free generation",
        "继续上一次自由生成",
        lambda a: (_no_arg("/continue")(a), Continue())[1],
    ),
    Spec(
        ("/reset", "+reset"),
        "+reset  or /reset",
        "forget the chat (back to the init prompt)",
        "清空对话（回到初始提示）",
        lambda a: (_no_arg("/reset")(a), Reset())[1],
    ),
    Spec(
        ("/gen", "+gen"),
        "+gen TEXT  or /gen TEXT",
        "free generation (continue TEXT)",
        "自由生成（续写 TEXT）",
        lambda a: Gen(text=_need_text("+gen TEXT")(a)),
    ),
    Spec(
        ("+i",),
        "+i TEXT",
        "instruction (Alpaca format)",
        "指令（Alpaca 格式）",
        lambda a: Instruct(text=_need_text("+i TEXT")(a)),
    ),
    Spec(
        ("+qq",),
        "+qq TEXT",
        "question as Q:/A: from an empty state",
        "从空状态以 Q:/A: 问答",
        lambda a: AskQ(text=_need_text("+qq TEXT")(a)),
    ),
    Spec(
        ("/ask", "+qa"),
        "+qa TEXT  or /ask TEXT",
        "one-off question from the init prompt",
        "基于初始提示的单独问答",
        lambda a: AskQA(text=_need_text("+qa TEXT")(a)),
    ),
    Spec(
        ("/prompt", "+prompt"),
        "+prompt PATH",
        "start over with another init prompt (file)",
        "换用另一个初始提示文件并重新开始",
        lambda a: LoadPrompt(path=_need_text("+prompt PATH")(a)),
    ),
    Spec(
        ("/set",),
        "/set KEY VALUE",
        "change a setting (temp, top_p, top_k, presence, frequency, decay, max_tokens, seed)",
        "修改设置（temp、top_p 等）",
        _parse_set,
    ),
    Spec(
        ("/think",),
        "/think on|off",
        "G1 models: reasoning on or off",
        "G1 模型：开启或关闭思考",
        _parse_think,
    ),
    Spec(
        ("/save",),
        "/save NAME",
        "save the conversation (state included)",
        "保存对话（含状态）",
        lambda a: Save(name=_session_name(a)),
    ),
    Spec(
        ("/load",),
        "/load NAME",
        "resume a saved conversation",
        "载入已保存的对话",
        lambda a: Load(name=_session_name(a)),
    ),
    Spec(("/export",), "/export md|json [PATH]", "write the transcript", "导出对话记录", _parse_export),
    Spec(
        ("/stats",),
        "/stats",
        "token counts and speed",
        "显示 token 数与速度",
        lambda a: (_no_arg("/stats")(a), Stats())[1],
    ),
    Spec(("/exit", "/quit", "/bye"), "/exit  (or Ctrl-D)", "quit", "退出", lambda a: Exit()),
)

_BY_NAME: dict[str, Spec] = {name: spec for spec in REGISTRY for name in spec.names}

# Inline overrides: the flag, then everything up to the next whitespace. The whole match is always removed.
_OVERRIDE_RE = re.compile(r"(?:(?<=\s)|^)-(temp|top_p)=(\S*)")


def _extract_overrides(text: str) -> tuple[str, Overrides]:
    found: dict[str, float] = {}

    def take(m: re.Match[str]) -> str:
        key, raw = m.group(1), m.group(2)
        try:
            value = float(raw)
        except ValueError:
            raise CommandError(
                f"-{key}= needs a number, e.g. -{key}={'0.8' if key == 'temp' else '0.3'}"
            ) from None
        if value != value:  # NaN
            raise CommandError(f"-{key}= needs a number")
        # Clamps: temperature to [0, 5] (0 = greedy); top_p to [0, 1].
        found[key] = min(max(value, 0.0), 5.0 if key == "temp" else 1.0)
        return ""

    cleaned = _OVERRIDE_RE.sub(take, text)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip() if found else cleaned
    return cleaned, Overrides(temperature=found.get("temp"), top_p=found.get("top_p"))


def parse(line: str) -> Command:
    """Parses one input line into a command (a `Message` for plain chat).

    Raises CommandError for an empty message, an unknown slash command, or a command with bad arguments.
    A line starting with `//` is a message starting with `/` (so paths can be sent as text).
    """
    text = line.replace("\\n", "\n").strip()
    text, overrides = _extract_overrides(text)
    if not text:
        raise CommandError("please say something")
    if text.startswith("//"):
        return Message(text=text[1:], overrides=overrides)
    if text in ("+", "++", "+++", "+reset"):
        return _BY_NAME[text].build("").__class__(overrides=overrides)
    head, _, arg = _split_slash(text)
    arg = arg.strip()
    key = head.lower()
    if text.startswith("/"):
        spec = _BY_NAME.get(key)
        if spec is None:
            raise CommandError(f"unknown command {head} (type /help; start with // to send it as text)")
        return _with_overrides(spec.build(arg), overrides)
    # '+' commands need their trailing space (ChatRWKV matches "+gen " etc.); '+reset' is handled above.
    if key in ("+gen", "+i", "+qq", "+qa", "+prompt") and (arg or text.lower() == key):
        return _with_overrides(_BY_NAME[key].build(arg), overrides)
    return Message(text=text, overrides=overrides)


def _split_slash(text: str) -> tuple[str, str, str]:
    parts = text.split(None, 1)
    return parts[0], " ", parts[1] if len(parts) > 1 else ""


def _with_overrides(cmd: Command, overrides: Overrides) -> Command:
    if overrides == Overrides():
        return cmd
    import dataclasses

    return dataclasses.replace(cmd, overrides=overrides)


def help_text() -> str:
    """The /help screen: one line per command with English and Chinese descriptions."""
    width = max(len(s.usage) for s in REGISTRY)
    lines = ["Commands / 命令:"]
    for s in REGISTRY:
        lines.append(f"  {s.usage.ljust(width)}  {s.en} / {s.zh}")
    lines.append(
        "  -temp=X -top_p=X".ljust(width + 2)
        + "  inside a message: sampling for that message only / 仅对本条消息生效的采样参数"
    )
    lines.append(
        '  Alt-Enter / """'.ljust(width + 2)
        + "  multi-line input / 多行输入;  Ctrl-C stops a reply / 停止回复;  Ctrl-D quits / 退出"
    )
    return "\n".join(lines)


def completions() -> list[str]:
    """Command words for tab completion (slash forms first)."""
    names = [n for s in REGISTRY for n in s.names if n.startswith("/")]
    return names + [n for s in REGISTRY for n in s.names if n.startswith("+") and len(n) > 3]
