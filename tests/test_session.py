"""Session against a scripted fake model: grammar, the five snapshots, interruption, saved conversations.

The fake model's state is the list of tokens fed so far, so every assertion about a snapshot can say
exactly which text it has seen. Its logits put a margin of 40 on the next character of a scripted
reply (any sampler picks it), or are flat (the sampler's rng decides) when the script has nothing to say.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

import numpy as np
import pytest

from rwkvchat import commands as C
from rwkvchat.prompts import Preset, choose_template
from rwkvchat.sampling import SamplingParams
from rwkvchat.session import Error, ExitRequested, Info, ReplyStart, Session, Stats, Stopped, TokenText

N_VOCAB = 256
_MAX_STATE = 8192


class FakeStream:
    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._dec.decode(bytes([token]) if token else b"")

    @property
    def pending(self) -> int:
        return len(self._dec.getstate()[0])

    def flush(self) -> str:
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out


class FakeTokenizer:
    """Bytes as tokens; id 0 is end-of-text (no bytes)."""

    kind = "world"
    eos_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i).decode("utf-8", errors="replace")

    def token_bytes(self, i: int) -> bytes:
        return bytes([i]) if i else b""

    def stream(self) -> FakeStream:
        return FakeStream()

    def banned_ids(self) -> list[int]:
        return []


class FakeState:
    def __init__(self, tokens: list[int] | None = None) -> None:
        self.tokens = list(tokens or [])

    def copy(self) -> FakeState:
        return FakeState(self.tokens)

    def to_numpy(self) -> np.ndarray:
        a = np.zeros(_MAX_STATE, dtype=np.float32)
        a[0] = len(self.tokens)
        a[1 : 1 + len(self.tokens)] = self.tokens
        return a

    def text(self) -> str:
        return FakeTokenizer().decode(self.tokens)


class FakeModel:
    """next_char(text_fed_so_far) -> the character to favour, or None for flat logits."""

    def __init__(
        self,
        next_char: Callable[[str], str | None],
        fingerprint: str = "fake-1",
        name: str = "fake world model",
    ) -> None:
        self.next_char = next_char
        self.tokenizer = FakeTokenizer()
        self.n_vocab = N_VOCAB
        self.fingerprint = fingerprint
        self.name = name
        self.calls: list[tuple[int, bool]] = []  # (number of tokens, logits wanted) per forward
        self.on_forward: Callable[[], None] | None = None

    def metadata_value(self, key: str) -> object:
        return self.name if key == "general.name" else None

    def new_state(self) -> FakeState:
        return FakeState()

    def state_from_numpy(self, a: np.ndarray) -> FakeState:
        n = int(a[0])
        return FakeState([int(x) for x in a[1 : 1 + n]])

    def forward(self, tokens: list[int], state: FakeState, logits: bool = True) -> np.ndarray | None:
        self.calls.append((len(tokens), logits))
        state.tokens.extend(int(t) for t in tokens)
        if self.on_forward is not None:
            self.on_forward()
        if not logits:
            return None
        out = np.zeros(N_VOCAB, dtype=np.float32)
        ch = self.next_char(state.text())
        if ch is not None:
            out[ch.encode("utf-8")[0]] = 40.0
        return out


def scripted(reply: str | Callable[[str], str]) -> Callable[[str], str | None]:
    """A chat script: after the last 'Assistant:', spell out `reply` (which may depend on the context)."""

    def next_char(text: str) -> str | None:
        i = text.rfind("Assistant:")
        if i < 0:
            return None
        target = reply(text[:i]) if callable(reply) else reply
        done = text[i + len("Assistant:") :]
        if target.startswith(done) and len(done) < len(target):
            return target[len(done)]
        return None

    return next_char


PRESET = Preset(name="test", prompt="{user}{sep} hi\n\n{bot}{sep} Hello.")
INIT = "User: hi\n\nAssistant: Hello.\n\n"


def make(reply: str | Callable[[str], str] = " Hi there!\n\n", **kw: object) -> tuple[Session, FakeModel]:
    model = FakeModel(scripted(reply), **{k: v for k, v in kw.items() if k in ("fingerprint", "name")})
    s = Session(
        model, preset=PRESET, seed=1, **{k: v for k, v in kw.items() if k not in ("fingerprint", "name")}
    )
    assert list(s.prime()) == []
    return s, model


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenText))


def test_prime_sets_chat_init_and_chat():
    s, _ = make()
    assert s.snapshot("chat_init").state.text() == INIT
    assert s.snapshot("chat").state.text() == INIT
    assert s.snapshot("chat").state is not s.snapshot("chat_init").state


def test_chat_turn_events_and_snapshots():
    s, _ = make()
    events = list(s.send("hello"))
    assert isinstance(events[0], ReplyStart) and events[0].speaker == "Assistant"
    assert text_of(events) == "Hi there!"
    assert [type(e) for e in events[-2:]] == [Stopped, Stats]
    assert events[-2].reason == "stop" and events[-2].text == "Hi there!"
    assert s.snapshot("chat_pre").state.text() == INIT + "User: hello\n\nAssistant:"
    assert s.snapshot("chat").state.text() == INIT + "User: hello\n\nAssistant: Hi there!\n\n"
    assert s.transcript == [{"role": "user", "text": "hello"}, {"role": "assistant", "text": "Hi there!"}]


def test_user_text_is_cleaned_and_backslash_n_becomes_newline():
    s, _ = make()
    list(s.send("a\\n\\nb\r\n\r\nc"))
    assert s.snapshot("chat_pre").state.text() == INIT + "User: a\nb\nc\n\nAssistant:"


def test_plus_regenerates_from_chat_pre_without_prefill():
    s, m = make(reply=lambda ctx: " One.\n\n")
    list(s.send("q"))
    m.calls.clear()
    events = list(s.send("+"))
    assert text_of(events) == "One."
    assert all(n == 1 for n, _ in m.calls), "`+` must not re-feed the message"
    assert [t["role"] for t in s.transcript] == ["user", "assistant"]
    assert s.snapshot("chat").state.text() == INIT + "User: q\n\nAssistant: One.\n\n"


def test_model_writing_the_users_turn_is_cut_and_state_rebuilt():
    s, _ = make(reply=" Sure.\nUser: and now me")
    events = list(s.send("go"))
    assert text_of(events) == "Sure."
    assert events[-2].reason == "stop"
    assert s.snapshot("chat").state.text() == INIT + "User: go\n\nAssistant: Sure.\n\n"


def test_interrupt_keeps_partial_reply_and_closes_turn():
    s, _ = make(reply=" " + "abcdefghij" * 20)
    shown = []
    for e in s.send("long please"):
        if isinstance(e, TokenText):
            shown.append(e.text)
            if len("".join(shown)) >= 5:
                s.interrupt()
        last = e
    partial = "".join(shown)
    assert isinstance(last, Stats)
    assert 5 <= len(partial) < 20
    assert s.snapshot("chat").state.text() == INIT + "User: long please\n\nAssistant: " + partial + "\n\n"
    assert s.transcript[-1] == {"role": "assistant", "text": partial}
    # The session goes on normally afterwards.
    s2_events = list(s.send("next"))
    assert any(isinstance(e, Stopped) for e in s2_events)


def test_closing_the_event_iterator_leaves_a_consistent_state():
    s, _ = make(reply=" " + "xyz" * 50)
    it = s.send("hi")
    got = ""
    for e in it:
        if isinstance(e, TokenText):
            got += e.text
            if len(got) >= 4:
                break
    it.close()
    assert s.snapshot("chat").state.text() == INIT + "User: hi\n\nAssistant: " + got + "\n\n"


def test_free_generation_retry_and_continue():
    s, m = make(reply=" x\n\n")
    m.next_char = lambda text: "a" if text.startswith("\nonce") else None
    events = list(s.send("+gen once"))
    assert isinstance(events[0], ReplyStart) and events[0].speaker is None
    out = text_of(events)
    assert out.startswith("a") and len(out) > 0
    assert s.snapshot("gen_0").state.text() == "\nonce"
    assert s.snapshot("gen_1").state.text() == "\nonce" + out
    m.calls.clear()
    again = text_of(list(s.send("++")))
    assert all(n == 1 for n, _ in m.calls), "`++` must not re-feed the prompt"
    assert s.snapshot("gen_1").state.text() == "\nonce" + again
    more = text_of(list(s.send("+++")))
    assert s.snapshot("gen_1").state.text() == "\nonce" + again + more
    assert s.snapshot("gen_0").state.text() == "\nonce" + again


def test_free_generation_soft_cap():
    s, m = make()
    m.next_char = lambda text: "a"
    events = list(s.send("+gen z -temp=1"))
    assert events[-1].generated_tokens == 256
    assert events[-2].reason == "length"


def test_instruction_and_qq_prompts():
    s, _ = make()
    list(s.send("+qq why?"))
    assert s.snapshot("gen_0").state.text() == "\nQ: why?\nA:"
    list(s.send("+i do\n\nit"))
    t = s.snapshot("gen_0").state.text()
    assert t.startswith("\nBelow is an instruction") and t.endswith("# Instruction:\ndo\nit\n\n# Response:\n")


def test_qa_starts_from_chat_init_and_ignores_the_chat():
    s, _ = make()
    list(s.send("first"))
    list(s.send("+qa capital?"))
    assert s.snapshot("gen_0").state.text() == INIT + "User: capital?\n\nAssistant:"


def test_reset_returns_to_chat_init():
    s, _ = make()
    list(s.send("hello"))
    events = list(s.send("+reset"))
    assert events == [Info("Chat reset.")]
    assert s.snapshot("chat").state.text() == INIT
    assert s.transcript == []


def test_missing_snapshots_explain_themselves():
    s, _ = make()
    for line, word in (("+", "regenerate"), ("++", "retry"), ("+++", "continue")):
        events = list(s.send(line))
        assert len(events) == 1 and isinstance(events[0], Error) and word in events[0].message


def test_bad_commands_become_error_events():
    s, _ = make()
    assert isinstance(list(s.send(""))[0], Error)
    assert "unknown command" in list(s.send("/frobnicate"))[0].message
    assert "usage" in list(s.send("/set temp"))[0].message


def test_prompt_command_starts_fresh_and_becomes_reset_point(tmp_path):
    s, _ = make()
    list(s.send("hello"))
    p = tmp_path / "p.txt"
    p.write_text("  User: yo  \n\n  Assistant: Yo.\n", encoding="utf-8")
    events = list(s.send(f"+prompt {p}"))
    assert events[-1] == Info("Prompt set up.")
    assert s.snapshot("chat").state.text() == "User: yo\n\nAssistant: Yo.\n\n"
    list(s.send("more"))
    list(s.send("+reset"))
    assert s.snapshot("chat").state.text() == "User: yo\n\nAssistant: Yo.\n\n"
    bad = list(s.send(f"+prompt {tmp_path / 'nope.txt'}"))
    assert isinstance(bad[0], Error) and "not found" in bad[0].message


def test_inline_overrides_apply_to_one_message(monkeypatch):
    import rwkvchat.session_loop as sm

    seen: list[tuple[float, float]] = []
    real = sm.sample

    def spy(logits, params, rng):
        seen.append((params.temperature, params.top_p))
        return real(logits, params, rng)

    monkeypatch.setattr(sm, "sample", spy)
    s, _ = make()
    list(s.send("hi -temp=1.50 -top_p=0.9"))
    assert set(seen) == {(1.5, 0.9)}
    assert s.snapshot("chat_pre").state.text().endswith("User: hi\n\nAssistant:")
    seen.clear()
    list(s.send("again"))
    assert set(seen) == {(s.params.temperature, s.params.top_p)}


def test_set_changes_defaults_and_seed():
    s, _ = make()
    assert list(s.send("/set temp 0.7")) == [Info("temperature = 0.7")]
    assert s.params.temperature == 0.7
    list(s.send("/set seed 5"))
    assert s.seed == 5


def test_newline_never_starts_a_reply():
    s, m = make()
    # The script wants a newline right away; the chat rule bans it for the first two tokens.
    m.next_char = lambda text: "\n" if text.endswith("Assistant:") or text.endswith("Assistant: ") else None
    events = list(s.send("x"))
    reply_tokens = s.snapshot("chat_pre").state.tokens
    full = s.snapshot("chat").state.tokens
    # The first two generated tokens (if the reply did not end early) are not newlines.
    gen = full[len(reply_tokens) :]
    assert 10 not in gen[:2]
    assert any(isinstance(e, Stopped) for e in events)


def test_chunked_prefill_matches_and_skips_the_head():
    s, m = make(chunk_len=4)
    m.calls.clear()
    list(s.send("a longer message"))
    prefill = [c for c in m.calls if c[0] > 1 or not c[1]]
    assert all(n <= 4 for n, _ in prefill)
    assert [want for _, want in prefill[:-1]] == [False] * (len(prefill) - 1)
    assert s.snapshot("chat_pre").state.text() == INIT + "User: a longer message\n\nAssistant:"


def test_interrupted_prefill_leaves_chat_unchanged():
    s, m = make(chunk_len=2)
    before = s.snapshot("chat").state.text()
    m.on_forward = s.interrupt
    events = list(s.send("some long message here"))
    m.on_forward = None
    assert events[0] == Stopped("interrupted")
    assert s.snapshot("chat").state.text() == before
    assert s.transcript == []


def test_think_mode_on_g1():
    s, _ = make(reply=" <think>ok</think> Fine.\n\n", name="rwkv7-g1a-0.1b")
    assert s.template.name == "g1"
    s.think = True
    events = list(s.send("hm"))
    assert s.snapshot("chat_pre").state.text().endswith("Assistant: <think")
    assert text_of(events).startswith("<think")


def test_template_choice():
    assert choose_template("world", 65536, "RWKV7 G1 1.5B") == "g1"
    assert choose_template("world", 65536, "rwkv7-g1a-2.9b-20250924") == "g1"
    assert choose_template("world", 65536, "rwkv-x070-world") == "world"
    assert choose_template("hf", 50277, "RWKV-4-Raven-7B") == "raven"
    assert choose_template("hf", 1024, "demo") == "world"
    assert choose_template("world", 65536, "g10-model") == "world"


def test_save_and_resume_same_model_costs_no_prefill(tmp_path):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("remember me"))
    assert (tmp_path / "c.npz").exists()
    s2, m2 = make()
    m2.calls.clear()
    events = list(s2.resume(tmp_path / "c.npz"))
    assert m2.calls == []
    assert "resumed" in events[0].message
    assert s2.snapshot("chat").state.text() == s.snapshot("chat").state.text()
    assert s2.transcript == s.transcript
    list(s2.send("+"))  # chat_pre came back too
    assert s2.snapshot("chat").state.text() == s.snapshot("chat").state.text()


def test_resume_on_another_model_refeeds_the_transcript(tmp_path):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("remember me"))
    s2, m2 = make(fingerprint="other")
    events = list(s2.resume(tmp_path / "c.npz"))
    assert "different model" in events[0].message
    assert s2.snapshot("chat").state.text() == s.snapshot("chat").state.text()
    assert s2.snapshot("chat_init").state.text() == INIT


def test_save_and_load_commands(tmp_path):
    s, _ = make(save_dir=tmp_path)
    list(s.send("one"))
    events = list(s.send("/save mine"))
    assert "saved" in events[0].message and (tmp_path / "mine.npz").exists()
    list(s.send("two"))  # autosaved from now on
    s2, _ = make(save_dir=tmp_path)
    list(s2.send("/load mine"))
    assert [t["text"] for t in s2.transcript if t["role"] == "user"] == ["one", "two"]
    assert "no saved session" in list(s2.send("/load nothere"))[0].message


def test_export_md_and_json(tmp_path):
    s, _ = make()
    list(s.send("hello"))
    md = list(s.send("/export md"))[0].message
    assert md == "**User:** hello\n\n**Assistant:** Hi there!"
    list(s.send(f"/export json {tmp_path / 'x.json'}"))
    import json

    data = json.loads((tmp_path / "x.json").read_text(encoding="utf-8"))
    assert data["transcript"][1] == {"role": "assistant", "text": "Hi there!"}


def _ids(path) -> list[int]:
    return np.fromfile(path, dtype="<u4").tolist()


def _chat_ids(s: Session) -> list[int]:
    return s.snapshot("chat").state.tokens  # The fake state is exactly the ids fed.


def test_save_writes_exactly_the_ids_fed_and_follows_branches(tmp_path):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("one"))
    list(s.send("two"))
    assert _ids(tmp_path / "c.tokens") == _chat_ids(s)
    assert len(_chat_ids(s)) > len(INIT) + 20
    # `+` replaces the last reply and `+reset` goes back to the init prompt: the file follows the chat.
    s.rng = np.random.default_rng(3)
    s.model.next_char = scripted(" Another one.\n\n")
    list(s.send("+"))
    assert _ids(tmp_path / "c.tokens") == _chat_ids(s)
    assert bytes(_ids(tmp_path / "c.tokens")).decode().endswith("Assistant: Another one.\n\n")
    list(s.send("+reset"))
    assert _ids(tmp_path / "c.tokens") == _chat_ids(s) == list(INIT.encode())
    # Free generation never reaches the file; only the pending ids of one turn stay in memory.
    list(s.send("+gen story"))
    assert _ids(tmp_path / "c.tokens") == list(INIT.encode())
    assert s.snapshot("chat").fed == [] and s.snapshot("gen_1").fed is None


def test_late_save_still_holds_every_id(tmp_path):
    s, _ = make(save_dir=tmp_path)
    list(s.send("one"))
    list(s.send("/save late"))
    list(s.send("two"))
    assert _ids(tmp_path / "late.tokens") == _chat_ids(s)
    assert _chat_ids(s)[: len(INIT)] == list(INIT.encode())


def test_resume_continues_the_token_file(tmp_path):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("one"))
    s2, _ = make()
    events = list(s2.resume(tmp_path / "c.npz"))
    assert len(events) == 1  # No warning: the token file matched its save.
    s2.save_path = tmp_path / "c.npz"
    list(s2.send("two"))
    assert _ids(tmp_path / "c.tokens") == _chat_ids(s2)
    assert _chat_ids(s2)[: len(_chat_ids(s))] == _chat_ids(s)
    data = __import__("json").loads(s2.export("json"))
    assert data["tokens"] == _chat_ids(s2) and data["tokens_offset"] == 0


def test_token_file_longer_than_its_save_is_cut_back_on_load(tmp_path):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("one"))
    good = _ids(tmp_path / "c.tokens")
    with open(tmp_path / "c.tokens", "ab") as f:  # A crash after appending, before the .npz rename.
        f.write(np.array([7, 8, 9], dtype="<u4").tobytes())
    s2, _ = make()
    events = list(s2.resume(tmp_path / "c.npz"))
    assert len(events) == 1 and "resumed" in events[0].message
    assert _ids(tmp_path / "c.tokens") == good
    s2.save_path = tmp_path / "c.npz"
    list(s2.send("two"))
    assert _ids(tmp_path / "c.tokens") == _chat_ids(s2)


@pytest.mark.parametrize("damage", ["short", "changed", "missing"])
def test_damaged_token_file_is_detected_and_the_history_restarts(tmp_path, damage):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("one"))
    ids = _ids(tmp_path / "c.tokens")
    if damage == "missing":
        (tmp_path / "c.tokens").unlink()
    else:
        bad = ids[:-5] if damage == "short" else [*ids[:-1], (ids[-1] + 1) % 256]
        np.array(bad, dtype="<u4").tofile(tmp_path / "c.tokens")
    s2, _ = make()
    events = list(s2.resume(tmp_path / "c.npz"))
    assert s2.snapshot("chat").state.tokens == _chat_ids(s)  # The state itself resumes.
    assert "token history" in events[-1].message
    n = len(_chat_ids(s))
    s2.save_path = tmp_path / "c.npz"
    list(s2.send("two"))
    assert _ids(tmp_path / "c.tokens") == _chat_ids(s2)[n:]  # Only what came after the loss.
    s3, _ = make()
    assert len(list(s3.resume(tmp_path / "c.npz"))) == 1  # Consistent again: no warning.
    assert s3.log.offset == n


def test_resume_on_another_model_rewrites_the_token_file(tmp_path):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("remember me"))
    s2, _ = make(fingerprint="other")
    list(s2.resume(tmp_path / "c.npz"))
    assert _ids(tmp_path / "c.tokens") == _chat_ids(s2)


def test_transcript_is_streamed_and_only_its_tail_kept(tmp_path):
    from rwkvchat.session_events import TRANSCRIPT_TAIL

    s, _ = make(save_path=tmp_path / "c.npz")
    for i in range(12):
        list(s.send(f"message {i}"))
    assert len(s.transcript) == TRANSCRIPT_TAIL and s.turns == 12
    s.model.next_char = scripted(" Replaced.\n\n")
    list(s.send("+"))
    full = s.full_transcript()
    assert [t["text"] for t in full if t["role"] == "user"] == [f"message {i}" for i in range(12)]
    assert full[-1] == {"role": "assistant", "text": "Replaced."} and len(full) == 24
    assert "message 0" in s.export("md") and "turns: 12;" in list(s.send("/stats"))[0].message
    s2, _ = make()
    list(s2.resume(tmp_path / "c.npz"))
    assert s2.full_transcript() == full and s2.transcript == full[-TRANSCRIPT_TAIL:] and s2.turns == 12
    s2.save_path = tmp_path / "c.npz"
    list(s2.send("+reset"))
    assert s2.full_transcript() == [] and s2.turns == 0
    s3, _ = make()
    list(s3.resume(tmp_path / "c.npz"))  # The reset was saved: the log replays to an empty transcript.
    assert s3.full_transcript() == []


def test_transcript_log_longer_than_its_save_is_cut_back(tmp_path):
    s, _ = make(save_path=tmp_path / "c.npz")
    list(s.send("one"))
    with open(tmp_path / "c.jsonl", "ab") as f:  # A crash after logging, before the .npz rename.
        f.write(b'{"role": "user", "text": "never saved"}\n')
    s2, _ = make()
    events = list(s2.resume(tmp_path / "c.npz"))
    assert len(events) == 1
    assert [t["text"] for t in s2.full_transcript()] == ["one", "Hi there!"]


def test_prompt_command_applies_the_presets_sampling(tmp_path):
    import json

    s, _ = make()
    p = tmp_path / "p.json"
    p.write_text(
        json.dumps({"name": "mine", "prompt": "{user}{sep} yo", "sampling": {"temperature": 0.5, "top_p": 0.1}}),
        encoding="utf-8",
    )
    assert list(s.send(f"+prompt {p}"))[-1] == Info("Prompt set up.")
    assert (s.params.temperature, s.params.top_p) == (0.5, 0.1)


def test_help_stats_exit():
    s, _ = make()
    assert "/retry" in list(s.send("/help"))[0].message and "重新" in list(s.send("/help"))[0].message
    list(s.send("hello"))
    assert "tokens/s" in list(s.send("/stats"))[0].message
    assert list(s.send("/exit")) == [ExitRequested()]


def test_generate_seeded_is_reproducible_and_stops():
    def run(seed: int) -> str:
        m = FakeModel(lambda text: None)
        s = Session(m, preset=PRESET, seed=seed)
        p = SamplingParams(temperature=1.0, top_p=1.0, presence=0, frequency=0, max_tokens=30)
        return [e for e in s.generate("abc", p) if isinstance(e, Stopped)][0].text

    assert run(3) == run(3)
    assert run(3) != run(4)
    m = FakeModel(lambda text: "q" if text.endswith("p") else "p")
    s = Session(m, preset=PRESET, seed=0)
    ev = list(s.generate("start", SamplingParams(stop=("pq",), presence=0, frequency=0, max_tokens=50)))
    assert ev[-2] == Stopped("stop", "")
    assert text_of(ev) == ""


def test_blank_input_is_rejected_by_parse():
    from rwkvchat.errors import CommandError

    with pytest.raises(CommandError, match="please say something"):
        C.parse("   ")


# ---- the same invariants on a small real model (random RWKV-7 weights, bytes tokenizer) ----


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    import os

    from rwkvchat import _native

    if not os.path.exists(_native.library_path()):
        pytest.skip(f"native library not built: {_native.library_path()}")
    from conftest import random_v7

    from rwkvchat.convert import write_gguf
    from rwkvchat.model import Model

    path = tmp_path_factory.mktemp("sessionmodel") / "tiny.gguf"
    sd = random_v7(n_vocab=256, n_embd=64, n_layer=2, head_size=32, ranks=(32, 32, 32, 32), seed=7)
    write_gguf(sd, path, dtype="f32", tokenizer="bytes", name="tiny session test")
    with Model(str(path), threads=1) as m:
        yield m


def _real(model, **kw) -> Session:
    s = Session(model, preset=PRESET, seed=1, **kw)
    list(s.prime())
    s.params = s.params.replace(max_tokens=12)
    return s


def _state(s: Session, name: str) -> np.ndarray:
    return s.snapshot(name).state.to_numpy()


def test_real_plus_from_chat_pre_reproduces_the_reply(real_model):
    s = _real(real_model)
    s.rng = np.random.default_rng(5)
    first = text_of(list(s.send("hello")))
    state_first = _state(s, "chat").copy()
    s.rng = np.random.default_rng(5)
    again = text_of(list(s.send("+")))
    assert again == first
    assert np.max(np.abs(_state(s, "chat") - state_first)) == 0.0


def test_real_save_resume_continue_equals_continue(real_model, tmp_path):
    s1 = _real(real_model)
    list(s1.send("hello"))
    s1.save(tmp_path / "c.npz")
    s2 = Session(real_model, preset=PRESET, seed=1)
    assert [e.message for e in s2.resume(tmp_path / "c.npz")][-1].startswith("resumed")
    s2.params = s1.params
    s1.rng, s2.rng = np.random.default_rng(9), np.random.default_rng(9)
    a, b = text_of(list(s1.send("next"))), text_of(list(s2.send("next")))
    assert a == b
    assert np.max(np.abs(_state(s1, "chat") - _state(s2, "chat"))) == 0.0
    # The token files of both match, and hold what the real tokenizer gives for the conversation.
    s1.save(tmp_path / "a.npz")
    s2.save(tmp_path / "c.npz")
    ids = np.fromfile(tmp_path / "a.tokens", dtype="<u4")
    assert np.array_equal(ids, np.fromfile(tmp_path / "c.tokens", dtype="<u4"))
    assert ids.size == s1.snapshot("chat").n_tokens
    assert real_model.tokenizer.decode(ids.tolist()).startswith(INIT + "User: hello\n\nAssistant:")


def test_real_chunked_prefill_equals_one_sequence(real_model):
    whole, chunked = _real(real_model, chunk_len=4096), _real(real_model, chunk_len=3)
    assert np.max(np.abs(_state(whole, "chat_init") - _state(chunked, "chat_init"))) < 1e-4
    d = np.max(np.abs(whole.snapshot("chat_init").logits - chunked.snapshot("chat_init").logits))
    assert d < 1e-3


def test_real_free_generation_continue_starts_from_gen_1(real_model):
    s = _real(real_model)
    list(s.send("+gen Once"))
    gen1 = _state(s, "gen_1").copy()
    list(s.send("+++"))
    assert np.max(np.abs(_state(s, "gen_0") - gen1)) == 0.0


def test_qa_lowers_the_newline_logit_by_two():
    class Biased(FakeModel):
        def forward(self, tokens, state, logits=True):
            super().forward(tokens, state, logits=False)
            if not logits:
                return None
            out = np.full(N_VOCAB, -10.0, dtype=np.float32)
            out[ord("\n")], out[ord("a")] = 1.5, 0.1  # Newline wins by 1.4, loses after a -2 bias.
            return out

    m = Biased(lambda text: None)
    s = Session(m, preset=PRESET, seed=0, params=SamplingParams(temperature=0, presence=0, frequency=0))
    list(s.prime())
    gen = text_of(list(s.send("+gen x")))
    qa = text_of(list(s.send("+qa x")))
    assert gen.startswith("\n") and qa.startswith("a") and "\n" not in qa


def test_preset_stop_strings_end_the_reply_and_the_turn_is_rebuilt():
    preset = Preset(name="stops", prompt=PRESET.prompt, stop=("\n\n", "END"))
    m = FakeModel(scripted(" Done. END and more"))
    s = Session(m, preset=preset, seed=1)
    list(s.prime())
    assert text_of(list(s.send("go"))) == "Done."
    assert s.snapshot("chat").state.text() == INIT + "User: go\n\nAssistant: Done.\n\n"


def test_demo_model_replies_end_on_the_round_separator():
    import os
    from pathlib import Path

    from rwkvchat import _native

    demo = Path(__file__).resolve().parent.parent / "src" / "rwkvchat" / "data" / "demo.gguf"
    if not demo.is_file() or not os.path.exists(_native.library_path()):
        pytest.skip("the demo model or the native library is absent")
    from rwkvchat.model import Model

    with Model(str(demo), threads=1) as m:
        s = Session(m, seed=1)
        assert s.template.name == "world"
        list(s.prime())
        for line in ("hello!", "what do you like to do?", "+"):
            events = list(s.send(line))
            stopped = next(e for e in events if isinstance(e, Stopped))
            assert stopped.reason == "stop" and stopped.text.strip() and "\n\n" not in stopped.text
            assert text_of(events) == stopped.text
        assert [t["role"] for t in s.transcript] == ["user", "assistant", "user", "assistant"]
