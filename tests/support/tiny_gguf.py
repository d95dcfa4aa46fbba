"""Write a tiny random-weight llama-architecture GGUF model for tests.

The model is small enough (about 0.5 MB with the defaults) to be written in a
few milliseconds and to load with ``llama_cpp.Llama`` in about as long, yet it
is a real llama.cpp model: prompts are tokenized, evaluated into the KV cache
and sampled from exactly as with a real model, so streaming, cancelling, KV
cache reuse and state saving can be tested without downloading anything.

Vocabulary
    A byte-level BPE (``tokenizer.ggml.model = "gpt2"``) vocabulary:

    * ids ``0..255`` are the 256 single bytes (token id == byte value), so any
      text, ASCII or UTF-8, round-trips through tokenize/detokenize;
    * ids ``256..260`` are control tokens: :data:`PAD_ID` ``<pad>``,
      :data:`BOS_ID` ``<bos>``, :data:`EOS_ID` ``<eos>``,
      :data:`START_OF_TURN_ID` ``<start_of_turn>`` and
      :data:`END_OF_TURN_ID` ``<end_of_turn>`` (the end-of-turn token is also
      the model's EOT token, so llama.cpp treats it as end of generation);
    * the remaining ids are a few merged English tokens (``"the"``, ``" a"``,
      ...), so tokenization is not strictly one token per byte.

    Control tokens are only recognised in text tokenized with
    ``special=True``; the model adds ``<bos>`` when asked to add BOS.

Weights
    Random float32 weights drawn from ``numpy.random.default_rng(seed)``, so the
    same arguments always give the same file and, with greedy sampling
    (``temperature=0``), the same output. The weights are arranged so that the
    model can only ever *generate* printable ASCII (bytes 0x20-0x7E), newline,
    the merged tokens and, unless ``suppress_eog=True``, ``<eos>`` and
    ``<end_of_turn>``: every other token has a logit lowered by several hundred.
    (Residual dimension 0 holds a constant that no layer writes to, so after
    the final RMS norm it is always positive; the output rows of the forbidden
    tokens weight it negatively.) The text is gibberish, but safe to show in a
    terminal and always valid UTF-8.

Long replies
    With random weights, whether and when the model ends a reply by itself
    depends on the seed and the prompt. For a reply that runs until
    ``max_tokens`` either write the model with ``suppress_eog=True`` (use this
    when the code under test builds its own sampling call) or pass
    :func:`long_reply_logit_bias` as ``logit_bias`` to
    ``Llama.create_completion``.

Example::

    from tests.tiny_gguf import write_tiny_model

    path = write_tiny_model(tmp_path / "tiny.gguf")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False)
"""

from __future__ import annotations

import pathlib

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

__all__ = [
    "BOS_ID",
    "DEFAULT_TEMPLATE",
    "END_OF_TURN_ID",
    "EOG_IDS",
    "EOS_ID",
    "GENERATABLE_IDS",
    "PAD_ID",
    "START_OF_TURN_ID",
    "VOCAB_SIZE",
    "long_reply_logit_bias",
    "write_tiny_model",
]

DEFAULT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] | trim + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- if first_user_prefix and not loop_messages -%}"
    "{{ '<start_of_turn>user\n' + first_user_prefix | trim + '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if loop.first -%}{{ first_user_prefix }}{%- endif -%}"
    "{{ (message['content'] or '') | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}"
)
"""Gemma-style Jinja chat template embedded by default.

A leading system message is folded into the first user turn (as Gemma's own
template does); ``assistant`` becomes the ``model`` role and any other role
(a later ``system``, ``tool``) is rendered as a ``user`` turn. The rendered
text starts with ``bos_token``, so tokenize it with ``add_bos=False`` and
``special=True``.
"""

PAD_ID = 256
"""Id of ``<pad>``."""
BOS_ID = 257
"""Id of ``<bos>`` (added at the start when tokenizing with ``add_bos=True``)."""
EOS_ID = 258
"""Id of ``<eos>``, the model's end-of-sequence token."""
START_OF_TURN_ID = 259
"""Id of ``<start_of_turn>``."""
END_OF_TURN_ID = 260
"""Id of ``<end_of_turn>``, the model's end-of-turn (EOT) token."""
EOG_IDS: tuple[int, ...] = (EOS_ID, END_OF_TURN_ID)
"""The tokens that end a generation (llama.cpp's end-of-generation set)."""

_SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<start_of_turn>",
    "<end_of_turn>",
)

