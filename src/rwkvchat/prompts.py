"""Chat templates and prompt presets (the presets are JSON data in the package's `prompts/` folder).

A Template says how turns are written for a model family (chat-behaviour.md B11): Raven v4 uses
Bob/Alice, World v5-v7 uses User/Assistant, and G1 adds `System:` and the `<think` reasoning prefill.
A Preset is data: language, mode, template (`auto` lets the model decide), init prompt, stop strings
and sampling defaults. User text is cleaned so it can never contain the `\\n\\n` round separator.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import CommandError

__all__ = [
    "TEMPLATES",
    "Preset",
    "Template",
    "alpaca_prompt",
    "builtin_presets",
    "choose_template",
    "clean_user_text",
    "instruction_prompt",
    "load_preset",
    "load_prompt_file",
    "normalise_prompt",
    "qq_prompt",
]

# Sampling for a preset or prompt file that names none: API_DEMO_CHAT's v7/G1 chat settings (B7).
CHAT_SAMPLING: dict[str, object] = {
    "temperature": 1.0,
    "top_p": 0.3,
    "presence": 0.5,
    "frequency": 0.5,
    "decay": 0.996,
    "max_tokens": 999,
}

# Vocabulary sizes of the GPT-NeoX "20B" tokenizer used by Pile/Raven v4 models.
_VOCAB_20B = (50277, 50304)
_G1_RE = re.compile(r"(?<![a-z0-9])g1(?![0-9])")


@dataclass(frozen=True)
class Template:
    """How one model family writes a conversation: `{user}{sep} text\\n\\n{bot}{sep}` (no trailing space)."""

    name: str
    user: str
    bot: str
    sep: str = ":"
    system: str | None = None
    thinks: bool = False

    def user_turn(self, text: str) -> str:
        return f"{self.user}{self.sep} {clean_user_text(text)}\n\n"

    def bot_header(self, think: bool = False) -> str:
        return f"{self.bot}{self.sep}" + (" <think" if think and self.thinks else "")

    def system_turn(self, text: str) -> str:
        return f"{self.system}{self.sep} {clean_user_text(text)}\n\n" if self.system and text.strip() else ""

    def stops(self) -> tuple[str, ...]:
        """Chat stop strings: the round separator, and the model starting to write the user's turn."""
        return ("\n\n", f"\n{self.user}{self.sep}")


TEMPLATES: dict[str, Template] = {
    "raven": Template("raven", "Bob", "Alice"),
    "world": Template("world", "User", "Assistant", system="System"),
    "g1": Template("g1", "User", "Assistant", system="System", thinks=True),
}


def choose_template(tokenizer_kind: str, n_vocab: int, model_name: str | None) -> str:
    """Template name for a model: "g1" when its name says G1, "raven" for the 20B vocabulary, else "world".

    G1 detection: the GGUF `general.name` (or file name) contains "g1" as a word part, e.g.
    "rwkv7-g1a-2.9b" or "RWKV7 G1 1.5B" (not "g10"/"xg1"). Official rule: Bob/Alice for Raven,
    User/Assistant for World.
    """
    if model_name and _G1_RE.search(model_name.lower()):
        return "g1"
    if tokenizer_kind != "world" and n_vocab in _VOCAB_20B:
        return "raven"
    return "world"


def clean_user_text(text: str) -> str:
    """Normalises line ends and collapses blank lines, since `\\n\\n` separates rounds."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n{2,}", "\n", text).strip()


def normalise_prompt(text: str) -> str:
    """ChatRWKV's init-prompt rule: strip each line (incl. U+3000), join with \\n, end with \\n\\n."""
    lines = [line.strip(" \t\r\u3000") for line in text.replace("\r\n", "\n").split("\n")]
    body = "\n".join(lines).strip("\n")
    return body + "\n\n" if body else ""


@dataclass(frozen=True)
class Preset:
    """A prompt preset: see prompts/README.md. `prompt` may use {user}, {bot} and {sep}."""

    name: str
    language: str = "en"
    mode: str = "chat"
    template: str = "auto"
    prompt: str = ""
    prompts: dict[str, str] = field(default_factory=dict)
    system: str = ""
    stop: tuple[str, ...] = ("\n\n",)
    sampling: dict[str, object] = field(default_factory=lambda: dict(CHAT_SAMPLING))
    description: str = ""

    def init_text(self, template: Template) -> str:
        """The init prompt for `template`, normalised, including the system turn if any."""
        raw = self.prompts.get(template.name, self.prompt)
        body = (
            raw.replace("{user}", template.user).replace("{bot}", template.bot).replace("{sep}", template.sep)
        )
        return template.system_turn(self.system) + normalise_prompt(body)


