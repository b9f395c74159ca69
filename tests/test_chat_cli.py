"""`rwkvchat gen` and `rwkvchat chat` from the outside: in-process through cli.run, and as a subprocess for
stdin piping, --json and exit codes (0 ok, 1 runtime error, 2 usage error).

The model is a small real RWKV-7 GGUF with random weights and the bytes tokenizer, made here with the
converter, so its text is noise; the tests check mechanics (seeds, stops, prompts, files), not content.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, random_v7

SRC = str(REPO / "src")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from rwkvchat import _native

    if not os.path.exists(_native.library_path()):
        pytest.skip(f"native library not built: {_native.library_path()}")
    from rwkvchat.convert import write_gguf

    path = tmp_path_factory.mktemp("chatmodel") / "tiny.gguf"
    sd = random_v7(n_vocab=256, n_embd=64, n_layer=2, head_size=32, ranks=(32, 32, 32, 32), seed=5)
    write_gguf(sd, path, dtype="f32", tokenizer="bytes", name="tiny chat test")
    return path


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RWKVCHAT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RWKVCHAT_MODEL", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path / "home"


def cli(
    args: list[str], stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rwkvchat", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=e,
        timeout=120,
    )


def run_inproc(args: list[str], capsys) -> tuple[int, str, str]:
    from rwkvchat.cli import run

    code = run(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gen_seed_reproduces_and_differs(tiny_model, home, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    args = [
        "gen",
        "Hello",
        "-n",
        "30",
        "--raw",
        "--temp",
        "1",
        "--top-p",
        "1",
        "--json",
        "--model",
        str(tiny_model),
    ]
    a = run_inproc(args + ["--seed", "3"], capsys)
    b = run_inproc(args + ["--seed", "3"], capsys)
    c = run_inproc(args + ["--seed", "4"], capsys)
    assert a[0] == b[0] == c[0] == 0
    ja, jb, jc = (json.loads(x[1]) for x in (a, b, c))
    assert ja["text"] == jb["text"] and ja["text"] != jc["text"]
    assert ja["generated_tokens"] == 30 and ja["stop_reason"] == "length"
    assert ja["prompt_tokens"] == len(b"Hello")
    assert set(ja) >= {
        "text",
        "prompt_tokens",
        "generated_tokens",
        "prefill_s",
        "generate_s",
        "tokens_per_s",
        "stop_reason",
    }


def test_gen_stop_string_cuts_the_same_seeded_text(tiny_model, home, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    base = [
        "gen",
        "Once",
        "-n",
        "60",
        "--raw",
        "--seed",
        "11",
        "--temp",
        "1",
        "--top-p",
        "1",
        "--json",
        "--model",
        str(tiny_model),
    ]
    full = json.loads(run_inproc(base, capsys)[1])["text"]
    stop = next(ch for ch in full[3:] if ch.isascii() and ch.isalnum())
    cut = json.loads(run_inproc(base + ["--stop", stop], capsys)[1])
    assert cut["stop_reason"] == "stop"
    assert cut["text"] == full[: full.index(stop)]


def test_gen_streams_text_to_stdout(tiny_model, home):
    r = cli(["gen", "Hi", "-n", "12", "--seed", "1", "--raw", "--model", str(tiny_model)])
    assert r.returncode == 0, r.stderr
    j = cli(["gen", "Hi", "-n", "12", "--seed", "1", "--raw", "--json", "--model", str(tiny_model)])
    assert r.stdout == json.loads(j.stdout)["text"] + (
        "" if json.loads(j.stdout)["text"].endswith("\n") else "\n"
    )


def test_piped_text_goes_after_the_instruction(tiny_model, home):
    from rwkvchat.prompts import instruction_prompt

    material = "Line one.\n\nLine two."
    r = cli(
        ["gen", "summarize", "--json", "-n", "5", "--seed", "1", "--model", str(tiny_model)], stdin=material
    )
    assert r.returncode == 0, r.stderr
    expected = instruction_prompt("summarize", material)
    assert expected.startswith("Instruction: summarize\n\nInput: Line one.\nLine two.\n\nResponse:")
    assert json.loads(r.stdout)["prompt_tokens"] == len(expected.encode())


def test_dash_reads_the_whole_prompt_from_stdin(tiny_model, home):
    r = cli(["gen", "-", "--raw", "--json", "-n", "3", "--model", str(tiny_model)], stdin="abc\ndef")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prompt_tokens"] == 7
    # Without --raw the prompt is one chat turn of the model's template.
    r = cli(["gen", "-", "--json", "-n", "3", "--model", str(tiny_model)], stdin="abc")
    assert json.loads(r.stdout)["prompt_tokens"] == len("User: abc\n\nAssistant:")


def test_usage_errors_exit_2(tiny_model, home, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    code, _, err = run_inproc(["gen", "--model", str(tiny_model)], capsys)
    assert code == 2 and "no prompt" in err
    code, _, err = run_inproc(["gen", "x", "--temp", "9", "--model", str(tiny_model)], capsys)
    assert code == 2
    r = cli(["gen", "--model", str(tiny_model)], stdin="")
    assert r.returncode == 2 and "stdin was empty" in r.stderr
    assert cli(["gen", "-", "--model", str(tiny_model)], stdin="  ").returncode == 2


def test_runtime_errors_are_one_line_exit_1(tmp_path, home):
    r = cli(["gen", "hi", "--model", str(tmp_path / "missing.gguf")])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"rwkvchat: error: model file not found: {tmp_path / 'missing.gguf'} (from --model)"
    ]
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model at all" * 10)
    r = cli(["gen", "hi", "--model", str(junk)])
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("rwkvchat: error: ")
    r = cli(["gen", "hi", "--model", str(tmp_path)])
    assert r.returncode == 1 and "directory" in r.stderr
    # --debug shows the traceback.
    r = cli(["--debug", "gen", "hi", "--model", str(junk)])
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_model_resolution_order(tiny_model, home, tmp_path, monkeypatch):
    from rwkvchat import config

    monkeypatch.setattr(config, "demo_model_path", lambda: tmp_path / "no-demo.gguf")
    with pytest.raises(Exception, match="no model given"):
        config.resolve_model(None)
    cfg = config.config_file()
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'model = "{tiny_model}"\n', encoding="utf-8")
    assert config.resolve_model(None).source.startswith("config file")
    monkeypatch.setenv("RWKVCHAT_MODEL", str(tiny_model))
    assert config.resolve_model(None).source == "RWKVCHAT_MODEL"
    assert config.resolve_model(str(tiny_model)).source == "--model"
    monkeypatch.setenv("RWKVCHAT_MODEL", str(tmp_path / "gone.gguf"))
    with pytest.raises(Exception, match="RWKVCHAT_MODEL"):
        config.resolve_model(None)
    cfg.write_text("model = [unclosed\n", encoding="utf-8")
    monkeypatch.delenv("RWKVCHAT_MODEL")
    with pytest.raises(Exception, match="not valid TOML"):
        config.resolve_model(None)


def test_demo_model_is_used_last_with_one_note(tiny_model, home, tmp_path, monkeypatch):
    from rwkvchat import config

    if not config.demo_model_path().is_file():
        r = cli(["gen", "hi", "-n", "2"])
        assert r.returncode == 1 and "no model given" in r.stderr and "--model" in r.stderr
        pytest.skip("the demo model is not in the package yet (checked the error instead)")
    r = cli(["gen", "hi", "-n", "2"])
    assert r.returncode == 0
    assert r.stderr.count("demo model") == 1


def test_piped_chat_session_saves_and_resumes(tiny_model, home):
    script = "/set max_tokens 8\nhello\n/save s1\nagain\n/exit\n"
    r = cli(["chat", "--model", str(tiny_model), "--seed", "2"], stdin=script)
    assert r.returncode == 0, r.stderr
    assert "User: hello" in r.stdout and "Assistant: " in r.stdout and "saved as s1" in r.stdout
    assert "\x1b[" not in r.stdout  # not a terminal: plain text
    saved = home / "data" / "sessions" / "s1.npz"
    assert saved.exists()
    r = cli(["chat", "--model", str(tiny_model), "--session", "s1"], stdin="/export json\n")
    assert r.returncode == 0, r.stderr
    assert "resumed s1: 2 turns" in r.stdout
    assert '"text": "again"' in r.stdout
    # The token ids live beside the save: the whole conversation, from the init prompt on.
    import numpy as np

    from rwkvchat.model import Model

    ids = np.fromfile(saved.with_suffix(".tokens"), dtype="<u4").tolist()
    with Model(str(tiny_model), threads=1) as m:
        text = m.tokenizer.decode(ids)
    assert text.startswith("User: hi\n\nAssistant: Hi.") and text.endswith("\n\n")
    assert text.index("User: hello\n\nAssistant:") < text.index("User: again\n\nAssistant:")


def test_chat_bad_inputs(tiny_model, home, tmp_path):
    r = cli(["chat", "--model", str(tiny_model), "--session", "../evil"])
    assert r.returncode == 1 and "bad session name" in r.stderr
    r = cli(["chat", "--model", str(tiny_model), "--prompt", str(tmp_path / "nope.json")])
    assert r.returncode == 1 and "prompt file not found" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"template": "klingon"}', encoding="utf-8")
    r = cli(["chat", "--model", str(tiny_model), "--prompt", str(bad)])
    assert r.returncode == 1 and "template must be" in r.stderr
    r = cli(["chat", "--model", str(tiny_model), "--preset", "xx-chat"])
    assert r.returncode == 1 and "unknown preset" in r.stderr
    r = cli(["chat", "--model", str(tiny_model)], stdin="/nope\n/set temp hot\n+++\n")
    assert r.returncode == 0
    assert "error: unknown command /nope" in r.stdout and "not a number" in r.stdout
    assert "nothing to continue yet" in r.stdout


def test_builtin_presets_load_in_every_template():
    from rwkvchat.prompts import TEMPLATES, builtin_presets
    from rwkvchat.sampling import SamplingParams

    presets = builtin_presets()
    assert set(presets) == {"en-chat", "en-qa", "zh-chat", "zh-qa", "ja-chat", "ja-qa"}
    for p in presets.values():
        SamplingParams.from_dict(p.sampling)
        for t in TEMPLATES.values():
            text = p.init_text(t)
            assert "{" not in text and (text == "" or text.endswith("\n\n")) and "\n\n\n" not in text
    assert presets["en-chat"].init_text(TEMPLATES["raven"]).count("Bob:") >= 2
    assert presets["en-chat"].init_text(TEMPLATES["world"]).startswith("User: hi\n\nAssistant: Hi.")


def test_world_tokenizer_model_from_llamacpp(tiny_model, home):  # tiny_model: skips without the library
    model = REPO.parent / "shared" / "conformance" / "llamacpp-gguf" / "llamacpp-v7-F16.gguf"
    if not model.is_file():
        pytest.skip(f"{model} is absent")
    r = cli(
        ["chat", "--model", str(model), "--seed", "1"], stdin="/set max_tokens 6\n你好，世界\n+\n/stats\n"
    )
    assert r.returncode == 0, r.stderr
    assert "User: 你好，世界" in r.stdout and r.stdout.count("Assistant: ") == 2
    assert "template: world" in r.stdout
    j = cli(["gen", "The", "--raw", "--json", "-n", "5", "--seed", "2", "--model", str(model)])
    assert j.returncode == 0, j.stderr
    out = json.loads(j.stdout)
    assert out["generated_tokens"] == 5 and out["prompt_tokens"] == 1 and "\ufffd" not in out["text"]


def test_session_resumed_on_another_model_is_refed(tiny_model, home, tmp_path):
    from rwkvchat.convert import write_gguf

    other = tmp_path / "other.gguf"
    sd = random_v7(n_vocab=256, n_embd=64, n_layer=2, head_size=32, ranks=(32, 32, 32, 32), seed=6)
    write_gguf(sd, other, dtype="f32", tokenizer="bytes", name="another tiny model")
    r = cli(["chat", "--model", str(tiny_model), "--session", "x"], stdin="/set max_tokens 4\nhi there\n")
    assert r.returncode == 0 and "new session x" in r.stdout
    r = cli(["chat", "--model", str(other), "--session", "x"], stdin="/stats\n")
    assert r.returncode == 0, r.stderr
    assert "saved with a different model; re-feeding its transcript (1 turns)" in r.stdout
    r = cli(["chat", "--model", str(other), "--session", "x"], stdin="")
    assert "resumed x: 1 turns" in r.stdout  # Now saved for the new model.


def _has_cuda() -> bool:
    from rwkvchat import _native

    return "CUDA=1" in _native.system_info()


@pytest.mark.parametrize("command", ["chat", "gen", "perplexity"])
def test_device_cuda_without_a_cuda_build_is_one_error_line(tiny_model, home, tmp_path, command):
    if _has_cuda():
        pytest.skip("this library was built with CUDA: the missing-CUDA message cannot appear")
    text = tmp_path / "t.txt"
    text.write_text("hello there\n", encoding="utf-8")
    args = {
        "chat": ["chat", "--model", str(tiny_model)],
        "gen": ["gen", "hi", "--model", str(tiny_model)],
        "perplexity": ["perplexity", str(tiny_model), str(text)],
    }[command]
    r = cli([*args, "--device", "cuda", "--gpu-layers", "1"], stdin="hi\n")
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        "rwkvchat: error: this build has no CUDA support (rebuild with -DRWKVC_CUDA=ON)"
    ]
    assert r.stdout == ""


def test_bad_device_names_are_refused(tiny_model, home):
    r = cli(["gen", "hi", "--model", str(tiny_model), "--device", "tpu"])
    assert r.returncode == 1
    assert r.stderr.strip() == 'rwkvchat: error: device must be "cpu", "cuda" or "cuda:N", got \'tpu\''
    r = cli(["gen", "hi", "--model", str(tiny_model), "--gpu-layers", "-1"])
    assert r.returncode == 2  # A usage error: typer refuses it before anything loads.


def test_gen_ban_and_logit_bias_shape_the_tokens(tiny_model, home, capsys, monkeypatch):
    from rwkvchat.model import Model

    with Model(str(tiny_model), threads=1) as m:
        a, b = m.tokenizer.encode("A")[0], m.tokenizer.encode("B")[0]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    base = ["gen", "x", "-n", "8", "--raw", "--seed", "1", "--temp", "1", "--top-p", "1", "--json"]
    base += ["--model", str(tiny_model)]
    code, out, _ = run_inproc([*base, "--logit-bias", f"{a}:60"], capsys)
    assert code == 0 and json.loads(out)["text"] == "A" * 8
    # A ban beats any bias; the next most pushed token wins instead.
    code, out, _ = run_inproc([*base, "--logit-bias", f"{a}:60", "--logit-bias", f"{b}:50", "--ban", str(a)], capsys)
    assert code == 0 and json.loads(out)["text"] == "B" * 8
    code, _, err = run_inproc([*base, "--logit-bias", "65"], capsys)
    assert code == 2 and "ID:BIAS" in err
    code, _, err = run_inproc([*base, "--ban", "100000"], capsys)
    assert code == 2 and "out of range" in err

