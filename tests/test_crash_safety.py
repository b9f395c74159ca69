"""Crashes and Ctrl-C never cost a saved conversation, and an interrupted session's next turn works.

Kill -9 (the process dies with no clean-up at all):
- at fixed points of a save, by fault injection in a child: half-way through writing the file, before the
  fsync, before the rename. The previous save must be byte-for-byte what it was, and it must resume;
- at random moments of a child chatting with autosave after every turn (most of its time is spent saving,
  so many kills land inside a save): after every kill the file loads and resumes and the next run goes on.
Ctrl-C (SIGINT) to `rwkvchat chat --session` (the real CLI, plain mode over pipes), at random moments
during a long prefill and during generation, once or twice in a row, and during the autosave (fault
injection: the signal is raised from inside the save): the process must not die or print a traceback, the
next message must get its reply, and the session file must end with that turn.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fuzz"))

import seeds

if sys.platform == "win32":  # pragma: no cover - signals and kill -9 are POSIX here.
    pytest.skip("POSIX signals only", allow_module_level=True)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.pop("RWKVCHAT_MODEL", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def model(tmp_path_factory, native) -> Path:
    """D=128, 2 layers, bytes tokenizer: a 40k-character message takes about a second to read."""
    path = tmp_path_factory.mktemp("crash") / "m.gguf"
    return seeds.write_tiny_model(path, "f32", tokenizer="bytes", n_vocab=256, n_embd=128, head_size=64,
                                  n_layer=2, ranks=(16, 16, 16, 16), n_ffn=512)


def _check_resumes(model: Path, save: Path, expect_last_user: str | None = None) -> list[dict]:
    """Loads the file, resumes it into a fresh Session and takes one turn; returns the transcript."""
    from rwkvchat.model import Model
    from rwkvchat.session import Error, Session
    from rwkvchat.state import load_conversation

    conv = load_conversation(save)
    assert "chat" in conv.snapshots
    if expect_last_user is not None:
        users = [t["text"] for t in conv.transcript if t.get("role") == "user"]
        assert users and users[-1] == expect_last_user, conv.transcript[-4:]
        assert conv.transcript[-1]["role"] == "assistant", conv.transcript[-4:]
    with Model(model, threads=1) as m:
        s = Session(m, seed=0)
        s.params = s.params.replace(max_tokens=4)
        events = list(s.resume(save))
        assert not any(isinstance(e, Error) for e in events), events
        assert "resumed" in str(events[0]), events
        events = list(s.send("are you still there?"))
        assert not any(isinstance(e, Error) for e in events), events
        assert s.transcript[-1]["role"] == "assistant"
    return conv.transcript


# ---- kill -9 during saves ----

_KILL_CHILD = r"""
import io, os, signal, sys
import numpy as np
from rwkvchat.model import Model
from rwkvchat.session import Session

mode, model, save = sys.argv[1:4]
m = Model(model, threads=1)
sess = Session(m, seed=0, save_path=save, save_dir=os.path.dirname(save))
sess.params = sess.params.replace(max_tokens=8)
if os.path.exists(save):
    for _ in sess.resume(save):
        pass
else:
    for _ in sess.prime():
        pass
    for _ in sess.send("the first turn"):
        pass
print("READY", flush=True)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

