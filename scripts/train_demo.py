#!/usr/bin/env python3
"""Trains rwkvchat's embedded demo model: a small RWKV-7 chat model, from data to GGUF.

The package must run right after install on an offline machine, so it ships a tiny model that this
project trains itself (`src/rwkvchat/data/demo.gguf`). This script is the whole recipe, one stage
per subcommand, each reproducible from `--seed`:

    prep    downloads the pinned corpus wheels with pip (chitchat-dataset, MIT; chatterbot-corpus,
            BSD-3-Clause; each wheel is read as a zip, nothing is installed; pyyaml reads chatterbot's
            YAML), renders them in the World chat template `User: ...\\n\\nAssistant: ...\\n\\n`,
            trains a byte-level BPE tokenizer with HF `tokenizers`, and writes uint16 token streams
            (train / held-out).
    train   trains the RWKV-7 model of `rwkv7_torch.py` on those streams (GPU if present) and saves
            float32 weights with the official BlinkDL key names (`.npz`).
    export  writes the GGUF (F16) with the tokenizer and licence metadata, plus the golden logits that
            `tests/test_demo_model.py` compares the native engine against.
    eval    train and held-out loss of saved weights (fixed windows, CPU is fine).
    sample  prints a few chat exchanges from the trained weights (torch), for a quick look.

Only this script needs torch (the `convert` extra); the package never imports it at run time.
The corpus itself is not committed: `prep` downloads the two wheels with pip into the work folder.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_WORK = os.path.join(ROOT, ".train")

# Pinned sources: name, version, licence. The same strings go into the GGUF metadata and the docs.
SOURCES = [
    ("chitchat-dataset", "0.9.0", "MIT", "https://github.com/BYU-PCCL/chitchat-dataset"),
    ("chatterbot-corpus", "1.3.3", "BSD-3-Clause", "https://github.com/gunthercox/chatterbot-corpus"),
]

# The preamble `rwkvchat chat` feeds before the first turn (chat-behaviour.md §B11). Half of the
# rendered conversations start with it, so the model has seen it and continues naturally after it.
PREAMBLE = (
    "User: hi\n\nAssistant: Hi. I am your assistant and I will provide expert full response in full "
    "details. Please feel free to ask any question and I will always answer it.\n\n"
)
EOT = "<|endoftext|>"


# ----------------------------------------------------------------------------------------------
# prep: corpus -> text -> tokenizer -> token ids
# ----------------------------------------------------------------------------------------------

def _fetch_wheels(work: str) -> dict[str, str]:
    """Downloads the pinned corpus wheels (no install needed: a wheel is a zip) and returns their paths."""
    dl = os.path.join(work, "wheels")
    os.makedirs(dl, exist_ok=True)
    paths = {}
    for name, version, _lic, _url in SOURCES:
        stem = name.replace("-", "_") + "-" + version
        found = glob.glob(os.path.join(dl, stem + "-*.whl"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dl,
                            f"{name}=={version}"], check=True)
            found = glob.glob(os.path.join(dl, stem + "-*.whl"))
        if not found:
            raise SystemExit(f"could not obtain {name}=={version}")
        paths[name] = found[0]
    return paths


def _clean(text: str) -> str:
    """One message: no CR, no blank lines (\\n\\n is the turn separator), no stray spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    return " ".join(text.split(" ")).strip()


def _chitchat_conversations(wheel: str) -> list[list[str]]:
    """chitchat-dataset: 7,168 two-person chats; each turn is a run of messages of one sender."""
    with zipfile.ZipFile(wheel) as z:
        data = json.loads(z.read("chitchat_dataset/dataset.json"))
    convs = []
    for key in sorted(data):
        turns = []
        for turn in data[key]["messages"]:
            msgs = [_clean(m["text"]) for m in turn]
            text = _clean("\n".join(m for m in msgs if m))
            if text:
                turns.append(text)
        if len(turns) >= 2:
            convs.append(turns)
    return convs


