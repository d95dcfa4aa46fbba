"""Is shifting a KV range exact for the default model (Gemma 3 270M, sliding window 512)?

llama.cpp can drop a range of a sequence's KV cache and move what follows
it down (`llama_memory_seq_rm` + `llama_memory_seq_add`, where
`llama_memory_can_shift` allows it) instead of evaluating the kept tokens
again. After a trim the model's view starts later: the request is [system +
exchange 2 + exchange 3 + prompt] where the cache holds [system + exchange 1
+ exchange 2 + exchange 3]. This script builds such a conversation with the
real model (its replies sampled with a fixed seed, rendered by chatui's
`ChatFormat`, tokenized as chatui's KV cache does) and compares, with
low-level llama.cpp calls on one context (n_ctx 4096, n_batch = n_ubatch =
128, the full-size SWA cache, as chatui loads it), the next-token logits and
32 greedy tokens of:

- cold: [system + ex2 + ex3 + prompt] evaluated from an empty cache (the reference);
- reuse: the same, [system + ex2 + ex3] first, then the prompt (what prefix reuse does);
- offset: [system + ex2 + ex3 + prompt] evaluated at positions moved up by len(ex1)
  (RoPE sees only relative positions: the difference is rounding at other angles);
- offset + shift: [system + ex2 + ex3] evaluated at those positions, shifted down
  by seq_add, then the prompt: the shift's arithmetic alone;
- remove + shift: [system + ex1 + ex2 + ex3] evaluated, ex1 removed, the rest shifted
  down, then the prompt: what a shift would do after a trim;
- remove only: the same without the shift (a gap in the positions).
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

from bench._common import parser, print_table, write_json
from chatui.config import Config, LocalConfig
from chatui.history import ChatMessage
from chatui.providers.local.chat_format import GEMMA_TEMPLATE, ChatFormat
from chatui.providers.local.kv_cache import KVCache
from chatui.providers.local.llama_engine import CountingLlama
from chatui.providers.local.llama_runtime import silence_llama_logs
from chatui.providers.local.provider import assemble_default_model, default_model_path

USER_PROMPTS = (
    "Write a long story about a cat.",
    "Go on.",
    "Tell it again from the dog's point of view.",
    "Go on.",
)
GREEDY = 32


def load(model: Path, n_ctx: int, *, swa_full: bool) -> CountingLlama:
    """The model as chatui's engine loads it (safe model params, quiet)."""
    silence_llama_logs()
    c = LocalConfig()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        llm = CountingLlama(
            model_path=str(model),
            n_ctx=n_ctx,
            n_batch=c.n_batch,
            n_ubatch=c.n_ubatch,
            n_threads=2,
            swa_full=swa_full,
            verbose=True,
        )
    llm.verbose = False
    return llm


class Context:
    """Low-level decoding on sequence 0 of one llama context, at chosen positions."""

    def __init__(self, llm: CountingLlama) -> None:
        self.llm = llm
        self.ctx = llm.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llm.n_vocab()
        self.n_batch = llm.n_batch
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def decode(self, tokens: list[int], start: int) -> np.ndarray:
        """Evaluate `tokens` at positions start, start+1, ...; the last one's logits."""
        b = self.batch
        for off in range(0, len(tokens), self.n_batch):
            chunk = tokens[off : off + self.n_batch]
            b.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                b.token[i] = token
                b.pos[i] = start + off + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = off + i == len(tokens) - 1
            if (rc := llama_cpp.llama_decode(self.ctx, b)) != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def remove(self, p0: int, p1: int) -> None:
        if not llama_cpp.llama_memory_seq_rm(self.memory, 0, p0, p1):
            raise RuntimeError("llama_memory_seq_rm refused the range")

    def shift(self, p0: int, delta: int) -> None:
        llama_cpp.llama_memory_seq_add(self.memory, 0, p0, -1, delta)

    def top(self) -> int:
        return llama_cpp.llama_memory_seq_pos_max(self.memory, 0)

    def greedy(self, logits: np.ndarray, n: int) -> list[int]:
        """`n` greedy tokens from `logits`, each evaluated after the last cached position."""
        out: list[int] = []
        for _ in range(n):
            token = int(np.argmax(logits))
            out.append(token)
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            logits = self.decode([token], self.top() + 1)
        return out

    def sample_reply(self, prompt: list[int], max_tokens: int, rng: np.random.Generator) -> str:
        """A reply sampled as chatui's defaults would (temperature, top-k, top-p)."""
        c = LocalConfig()
        self.clear()
        logits = self.decode(prompt, 0)
        reply: list[int] = []
        for _ in range(max_tokens):
            token = _sample(logits, c.temperature, c.top_k, c.top_p, rng)
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            reply.append(token)
            logits = self.decode([token], self.top() + 1)
        return self.llm.detokenize(reply).decode("utf-8", errors="replace")

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)


