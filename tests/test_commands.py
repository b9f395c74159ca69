"""Table-driven tests of the chat command grammar (commands.parse is pure)."""

from __future__ import annotations

import pytest

from rwkvchat import commands as C
from rwkvchat.errors import CommandError

Ov = C.Overrides


@pytest.mark.parametrize(
    "line, expected",
    [
        ("hello", C.Message(text="hello")),
        ("  hello  ", C.Message(text="hello")),
        ("a\\nb", C.Message(text="a\nb")),
        ("+", C.Reply()),
        ("++", C.Retry()),
        ("+++", C.Continue()),
        ("+reset", C.Reset()),
        ("+Reset", C.Message(text="+Reset")),  # ChatRWKV: +reset must match exactly
        ("+gen Once upon", C.Gen(text="Once upon")),
        ("+GEN Once", C.Gen(text="Once")),  # prefixes ignore case
        ("+i write a poem", C.Instruct(text="write a poem")),
        ("+qq why?", C.AskQ(text="why?")),
        ("+qa capital of France?", C.AskQA(text="capital of France?")),
        ("+prompt ~/p.json", C.LoadPrompt(path="~/p.json")),
        ("+general", C.Message(text="+general")),  # not "+gen " with its space
        ("+ hello", C.Message(text="+ hello")),
        ("/retry", C.Retry()),
        ("/continue", C.Continue()),
        ("/reset", C.Reset()),
        ("/gen Once", C.Gen(text="Once")),
        ("/ask why", C.AskQA(text="why")),
        ("/help", C.Help()),
        ("/HELP", C.Help()),
        ("/save my-chat_1", C.Save(name="my-chat_1")),
        ("/load my-chat_1", C.Load(name="my-chat_1")),
        ("/set temp 0.8", C.Set(key="temperature", value=0.8)),
        ("/set top_p=0.3", C.Set(key="top_p", value=0.3)),
        ("/set top_k 40", C.Set(key="top_k", value=40)),
        ("/set max_tokens 10", C.Set(key="max_tokens", value=10)),
        ("/set seed 7", C.Set(key="seed", value=7)),
        ("/stats", C.Stats()),
        ("/exit", C.Exit()),
        ("/quit", C.Exit()),
        ("/export md", C.Export(fmt="md")),
        ("/export JSON out.json", C.Export(fmt="json", path="out.json")),
        ("/think on", C.Think(on=True)),
        ("/think OFF", C.Think(on=False)),
        ("//etc/hosts is a file", C.Message(text="/etc/hosts is a file")),
        # Inline overrides: always removed, whatever the number's formatting (ChatRWKV leaked "-temp=1.50").
        ("hi -temp=1.50 there", C.Message(text="hi there", overrides=Ov(temperature=1.5))),
        ("-top_p=0.2 hi", C.Message(text="hi", overrides=Ov(top_p=0.2))),
        ("hi -temp=9", C.Message(text="hi", overrides=Ov(temperature=5.0))),  # clamped to [0, 5]
        ("hi -top_p=-1", C.Message(text="hi", overrides=Ov(top_p=0.0))),  # clamped to [0, 1]
        ("+gen story -temp=1.2 -top_p=0.8", C.Gen(text="story", overrides=Ov(1.2, 0.8))),
        ("x-temp=1", C.Message(text="x-temp=1")),  # not a separate word
    ],
)
def test_parse(line, expected):
    assert C.parse(line) == expected


@pytest.mark.parametrize(
    "line, message",
    [
        ("", "please say something"),
        ("   ", "please say something"),
        ("-temp=1", "please say something"),
        ("/nope", "unknown command /nope"),
        ("+gen", "usage is +gen TEXT"),
        ("/gen", "usage is +gen TEXT"),
        ("+qa", "usage is +qa TEXT"),
        ("/save", "missing name"),
        ("/save ../x", "bad session name"),
        ("/save a b", "bad session name"),
        ("/set", "usage is /set KEY VALUE"),
        ("/set temp hot", "not a number"),
        ("/set top_k 1.5", "not an integer"),
        ("/set top_p 2", "outside [0, 1]"),
        ("/set warmth 1", "unknown setting 'warmth'"),
        ("/export pdf", "usage is /export md|json"),
        ("/think maybe", "usage is /think on|off"),
        ("/retry now", "takes no argument"),
        ("hi -temp=abc", "-temp= needs a number"),
    ],
)
def test_malformed_commands_explain_themselves(line, message):
    with pytest.raises(CommandError) as e:
        C.parse(line)
    assert message in str(e.value)


def test_help_comes_from_the_registry_in_two_languages():
    text = C.help_text()
    for spec in C.REGISTRY:
        assert spec.usage in text and spec.en in text and spec.zh in text


def test_every_registered_name_parses():
    for spec in C.REGISTRY:
        for name in spec.names:
            arg = {
                "/save": " x",
                "/load": " x",
                "/set": " temp 1",
                "/think": " on",
                "/export": " md",
                "/prompt": " p",
                "+prompt": " p",
            }.get(name, " t" if name in ("/gen", "+gen", "+i", "+qq", "+qa", "/ask") else "")
            assert isinstance(C.parse(name + arg), C.Command)


def test_completions_list_slash_commands():
    words = C.completions()
    assert "/help" in words and "/save" in words and "+gen" in words