def _chatterbot_conversations(wheel: str) -> list[list[str]]:
    """chatterbot-corpus, English files only: short scripted question/answer exchanges."""
    import yaml

    convs = []
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("chatterbot_corpus/data/english/")
                       and n.endswith(".yml"))
        for name in names:
            doc = yaml.safe_load(z.read(name).decode("utf-8"))
            for conv in doc.get("conversations", []) or []:
                turns = [_clean(str(t)) for t in conv if t is not None]
                turns = [t for t in turns if t]
                if len(turns) >= 2:
                    convs.append(turns)
    return convs


def render(turns: list[str], preamble: bool) -> str:
    """World chat template: alternating `User:` / `Assistant:` turns, each closed by a blank line."""
    out = [PREAMBLE] if preamble else []
    for i, t in enumerate(turns):
        out.append(("User: " if i % 2 == 0 else "Assistant: ") + t + "\n\n")
    return "".join(out)


def train_tokenizer(texts: list[str], vocab_size: int, out_path: str) -> None:
    """Byte-level BPE in the same HF-JSON shape as the 20B tokenizer (ByteLevel pre-tokenizer, no prefix
    space, ByteLevel decoder), with `<|endoftext|>` as id 0, so any UTF-8 text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(out_path)


def cmd_prep(args: argparse.Namespace) -> None:
    work = args.work
    os.makedirs(work, exist_ok=True)
    wheels = _fetch_wheels(work)
    chit = _chitchat_conversations(wheels["chitchat-dataset"])
    bot = _chatterbot_conversations(wheels["chatterbot-corpus"])
    rng = random.Random(args.seed)
    # Split by conversation so the held-out loss measures unseen chats, not unseen tokens of seen ones.
    rng.shuffle(chit)
    n_held = max(1, int(len(chit) * args.heldout))
    held_convs, train_convs = chit[:n_held], chit[n_held:] + bot
    rng.shuffle(train_convs)
    train_docs = [render(c, preamble=rng.random() < 0.5) for c in train_convs]
    held_docs = [render(c, preamble=rng.random() < 0.5) for c in held_convs]
    tok_path = os.path.join(work, "tokenizer.json")
    train_tokenizer(train_docs, args.vocab, tok_path)

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_path)
    assert tok.token_to_id(EOT) == 0
    for name, docs in (("train", train_docs), ("heldout", held_docs)):
        ids: list[int] = []
        for enc in tok.encode_batch(docs):
            ids.append(0)  # end-of-text separates conversations, as in World training data
            ids.extend(enc.ids)
        arr = np.asarray(ids, dtype=np.uint16)
        np.save(os.path.join(work, f"{name}.npy"), arr)
        print(f"{name}: {len(docs)} conversations, {sum(map(len, docs)) / 1e6:.2f} MB text, "
              f"{len(arr) / 1e6:.2f} M tokens")
    print(f"chitchat conversations {len(chit)} (held out {n_held}), chatterbot {len(bot)}; "
          f"vocab {tok.get_vocab_size()} -> {tok_path}")
    with open(os.path.join(work, "sample.txt"), "w", encoding="utf-8") as f:
        f.write("".join(train_docs[:5]))


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------

def _batches(data: np.ndarray, batch: int, ctx: int, rng: np.random.Generator):
    """Random windows of ctx+1 tokens: (batch, ctx) inputs and next-token targets, int64."""
    starts = rng.integers(0, len(data) - ctx - 1, size=batch)
    idx = starts[:, None] + np.arange(ctx + 1)[None, :]
    w = data[idx].astype(np.int64)
    return w[:, :-1], w[:, 1:]


def _heldout_windows(data: np.ndarray, ctx: int, limit: int) -> np.ndarray:
    """Non-overlapping ctx+1 windows covering the held-out stream (the same every evaluation)."""
    n = min((len(data) - 1) // ctx, limit)
    idx = np.arange(n)[:, None] * ctx + np.arange(ctx + 1)[None, :]
    return data[idx].astype(np.int64)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, HERE)
    from rwkv7_torch import RWKV7, Config

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    dev = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    train = np.load(os.path.join(args.work, "train.npy"))
    held = np.load(os.path.join(args.work, "heldout.npy"))
    with open(os.path.join(args.work, "tokenizer.json"), encoding="utf-8") as f:
        vocab = max(len(json.load(f)["model"]["vocab"]), int(train.max()) + 1)
    cfg = Config(vocab=vocab, d=args.d, layers=args.layers, head=args.head, ffn=args.ffn,
                 dropout=args.dropout)
    model = RWKV7(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {dev}; config {cfg}; {n_params / 1e6:.3f} M parameters; "
          f"train {len(train)} tokens, held-out {len(held)}", flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() == 2 and p.shape[0] > 1 and "r_k" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99), eps=1e-8)
    held_w = torch.from_numpy(_heldout_windows(held, args.ctx, args.eval_windows)).to(dev)
    out = args.out or args.work
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(out, "train_log.txt"), "a")  # noqa: SIM115 (closed after the loop)
    use_amp = dev == "cuda"

    def evaluate() -> float:
        model.eval()
        tot, cnt = 0.0, 0
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            for i in range(0, len(held_w), args.batch):
                w = held_w[i:i + args.batch]
                logits = model(w[:, :-1]).float()
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), w[:, 1:].reshape(-1),
                                                         reduction="sum")
                tot += loss.item()
                cnt += w[:, 1:].numel()
        model.train()
        return tot / max(cnt, 1)

    t0 = time.time()
    best = float("inf")
    step = 0
    ema = None
    while True:
        elapsed = time.time() - t0
        if step >= args.steps or elapsed > args.minutes * 60:
            break
        # Linear warm-up, then cosine decay over the planned steps or time, whichever comes first.
        frac = max(step / max(args.steps, 1), elapsed / (args.minutes * 60))
        cosine = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(frac, 1)))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * cosine
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = _batches(train, args.batch, args.ctx, rng)
        x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % args.log_every == 0 or step == 1:
            line = f"step {step} t {time.time() - t0:.0f}s lr {lr:.2e} train_loss {ema:.4f}"
            print(line, flush=True)
            log.write(line + "\n")
        if step % args.eval_every == 0:
            hl = evaluate()
            line = f"step {step} held_out_loss {hl:.4f}"
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()
            if hl < best:
                best = hl
                _save(model, cfg, os.path.join(out, "demo_weights.npz"),
                      {"step": step, "train_loss_ema": ema, "heldout_loss": hl})
    hl = evaluate()
    # Final train loss over fixed windows of the training stream, comparable with the held-out figure.
    tr_w = torch.from_numpy(_heldout_windows(train[: len(held) * 2], args.ctx, args.eval_windows)).to(dev)
    held_w, saved = tr_w, held_w
    tl = evaluate()
    held_w = saved
    line = (f"final step {step} held_out_loss {hl:.4f} train_loss_fixed {tl:.4f} "
            f"best_held_out {min(best, hl):.4f}")
    print(line, flush=True)
    log.write(line + "\n")
    log.close()
    if hl <= best:
        _save(model, cfg, os.path.join(out, "demo_weights.npz"),
              {"step": step, "train_loss_ema": ema, "heldout_loss": hl, "train_loss": tl})


def _save(model, cfg, path: str, info: dict) -> None:
    """Official-key float32 state dict plus the config and loss figures (as a JSON string).

    emb/head go to a second file next to `path` (`*_emb_head.npz`) so each file stays under the
    device tool's 16 MB per-file limit for results.
    """
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    big = {k: sd.pop(k) for k in ("emb.weight", "head.weight")}
    sd["__info__"] = np.array(json.dumps({"config": cfg.__dict__, **info}))
    for p, part in ((path, sd), (_emb_head_path(path), big)):
        tmp = p + ".tmp.npz"
        np.savez(tmp, **part)
        os.replace(tmp, p)


def _emb_head_path(path: str) -> str:
    return path[: -len(".npz")] + "_emb_head.npz"


# ----------------------------------------------------------------------------------------------
# export and sampling
# ----------------------------------------------------------------------------------------------

def _load(path: str):
    """(state dict of float32 arrays, info dict) from a `train` .npz."""
    z = np.load(path)
    info = json.loads(str(z["__info__"]))
    sd = {k: z[k] for k in z.files if k != "__info__"}
    z2 = np.load(_emb_head_path(path))
    sd.update({k: z2[k] for k in z2.files})
    return sd, info


def _torch_model(sd: dict, info: dict, round_f16: bool):
    """The torch model in float32 with the given weights; optionally every weight rounded to what the
    GGUF stores (F16 for matrices), so its logits are the exact target for the native engine."""
    import torch

    sys.path.insert(0, HERE)
    from rwkv7_torch import RWKV7, Config

    model = RWKV7(Config(**info["config"]))
    f16 = _f16_keys(sd) if round_f16 else set()
    sd_t = {}
    for k, v in sd.items():
        a = v.astype(np.float16).astype(np.float32) if k in f16 else v
        sd_t[k] = torch.from_numpy(np.ascontiguousarray(a))
    model.load_state_dict(sd_t)
    model.eval()
    return model


def _f16_keys(sd: dict) -> set[str]:
    """State-dict keys that convert.write_gguf(dtype="f16") stores as F16 (its "matrix" and "lora" roles;
    vectors, r_k and the decay LoRA stay F32, rwkv-architectures.md §6), read from convert's own table."""
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from rwkvchat import convert, gguf_names

    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    keys = set()
    for _name, src, _transform, role in convert._rows(gguf_names.V7_BLOCK_ROWS, n_layer):
        if role in ("matrix", "lora"):
            keys.update(src if isinstance(src, tuple) else (src,))
    return keys