def _sample(logits: np.ndarray, temp: float, top_k: int, top_p: float, rng) -> int:
    ids = np.argpartition(logits, -top_k)[-top_k:]
    ids = ids[np.argsort(-logits[ids])]
    z = logits[ids].astype(np.float64) / temp
    p = np.exp(z - z.max())
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), top_p)) + 1
    p = p[:keep] / p[:keep].sum()
    return int(ids[rng.choice(keep, p=p)])


def chat_format(llm: CountingLlama) -> ChatFormat:
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def text(token: int) -> str:
        return "" if token < 0 else llama_cpp.llama_vocab_get_text(vocab, token).decode()

    template = llm.metadata.get("tokenizer.chat_template") or GEMMA_TEMPLATE
    return ChatFormat(
        template,
        bos_token=text(llama_cpp.llama_vocab_bos(vocab)),
        eos_token=text(llama_cpp.llama_vocab_eos(vocab)),
    )


@dataclass
class Conversation:
    full: list[int]  # system + ex1 + ex2 + ex3 + prompt
    kept: list[int]  # system + ex2 + ex3 + prompt
    cut: tuple[int, int]  # full[cut[0]:cut[1]] is exchange 1: kept == full without it
    prompt_len: int  # The new prompt's tokens at the end of both


def build(llm: CountingLlama, ctx: Context, reply_tokens: int, seed: int) -> Conversation:
    fmt, rng = chat_format(llm), np.random.default_rng(seed)
    system = ChatMessage("system", Config().system_prompt)

    def tokens(messages: list[ChatMessage]) -> list[int]:
        return KVCache(llm).tokens_for(fmt.render(messages))[0]

    messages = [system]
    for text in USER_PROMPTS[:3]:
        messages.append(ChatMessage("user", text))
        reply = ctx.sample_reply(tokens(messages), reply_tokens, rng)
        messages.append(ChatMessage("assistant", reply))
    before_prompt = tokens(messages)  # Ends with the generation prompt after reply 3.
    messages.append(ChatMessage("user", USER_PROMPTS[3]))
    full = tokens(messages)
    kept = tokens([system, *messages[3:]])
    head = _common_prefix(full, kept)
    tail = min(_common_prefix(full[::-1], kept[::-1]), len(kept) - head)
    if full[:head] + full[len(full) - tail :] != kept:
        raise RuntimeError("the kept request is not the full one without a range")
    prompt_len = len(full) - _common_prefix(full, before_prompt)
    return Conversation(full, kept, (head, len(full) - tail), prompt_len)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run_cases(ctx: Context, conv: Conversation) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Each case's next-token logits and greedy continuation."""
    kept, full, p = conv.kept, conv.full, conv.prompt_len
    a, b = conv.cut
    removed = b - a
    history = kept[:-p]  # system + ex2 + ex3
    results: dict[str, tuple[np.ndarray, list[int]]] = {}

    def finish(name: str, logits: np.ndarray) -> None:
        results[name] = (logits, ctx.greedy(logits, GREEDY))

    ctx.clear()
    finish("cold", ctx.decode(kept, 0))

    ctx.clear()
    ctx.decode(history, 0)
    finish("reuse", ctx.decode(kept[-p:], len(history)))

    ctx.clear()
    ctx.decode(history, removed)  # Positions removed .. removed + len - 1.
    finish("offset", ctx.decode(kept[-p:], removed + len(history)))

    ctx.clear()
    ctx.decode(history, removed)
    ctx.shift(0, -removed)
    finish("offset + shift", ctx.decode(kept[-p:], len(history)))

    ctx.clear()
    ctx.decode(full[:-p], 0)
    ctx.remove(a, b)
    ctx.shift(b, -removed)
    assert ctx.top() == len(history) - 1
    finish("remove + shift", ctx.decode(kept[-p:], len(history)))

    ctx.clear()
    ctx.decode(full[:-p], 0)
    ctx.remove(a, b)
    finish("remove only", ctx.decode(kept[-p:], len(full) - p))
    return results