slash = mode.startswith("slash-")  # the same fault inside `/save other` (a save under a new name)
mode = mode.removeprefix("slash-")
if mode == "write":
    real_savez = np.savez
    def half_savez(f, *args, **kwargs):
        buf = io.BytesIO()
        real_savez(buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        die()
    np.savez = half_savez
elif mode == "fsync":
    os.fsync = die
elif mode == "rename":
    os.replace = die
    os.rename = die
if mode == "loop":
    i = 0
    while True:
        i += 1
        for _ in sess.send(f"message {i} " + "x" * 300):
            pass
elif slash:
    for _ in sess.send("/save other"):
        pass
    print("NOT KILLED", flush=True)
else:
    for _ in sess.send("the turn whose save is killed"):
        pass
    print("NOT KILLED", flush=True)
"""


def _start_kill_child(mode: str, model: Path, save: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, mode, str(model), str(save)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the child did not start: {line}{out}{err[-3000:]}")
    return proc


@pytest.mark.parametrize("point", ["write", "fsync", "rename"])
def test_kill_inside_save_keeps_previous_save(model, tmp_path, point):
    save = tmp_path / "s.npz"
    # First run: makes a valid save of one turn, then exits normally at the fault point's "NOT KILLED".
    proc = _start_kill_child("none", model, save)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "NOT KILLED" in out, err[-3000:]
    before = save.read_bytes()
    proc = _start_kill_child(point, model, save)
    out, err = proc.communicate(timeout=120)
    assert "NOT KILLED" not in out, (
        f"the save never reached the '{point}' fault point: state.py no longer saves through "
        f"np.savez / os.fsync / os.replace; update this test's fault injection")
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-3000:])
    assert save.read_bytes() == before, f"killed at '{point}', the previous save changed"
    _check_resumes(model, save, expect_last_user="the turn whose save is killed")
    # A kill inside the .npz write or before its rename leaves its temporary file; the next save removes it.
    if point in ("write", "rename"):
        assert list(tmp_path.glob(".s.npz.*.tmp")), sorted(p.name for p in tmp_path.iterdir())
    proc = _start_kill_child("none", model, save)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "NOT KILLED" in out, err[-3000:]
    assert not list(tmp_path.glob("*.tmp")), sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("point", ["write", "rename"])
def test_kill_inside_slash_save_to_new_name(model, tmp_path, point):
    """`/save other` killed mid-write or before its rename: other.npz is absent or whole, s.npz untouched."""
    save = tmp_path / "s.npz"
    proc = _start_kill_child("none", model, save)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    before = save.read_bytes()
    proc = _start_kill_child(f"slash-{point}", model, save)
    out, err = proc.communicate(timeout=120)
    assert "NOT KILLED" not in out and proc.returncode == -signal.SIGKILL, (out, err[-3000:])
    assert save.read_bytes() == before
    assert not (tmp_path / "other.npz").exists(), "a killed /save left a file under the new name"
    _check_resumes(model, save, expect_last_user="the turn whose save is killed")


def test_kill_at_random_moments_of_autosaving_chat(model, tmp_path):
    save = tmp_path / "s.npz"
    rng = random.Random(1234)
    proc = _start_kill_child("none", model, save)
    proc.communicate(timeout=120)
    turns = []
    for trial in range(12):
        proc = _start_kill_child("loop", model, save)
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        transcript = _check_resumes(model, save)
        turns.append(sum(1 for t in transcript if t.get("role") == "user"))
    # Each run resumes the last complete save: the conversation never goes backwards.
    assert turns == sorted(turns), turns
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    print(f"turns after each kill: {turns}; temporary files left by kills inside a save: {len(leftovers)}")


# ---- Ctrl-C through the real CLI ----


class _Chat:
    """`rwkvchat chat --session s1` over pipes, with stdout collected by a thread."""

    def __init__(self, model: Path, home: Path, code: str | None = None) -> None:
        args = [sys.executable, "-m", "rwkvchat", "chat", "-m", str(model), "--session", "s1"]
        if code is not None:
            args = [sys.executable, "-c", code, "chat", "-m", str(model), "--session", "s1"]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env(RWKVCHAT_HOME=str(home), NO_COLOR="1"))
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session_file = home / "data" / "sessions" / "s1.npz"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.out):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        pytest.fail(f"no {text!r} from the chat: {''.join(self.out)[-2000:]}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> tuple[int, str, str]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        rc = self.proc.wait(timeout=180)
        self._reader.join(timeout=10)
        return rc, "".join(self.out), err


def _interrupted_chat(model: Path, home: Path, message: str, delays: list[float], code: str | None = None) -> None:
    chat = _Chat(model, home, code)
    chat.wait_for("saved after every turn")
    chat.send(message)
    for d in delays:
        time.sleep(d)
        chat.proc.send_signal(signal.SIGINT)
    # Let the handlers run before the next line arrives: a KeyboardInterrupt raised inside readline() just
    # after it took a line from the pipe loses that line (CPython's buffered IO), a test artefact that a
    # terminal (prompt_toolkit, or a line typed after the Ctrl-C) does not have.
    time.sleep(0.3)
    chat.send("hello")
    rc, out, err = chat.finish()
    assert rc == 0 and "Traceback" not in err, f"exit {rc}\n{err[-3000:]}\n{out[-1500:]}"
    _check_resumes(model, chat.session_file, expect_last_user="hello")


@pytest.mark.parametrize("trial", range(4))
def test_ctrl_c_during_prefill(model, tmp_path, trial):
    rng = random.Random(trial)
    _interrupted_chat(model, tmp_path, "tell me " + "a" * 40000, [rng.uniform(0.05, 1.0)])


@pytest.mark.parametrize("trial", range(3))
def test_ctrl_c_during_generation(model, tmp_path, trial):
    rng = random.Random(100 + trial)
    # A short message: nearly all of the turn is the 999-token reply.
    _interrupted_chat(model, tmp_path, "hi", [rng.uniform(0.05, 0.6)])


@pytest.mark.parametrize("trial", range(3))
def test_ctrl_c_twice(model, tmp_path, trial):
    """The second Ctrl-C raises KeyboardInterrupt wherever the code is (the REPL closes the turn)."""
    rng = random.Random(200 + trial)
    _interrupted_chat(model, tmp_path, "tell me " + "b" * 40000, [rng.uniform(0.05, 1.0), rng.uniform(0.0, 0.05)])


def test_ctrl_c_after_turn_returns_to_prompt(monkeypatch):
    """A Ctrl-C landing after render has put the previous SIGINT handler back (the second press of a quick double
    Ctrl-C, whose first press ended the turn) returns to the prompt instead of ending the program."""
    import io

    from rich.console import Console

    from rwkvchat.repl import Repl

    sent: list[str] = []

    class Template:
        user, sep = "User", ":"

    class FakeSession:
        template = Template()

        def send(self, line: str):
            sent.append(line)
            return iter(())

        def interrupt(self) -> None:
            pass

    lines = iter(["first", "second"])

    def read_message() -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    repl = Repl(FakeSession(), Console(file=io.StringIO()), interactive=False)
    real_render = repl.render

    def render(events) -> bool:
        result = real_render(events)
        if len(sent) == 1:
            raise KeyboardInterrupt  # What Python's default handler raises for a SIGINT at this point.
        return result

    monkeypatch.setattr(repl, "read_message", read_message)
    monkeypatch.setattr(repl, "render", render)
    try:
        rc = repl.run()
    except KeyboardInterrupt:  # Let through, it would stop the whole pytest run.
        pytest.fail("KeyboardInterrupt left Repl.run: the chat would end")
    assert rc == 0
    assert sent == ["first", "second"]


# The CLI in a child whose np.savez raises SIGINT at itself from inside the first autosave after start-up.
_SIGINT_IN_SAVE = r"""
import os, signal, sys
import numpy as np
presses = int(os.environ["SIGINT_PRESSES"])
calls = [0]
real_savez = np.savez
def savez(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 2:  # 1: the new session's first save; 2: the autosave after the first turn.
        for _ in range(presses):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # Python runs signal handlers between bytecodes: give it some.
                pass
    return real_savez(*args, **kwargs)
np.savez = savez
from rwkvchat.cli import main
sys.argv = ["rwkvchat", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_save(model, tmp_path, presses):
    chat = _Chat(model, tmp_path, _SIGINT_IN_SAVE.replace('os.environ["SIGINT_PRESSES"]', str(presses)))
    chat.wait_for("saved after every turn")
    chat.send("first message")
    chat.send("hello")
    rc, out, err = chat.finish()
    assert rc == 0 and "Traceback" not in err, f"exit {rc}\n{err[-3000:]}\n{out[-1500:]}"
    transcript = _check_resumes(model, chat.session_file, expect_last_user="hello")
    users = [t["text"] for t in transcript if t.get("role") == "user"]
    assert users == ["first message", "hello"], users