def _check_gguf_matches(path: str, sd: dict) -> None:
    """Reads the written GGUF back and checks every plain or transposed tensor against the F16-rounded
    weights the golden logits use, so the golden file and the shipped file cannot drift apart."""
    import gguf

    sys.path.insert(0, os.path.join(ROOT, "src"))
    from rwkvchat import convert, gguf_names

    f16 = _f16_keys(sd)
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    checked = 0
    for name, src, transform, _role in convert._rows(gguf_names.V7_BLOCK_ROWS, n_layer):
        if isinstance(src, tuple) or transform not in ("none", "transpose", "squeeze"):
            continue
        want = sd[src].astype(np.float16 if src in f16 else np.float32)
        if transform == "transpose":
            want = want.T
        got = np.asarray(tensors[name].data).reshape(want.shape)
        if got.dtype != want.dtype or not np.array_equal(got, want):
            raise SystemExit(f"GGUF tensor {name} differs from {src} as the golden logits see it")
        checked += 1
    print(f"GGUF read back: {checked} tensors identical to the weights behind the golden logits")


def cmd_export(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, os.path.join(ROOT, "src"))
    from rwkvchat.convert import write_gguf

    sd, info = _load(args.weights)
    meta = {
        "general.description": "rwkvchat demo model: a tiny RWKV-7 chat model trained by the rwkvchat "
                               "project on small open chit-chat corpora. It is a demo, not an assistant: "
                               "expect short, often nonsensical replies.",
        "general.license": "Apache-2.0 (weights); training data: chitchat-dataset (MIT), "
                           "chatterbot-corpus (BSD-3-Clause)",
        "general.source.url": "https://github.com/BYU-PCCL/chitchat-dataset",
        "rwkvchat.demo.training_data": "; ".join(f"{n} {v} ({lic}, {u})" for n, v, lic, u in SOURCES),
        "rwkvchat.demo.heldout_loss": float(info.get("heldout_loss", float("nan"))),
        "rwkvchat.demo.train_steps": int(info.get("step", 0)),
        "rwkvchat.demo.seed": int(args.seed),
    }
    tok_path = os.path.join(args.work, "tokenizer.json")
    write_gguf(sd, args.out, dtype="f16", tokenizer=tok_path, name="rwkvchat-demo", extra_metadata=meta)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {size} bytes ({size / 2**20:.2f} MiB)")
    _check_gguf_matches(args.out, sd)

    # Golden logits: a fixed chat-shaped prompt through the torch model with F16-rounded weights.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_path)
    text = "User: hi, how are you doing today?\n\nAssistant: I'm good, thanks! What about you?\n\nUser:"
    ids = tok.encode(text).ids
    model = _torch_model(sd, info, round_f16=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).double().numpy()[0].astype(np.float32)
    np.savez(args.golden, tokens=np.asarray(ids, dtype=np.int32), logits=logits, text=np.array(text),
             logit_std=np.float32(logits.std()))
    print(f"golden: {len(ids)} tokens, logit std {logits.std():.3f} -> {args.golden}")