def _lines(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return "\n".join(value)
    raise CommandError(f"{what} must be a string or a list of strings")


def preset_from_dict(d: dict[str, object], origin: str) -> Preset:
    """Validates a parsed preset file; every problem is one clear line naming the file."""
    if not isinstance(d, dict):
        raise CommandError(f"{origin}: a preset must be a JSON object")
    known = {
        "name",
        "language",
        "mode",
        "template",
        "prompt",
        "prompts",
        "system",
        "stop",
        "sampling",
        "description",
    }
    unknown = sorted(set(d) - known)
    if unknown:
        raise CommandError(f"{origin}: unknown key(s) {', '.join(unknown)}")
    template = str(d.get("template", "auto"))
    if template != "auto" and template not in TEMPLATES:
        raise CommandError(f"{origin}: template must be auto, {', '.join(TEMPLATES)} (got {template!r})")
    prompts = d.get("prompts", {})
    if not isinstance(prompts, dict) or any(k not in TEMPLATES for k in prompts):
        raise CommandError(f"{origin}: 'prompts' must map template names ({', '.join(TEMPLATES)}) to text")
    stop = d.get("stop", ["\n\n"])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise CommandError(f"{origin}: 'stop' must be a list of non-empty strings")
    sampling = d.get("sampling", {})
    if not isinstance(sampling, dict):
        raise CommandError(f"{origin}: 'sampling' must be an object")
    return Preset(
        name=str(d.get("name", Path(origin).stem)),
        language=str(d.get("language", "en")),
        mode=str(d.get("mode", "chat")),
        template=template,
        prompt=_lines(d.get("prompt", ""), f"{origin}: 'prompt'"),
        prompts={k: _lines(v, f"{origin}: prompts.{k}") for k, v in prompts.items()},
        system=_lines(d.get("system", ""), f"{origin}: 'system'"),
        stop=tuple(stop),
        sampling={**CHAT_SAMPLING, **sampling},
        description=str(d.get("description", "")),
    )


def builtin_presets() -> dict[str, Preset]:
    """The presets shipped in the package, by name (en-chat, en-qa, zh-chat, zh-qa, ja-chat, ja-qa)."""
    out: dict[str, Preset] = {}
    folder = resources.files("rwkvchat") / "prompts"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            preset = preset_from_dict(json.loads(entry.read_text(encoding="utf-8")), f"prompts/{entry.name}")
            out[preset.name] = preset
    return out


def load_preset(name: str) -> Preset:
    """A built-in preset by name, or a preset/prompt file when `name` is a path."""
    presets = builtin_presets()
    if name in presets:
        return presets[name]
    if Path(name).suffix or "/" in name or "\\" in name:
        return load_prompt_file(name)
    raise CommandError(f"unknown preset {name!r} (built-in: {', '.join(presets)})")


def load_prompt_file(path: str) -> Preset:
    """A `.json` preset, or any other file as a plain init prompt (never executed, unlike ChatRWKV's)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"prompt file not found: {path}") from None
    except IsADirectoryError:
        raise CommandError(f"prompt path is a directory: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"cannot read prompt file {path}: {e}") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CommandError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return preset_from_dict(data, path)
    return Preset(name=p.stem, prompt=text)


def instruction_prompt(instruction: str, material: str | None = None) -> str:
    """The RWKV instruction format, instruction first (RWKV recalls poorly what came before it)."""
    text = f"Instruction: {clean_user_text(instruction)}\n\n"
    if material is not None and material.strip():
        text += f"Input: {clean_user_text(material)}\n\n"
    return text + "Response:"


def alpaca_prompt(text: str) -> str:
    """`+i`: ChatRWKV's Alpaca layout."""
    return (
        "\nBelow is an instruction that describes a task. Write a response that appropriately completes"
        f" the request.\n\n# Instruction:\n{clean_user_text(text)}\n\n# Response:\n"
    )


def qq_prompt(text: str) -> str:
    """`+qq`: a bare question/answer pair from an empty state."""
    return f"\nQ: {text}\nA:"
