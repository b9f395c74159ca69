"""The REPL driven as a person would, through a pseudo-terminal (pexpect): type, read, Ctrl-C mid-reply,
go on chatting, free generation and continue, /save, quit, resume, multi-line input.

The model is a small real RWKV-7 with random weights and the bytes tokenizer (made here), so replies
are noise and run to max_tokens; a very large max_tokens makes a reply that only Ctrl-C ends.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO, random_v7

pexpect = pytest.importorskip("pexpect")
if sys.platform == "win32":  # pragma: no cover
    pytest.skip("pseudo-terminals need a POSIX system", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from rwkvchat import _native

    if not os.path.exists(_native.library_path()):
        pytest.skip(f"native library not built: {_native.library_path()}")
    from rwkvchat.convert import write_gguf

    path = tmp_path_factory.mktemp("ptymodel") / "tiny.gguf"
    sd = random_v7(n_vocab=256, n_embd=64, n_layer=2, head_size=32, ranks=(32, 32, 32, 32), seed=5)
    write_gguf(sd, path, dtype="f32", tokenizer="bytes", name="tiny chat test")
    return path


def spawn(model: Path, home: Path, *args: str):
    env = dict(os.environ, RWKVCHAT_HOME=str(home), TERM="xterm", NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RWKVCHAT_MODEL", None)
    return pexpect.spawn(
        sys.executable,
        ["-m", "rwkvchat", "chat", "--model", str(model), *args],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )


def context_tokens(child) -> int:
    child.sendline("/stats")
    child.expect(r"context: (\d+) tokens")
    n = int(child.match.group(1))
    child.expect("User:")
    return n


def test_chat_in_a_terminal(tiny_model, tmp_path):
    home = tmp_path / "home"
    c = spawn(tiny_model, home, "--seed", "1")
    try:
        c.expect("template world")
        c.expect("User:")
        c.sendline("/set max_tokens 100000000")
        c.expect("max_tokens = 100000000")
        c.expect("User:")
        start = context_tokens(c)

        # A reply that would run for a very long time: read some of it, then Ctrl-C.
        c.sendline("hello")
        c.expect("Assistant: ")
        c.expect(r"[\s\S]{200}")
        c.sendcontrol("c")
        c.expect(r"\[stopped\]")
        c.expect("User:")
        after_stop = context_tokens(c)
        assert after_stop > start + 200 // 4  # The partial reply is kept in the state.

        # The session is consistent: chatting goes on. (Reseed: where Ctrl-C landed varies the rng.)
        c.sendline("/set max_tokens 5")
        c.expect("User:")
        c.sendline("/set seed 9")
        c.expect("seed = 9")
        c.expect("User:")
        c.sendline("and now?")
        c.expect("Assistant: ")
        c.expect(r"5 tokens, [\d.]+ tokens/s")
        c.expect("User:")
        assert context_tokens(c) == after_stop + len("User: and now?\n\nAssistant:") + 5 + 2

        # Free generation, then continue it.
        c.sendline("+gen Once")
        c.expect(r"\d+ tokens, [\d.]+ tokens/s")  # At most 256 and a few to end a character, or token 0.
        c.expect("User:")
        c.sendline("+++")
        c.expect(r"\d+ tokens, [\d.]+ tokens/s")
        c.expect("User:")

        # Multi-line input: Esc-Enter inserts a newline; a bad command explains itself.
        c.send("first line")
        c.send("\x1b\r")
        c.send("second line\r")
        c.expect(r"5 tokens, [\d.]+ tokens/s")
        c.expect("User:")
        c.sendline("/sve x")
        c.expect("error: unknown command /sve")
        c.expect("User:")
        before_save = context_tokens(c)
        c.sendline("/save s1")
        c.expect("saved as s1")
        c.expect("User:")
        c.sendcontrol("d")
        c.expect(pexpect.EOF)
    finally:
        c.close()
    assert c.exitstatus == 0
    assert (home / "data" / "sessions" / "s1.npz").exists()
    assert (home / "data" / "history.txt").exists()

    # Resume: the state comes back without re-reading the conversation.
    c = spawn(tiny_model, home, "--session", "s1")
    try:
        c.expect(r"resumed s1: 3 turns")
        c.expect("User:")
        assert context_tokens(c) == before_save
        c.sendline("/export md")
        c.expect(r"\*\*User:\*\* first line\r?\nsecond line")
        c.expect("User:")
        c.sendline('"""')
        c.sendline("block one")
        c.sendline('block two"""')
        c.expect("Assistant: ")
        c.expect("User:")
        c.sendline("/export json")
        c.expect(re.escape('"text": "block one\\nblock two"'))
        c.expect("User:")
        c.sendline("/exit")
        c.expect(pexpect.EOF)
    finally:
        c.close()
    assert c.exitstatus == 0