def generate(model, tok, prompt: str, rng: np.random.Generator, max_tokens: int = 80,
             temperature: float = 1.0, top_p: float = 0.5) -> str:
    """Chat-style sampling with the torch model (full recompute; fine for a few short replies)."""
    import torch

    ids = tok.encode(prompt).ids
    out: list[int] = []
    for _ in range(max_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([ids + out]))[0, -1].double().numpy()
        logits[0] = -1e9
        p = np.exp((logits - logits.max()) / temperature)
        p /= p.sum()
        order = np.argsort(-p)
        keep = order[: max(1, int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1)]
        q = p[keep] / p[keep].sum()
        out.append(int(rng.choice(keep, p=q)))
        text = tok.decode(out)
        if "\n\n" in text:
            return text.split("\n\n")[0]
    return tok.decode(out)


def cmd_sample(args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer

    sd, info = _load(args.weights)
    model = _torch_model(sd, info, round_f16=False)
    tok = Tokenizer.from_file(os.path.join(args.work, "tokenizer.json"))
    rng = np.random.default_rng(args.seed)
    for q in args.prompts or ["Hello!", "What do you like to do on weekends?", "Do you have any pets?",
                              "What is your favorite food?", "Tell me a joke."]:
        reply = generate(model, tok, PREAMBLE + f"User: {q}\n\nAssistant:", rng)
        print(f"User: {q}\nAssistant:{reply}\n")


def cmd_eval(args: argparse.Namespace) -> None:
    """Mean next-token loss (nats/token) of saved weights on fixed windows of both streams."""
    import torch

    sd, info = _load(args.weights)
    model = _torch_model(sd, info, round_f16=args.f16)
    for name in ("train", "heldout"):
        data = np.load(os.path.join(args.work, f"{name}.npy"))
        w = torch.from_numpy(_heldout_windows(data, args.ctx, args.windows))
        tot = 0.0
        with torch.no_grad():
            for i in range(0, len(w), 32):
                x = w[i:i + 32]
                logits = model(x[:, :-1])
                tot += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         x[:, 1:].reshape(-1), reduction="sum").item()
        print(f"{name}: {tot / w[:, 1:].numel():.4f} nats/token over {w[:, 1:].numel()} tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=DEFAULT_WORK, help="work folder (corpus, tokenizer, token ids)")
    ap.add_argument("--seed", type=int, default=20261123)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prep")
    p.add_argument("--vocab", type=int, default=3072)
    p.add_argument("--heldout", type=float, default=0.05)
    p = sub.add_parser("train")
    p.add_argument("--d", type=int, default=192)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--head", type=int, default=64)
    p.add_argument("--ffn", type=int, default=768)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--steps", type=int, default=1100)
    p.add_argument("--minutes", type=float, default=4.15)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-windows", type=int, default=2048)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--out", default=None, help="where weights and the log go (default: --work)")
    p = sub.add_parser("export")
    p.add_argument("--weights", default=os.path.join(DEFAULT_WORK, "demo_weights.npz"))
    p.add_argument("--out", default=os.path.join(ROOT, "src", "rwkvchat", "data", "demo.gguf"))
    p.add_argument("--golden", default=os.path.join(ROOT, "tests", "data", "demo_golden.npz"))
    p = sub.add_parser("eval")
    p.add_argument("--weights", default=os.path.join(DEFAULT_WORK, "demo_weights.npz"))
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--windows", type=int, default=832)
    p.add_argument("--f16", action="store_true", help="round weights as the GGUF stores them")
    p = sub.add_parser("sample")
    p.add_argument("--weights", default=os.path.join(DEFAULT_WORK, "demo_weights.npz"))
    p.add_argument("prompts", nargs="*")
    args = ap.parse_args()
    {"prep": cmd_prep, "train": cmd_train, "export": cmd_export, "eval": cmd_eval,
     "sample": cmd_sample}[args.cmd](args)


if __name__ == "__main__":
    main()
