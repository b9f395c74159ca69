"""Where things live: the model to use, the config file, saved sessions and the input history.

Model choice, first match wins: `--model PATH`, the RWKVCHAT_MODEL environment variable, `model = "..."`
in the config file (`<user config dir>/rwkvchat/config.toml`, via platformdirs), then the tiny demo
model shipped in the package. RWKVCHAT_HOME, when set, puts config and data under one folder (for
tests and portable installs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RwkvchatError

__all__ = [
    "DEMO_NOTE",
    "ModelChoice",
    "config_dir",
    "config_file",
    "data_dir",
    "demo_model_path",
    "history_file",
    "read_config",
    "resolve_model",
    "sessions_dir",
]

DEMO_NOTE = (
    "using the tiny built-in demo model (it knows little); for real answers pass --model PATH "
    "or set RWKVCHAT_MODEL to an RWKV .gguf file"
)


@dataclass(frozen=True)
class ModelChoice:
    """The model file to load and where the choice came from (--model, RWKVCHAT_MODEL, config, demo)."""

    path: Path
    source: str

    @property
    def is_demo(self) -> bool:
        return self.source == "demo"


def _home() -> Path | None:
    home = os.environ.get("RWKVCHAT_HOME")
    return Path(home).expanduser() if home else None


def config_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir("rwkvchat", appauthor=False))


def data_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir("rwkvchat", appauthor=False))


def config_file() -> Path:
    return config_dir() / "config.toml"


def sessions_dir() -> Path:
    return data_dir() / "sessions"


def history_file() -> Path:
    return data_dir() / "history.txt"


def _parse_simple_toml(text: str) -> dict[str, Any]:
    """`key = "string"` / `key = number` lines only, for Pythons without tomllib (3.10)."""
    out: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip() if not re.search(r"=\s*[\"']", line) else line.strip()
        if not line or line.startswith("["):
            continue
        m = re.match(
            r"^([A-Za-z_][\w-]*)\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([-+0-9.eE]+))\s*(#.*)?$", line
        )
        if not m:
            raise ValueError(f"line {n}: cannot read {line!r}")
        key, dq, sq, num = m.group(1), m.group(2), m.group(3), m.group(4)
        out[key] = (
            dq.encode().decode("unicode_escape")
            if dq is not None
            else sq
            if sq is not None
            else (float(num) if any(c in num for c in ".eE") else int(num))
        )
    return out


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The config file as a dict ({} when absent); a malformed file is an error naming it."""
    path = path or config_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise RwkvchatError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = None  # type: ignore[assignment]
    try:
        return tomllib.loads(text) if tomllib is not None else _parse_simple_toml(text)
    except ValueError as e:  # tomllib.TOMLDecodeError is a ValueError
        raise RwkvchatError(f"config file {path} is not valid TOML: {e}") from None


def demo_model_path() -> Path:
    return Path(str(resources.files("rwkvchat") / "data" / "demo.gguf"))


def _existing(raw: str, source: str) -> ModelChoice:
    path = Path(raw).expanduser()
    if not path.exists():
        raise RwkvchatError(f"model file not found: {raw} (from {source})")
    if path.is_dir():
        raise RwkvchatError(f"model path is a directory, not a .gguf file: {raw} (from {source})")
    return ModelChoice(path, source)


def resolve_model(cli_value: str | None) -> ModelChoice:
    """Applies the precedence above; raises RwkvchatError with the source when the file is missing."""
    if cli_value:
        return _existing(cli_value, "--model")
    env = os.environ.get("RWKVCHAT_MODEL")
    if env:
        return _existing(env, "RWKVCHAT_MODEL")
    cfg = read_config()
    if cfg.get("model"):
        return _existing(str(cfg["model"]), f"config file {config_file()}")
    demo = demo_model_path()
    if not demo.is_file():
        raise RwkvchatError(
            "no model given and the demo model is not installed: pass --model PATH, "
            f'set RWKVCHAT_MODEL, or put model = "PATH" in {config_file()}'
        )
    return ModelChoice(demo, "demo")