# Merges, in rank order, written in GPT-2's byte-to-unicode form ("Ġ" is a
# space). Each merged token is appended to the vocabulary after the specials.
_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
    ("o", "n"),
    ("r", "e"),
    ("Ġ", "t"),
    ("Ġ", "a"),
    ("Ġ", "s"),
    ("Ġ", "w"),
    ("Ġ", "o"),
    ("Ġ", "i"),
    ("Ġ", "c"),
    ("e", "n"),
    ("o", "u"),
    ("a", "t"),
    ("i", "s"),
    ("e", "s"),
    ("o", "r"),
    ("th", "e"),
    ("Ġt", "he"),
    ("Ġt", "h"),
    ("in", "g"),
    ("an", "d"),
    ("Ġ", "and"),
    ("Ġo", "f"),
    ("Ġi", "s"),
    ("Ġi", "n"),
    ("e", "d"),
    ("l", "l"),
    ("Ġt", "o"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """Return GPT-2's reversible mapping from byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _build_vocab(
    control: tuple[str, ...] = (), user_defined: tuple[str, ...] = ()
) -> tuple[list[str], list[int], list[str]]:
    """Return the token texts, token types and merge rules of the vocabulary.

    Extra ``control`` then ``user_defined`` tokens come last: no other id moves.
    """
    byte_chars = _bytes_to_unicode()
    tokens = [byte_chars[b] for b in range(256)]
    types = [int(TokenType.NORMAL)] * 256
    tokens.extend(_SPECIAL_TOKENS)
    types.extend([int(TokenType.CONTROL)] * len(_SPECIAL_TOKENS))
    merges: list[str] = []
    for left, right in _MERGES:
        merged = left + right
        if left not in tokens or right not in tokens or merged in tokens:
            raise RuntimeError(f"bad merge rule {left!r} {right!r}")
        tokens.append(merged)
        types.append(int(TokenType.NORMAL))
        merges.append(f"{left} {right}")
    tokens.extend(control + user_defined)
    types.extend([int(TokenType.CONTROL)] * len(control))
    types.extend([int(TokenType.USER_DEFINED)] * len(user_defined))
    return tokens, types, merges


_TOKENS, _TOKEN_TYPES, _MERGE_RULES = _build_vocab()

VOCAB_SIZE = len(_TOKENS)
"""Number of tokens in the vocabulary."""


def _generatable_ids() -> tuple[int, ...]:
    """Return the ids of the non-control tokens the model may generate."""
    allowed = set(range(0x20, 0x7F)) | {ord("\n")}
    allowed.update(range(256 + len(_SPECIAL_TOKENS), VOCAB_SIZE))
    return tuple(sorted(allowed))


GENERATABLE_IDS: tuple[int, ...] = _generatable_ids()
"""Ids the model can generate besides :data:`EOG_IDS`: printable ASCII bytes,
newline and the merged tokens. Greedy sampling never picks any other token."""

# Lowers the logit of a forbidden token by _PENALTY / rms(final residual).
_PENALTY = 2000.0
# Width of an attention head.
_HEAD_DIM = 16


def long_reply_logit_bias() -> dict[int, float]:
    """Return a ``logit_bias`` that stops the model from ending its reply.

    Pass it to ``Llama.create_completion(..., logit_bias=...)`` (or
    ``create_chat_completion``): it pushes ``<eos>`` and ``<end_of_turn>`` far
    down, so the reply runs until ``max_tokens``. Writing the model with
    ``write_tiny_model(..., suppress_eog=True)`` has the same effect without a
    ``logit_bias``.
    """
    return dict.fromkeys(EOG_IDS, -1000.0)


def write_tiny_model(
    path: pathlib.Path,
    *,
    chat_template: str | None = DEFAULT_TEMPLATE,
    seed: int = 0,
    n_layers: int = 2,
    dim: int = 64,
    n_ctx_train: int = 4096,
    suppress_eog: bool = False,
    control: tuple[str, ...] = (),
    user_defined: tuple[str, ...] = (),
    name: str = "chatui-tiny-test-model",
) -> pathlib.Path:
    """Write a tiny random-weight llama-architecture GGUF model to ``path``.

    Args:
        path: Where to write the ``.gguf`` file (overwritten if it exists).
        chat_template: Jinja chat template stored as ``tokenizer.chat_template``;
            ``None`` stores none (like the real default model's GGUF).
        seed: Seed of the random weights; the same arguments give the same file.
        n_layers: Number of transformer blocks.
        dim: Embedding size: a positive multiple of 16 (attention heads are 16
            wide).
        n_ctx_train: The training context length stored in the file.
        suppress_eog: If true, ``<eos>`` and ``<end_of_turn>`` are never
            generated, so every reply runs until ``max_tokens``.
        control: Texts of extra control tokens (like ChatML's
            ``<|im_start|>``), given the ids from :data:`VOCAB_SIZE` on; the
            other ids stay as they are. The model never generates them.
        user_defined: Texts of extra user-defined tokens, after those.
            llama.cpp reads these even in text tokenized with
            ``special=False``, unless it takes one for an end of turn
            (``</s>``, ``<|im_end|>``): that one it makes a control token too.
        name: The model's ``general.name``. llama.cpp sets some token
            attributes by name: with ``phi-3`` in it, every control and
            user-defined token strips the whitespace after it (and the
            vocabulary must then hold ``</s>``, ``<unk>``, ``<s>`` and
            ``<|endoftext|>``).

    Returns:
        ``path``.
    """
    if dim < _HEAD_DIM or dim % _HEAD_DIM:
        raise ValueError(f"dim must be a positive multiple of {_HEAD_DIM}, not {dim}")
    if n_layers < 1:
        raise ValueError(f"n_layers must be at least 1, not {n_layers}")
    path = pathlib.Path(path)
    vocab = _build_vocab(control, user_defined)
    writer = GGUFWriter(path, arch="llama")
    _add_hyperparameters(
        writer, name, n_layers=n_layers, dim=dim, n_ctx_train=n_ctx_train, n_vocab=len(vocab[0])
    )
    _add_tokenizer(writer, chat_template, vocab)
    _add_tensors(
        writer,
        np.random.default_rng(seed),
        n_layers=n_layers,
        dim=dim,
        suppress_eog=suppress_eog,
        n_vocab=len(vocab[0]),
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_hyperparameters(
    writer: GGUFWriter, name: str, *, n_layers: int, dim: int, n_ctx_train: int, n_vocab: int
) -> None:
    """Add the general and llama-architecture metadata."""
    writer.add_name(name)
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(dim)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(2 * dim)
    writer.add_head_count(dim // _HEAD_DIM)
    writer.add_head_count_kv(dim // _HEAD_DIM)
    writer.add_rope_dimension_count(_HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)


def _add_tokenizer(
    writer: GGUFWriter, chat_template: str | None, vocab: tuple[list[str], list[int], list[str]]
) -> None:
    """Add the byte-level BPE vocabulary, special token ids and chat template."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    tokens, types, merges = vocab
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_eot_token_id(END_OF_TURN_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Draw a float32 array of normally distributed values."""
    return (rng.standard_normal(shape) * std).astype(np.float32)


def _add_tensors(
    writer: GGUFWriter,
    rng: np.random.Generator,
    *,
    n_layers: int,
    dim: int,
    suppress_eog: bool,
    n_vocab: int,
) -> None:
    """Add random float32 weights (numpy shapes are ``(out, in)``)."""
    n_ff = 2 * dim
    # Residual dimension 0 carries a constant 1 from the embeddings and no
    # layer writes to it (row 0 of attn_output and ffn_down is zero), so after
    # the final RMS norm it is positive and output rows can push tokens down.
    embeddings = _normal(rng, (n_vocab, dim), 1.0)
    embeddings[:, 0] = 1.0
    writer.add_tensor("token_embd.weight", embeddings)
    for layer in range(n_layers):
        prefix = f"blk.{layer}"
        attn_output = _normal(rng, (dim, dim), dim**-0.5)
        attn_output[0, :] = 0.0
        ffn_down = _normal(rng, (dim, n_ff), n_ff**-0.5)
        ffn_down[0, :] = 0.0
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"{prefix}.attn_q.weight", _normal(rng, (dim, dim), dim**-0.5))
        writer.add_tensor(f"{prefix}.attn_k.weight", _normal(rng, (dim, dim), dim**-0.5))
        writer.add_tensor(f"{prefix}.attn_v.weight", _normal(rng, (dim, dim), dim**-0.5))
        writer.add_tensor(f"{prefix}.attn_output.weight", attn_output)
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", _normal(rng, (n_ff, dim), dim**-0.5))
        writer.add_tensor(f"{prefix}.ffn_up.weight", _normal(rng, (n_ff, dim), dim**-0.5))
        writer.add_tensor(f"{prefix}.ffn_down.weight", ffn_down)
    writer.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))

    output = _normal(rng, (n_vocab, dim), 1.0)
    output[:, 0] = 0.0
    allowed = set(GENERATABLE_IDS)
    if not suppress_eog:
        allowed.update(EOG_IDS)
    forbidden = [token for token in range(n_vocab) if token not in allowed]
    output[forbidden, :] = 0.0
    output[forbidden, 0] = -_PENALTY
    writer.add_tensor("output.weight", output)