def compare(results: dict[str, tuple[np.ndarray, list[int]]]) -> list[dict]:
    ref_logits, ref_tokens = results["cold"]
    ref_p = _softmax(ref_logits)
    rows = []
    for name, (logits, tokens) in results.items():
        same = _common_prefix(tokens, ref_tokens)
        p = _softmax(logits)
        rows.append(
            {
                "case": name,
                "max_abs_logit_diff": float(np.max(np.abs(logits - ref_logits))),
                "argmax_same": int(np.argmax(logits)) == int(np.argmax(ref_logits)),
                "kl_cold_to_case": float(
                    np.sum(ref_p * (np.log(ref_p + 1e-30) - np.log(p + 1e-30)))
                ),
                "top1_prob": float(p.max()),
                "greedy_same_prefix": same,
                "greedy_identical": tokens == ref_tokens,
                "greedy_tokens": tokens,
            }
        )
    return rows


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30))))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n-ctx", type=int, default=LocalConfig().n_ctx)
    p.add_argument("--reply-tokens", type=int, default=300, help="most tokens per sampled reply")
    p.add_argument("--conversations", type=int, default=3, help="conversations (seeds) to try")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--no-swa-full", action="store_true", help="the small SWA cache (chatui uses the full one)"
    )
    args = p.parse_args()
    model = default_model_path()
    if not model.exists():
        assemble_default_model(model, lambda _message: None)
    can_shift = {}
    for swa_full in (True, False):
        probe = load(model, args.n_ctx, swa_full=swa_full)
        can_shift[f"swa_full={swa_full}"] = bool(
            llama_cpp.llama_memory_can_shift(llama_cpp.llama_get_memory(probe.ctx))
        )
        probe.close()
    print(f"llama_memory_can_shift, n_ctx {args.n_ctx}: {can_shift}")
    llm = load(model, args.n_ctx, swa_full=not args.no_swa_full)
    ctx = Context(llm)
    n_swa = (
        llama_cpp.llama_model_n_swa(llm.model) if hasattr(llama_cpp, "llama_model_n_swa") else None
    )
    figures: dict = {
        "benchmark": "kv_shift",
        "model": model.name,
        "n_ctx": args.n_ctx,
        "swa_full": not args.no_swa_full,
        "n_swa": n_swa,
        "can_shift": can_shift,
        "conversations": [],
    }
    table = []
    for k in range(args.conversations):
        seed = args.seed + k
        conv = build(llm, ctx, args.reply_tokens, seed)
        rows = compare(run_cases(ctx, conv))
        figures["conversations"].append(
            {
                "seed": seed,
                "full_tokens": len(conv.full),
                "kept_tokens": len(conv.kept),
                "removed": list(conv.cut),
                "prompt_tokens": conv.prompt_len,
                "cases": rows,
            }
        )
        a, b = conv.cut
        for r in rows:
            table.append(
                [seed, f"{len(conv.full)}→{len(conv.kept)} (−{b - a} at {a})", r["case"],
                 f"{r['max_abs_logit_diff']:.4g}", "yes" if r["argmax_same"] else "NO",
                 f"{r['kl_cold_to_case']:.3g}",
                 f"{r['greedy_same_prefix']}/{len(r['greedy_tokens'])}"]
            )  # fmt: skip
    ctx.close()
    llm.close()
    print_table(
        f"KV shift vs cold prefill, default model (n_ctx {args.n_ctx}, swa_full "
        f"{not args.no_swa_full}, window {n_swa}): next-token logits and {GREEDY} greedy tokens",
        ["seed", "tokens (full→kept)", "case", "max |Δlogit|", "argmax same", "KL(cold‖case)",
         "greedy same"],
        table,
    )  # fmt: skip
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
