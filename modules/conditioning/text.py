"""Prompts to conditioning tensors, with A1111's semantics.

A prompt line is split into weighted pieces (emphasis), tokenized piece by piece, and packed into
chunks of 75 tokens (BOS/EOS added per chunk, 77 in all); a comma within the last 20 tokens of a
full chunk moves the words after it to the next chunk, and BREAK starts a new chunk. Each chunk
is encoded on its own and the results are concatenated, so prompts have no length limit.
Textual-inversion embeddings, named in the prompt by their file name, replace their tokens'
input vectors. Emphasis scales each token's output vector ("Original" then restores the mean).

Families: SD1 uses CLIP-L's last layer (or an earlier one with clip skip, then the final norm);
SD2 the penultimate OpenCLIP-H layer with the final norm (the last layer is not even built); SDXL
concatenates CLIP-L's and OpenCLIP-bigG's penultimate layers and adds bigG's pooled, projected
output of the first chunk.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from modules import prompt_parser
from modules.conditioning import extra_networks
from modules.models.families import ModelFamily

CHUNK_LENGTH = 75
EMPHASIS_MODES = ("Original", "No norm", "None")


@dataclass(frozen=True)
class EncodeSettings:
    clip_skip: int = 1  # A1111's CLIP_stop_at_last_layers
    emphasis: str = "Original"
    comma_padding_backtrack: int = 20
    sdxl_clip_l_skip: bool = False  # apply clip skip to SDXL's CLIP-L too


@dataclass
class PromptChunk:
    """75 tokens (77 once BOS/EOS are added), their weights, and where embeddings go."""
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Any]] = field(default_factory=list)  # (offset in chunk, Embedding)


@dataclass
class TextConditioning:
    """Cross-attention context `[batch, 77 * chunks, width]`; SDXL also has a pooled vector."""
    context: torch.Tensor
    pooled: torch.Tensor | None = None

    def __getitem__(self, index) -> TextConditioning:
        sl = slice(index, index + 1) if isinstance(index, int) else index
        return TextConditioning(self.context[sl], None if self.pooled is None else self.pooled[sl])


def target_token_count(count: int) -> int:
    """What the token counter shows after the slash: the length of the chunks used."""
    return math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


class PromptTokenizer:
    """Prompt text to chunks of token ids; needs only the tokenizer and the usable embeddings."""

    def __init__(self, tokenizer, embeddings: dict[str, Any] | None = None,
                 settings: EncodeSettings = EncodeSettings()):
        self.tokenizer = tokenizer
        self.settings = settings
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.comma = tokenizer.convert_tokens_to_ids(",</w>")
        self._embeddings_by_first_id: dict[int, list[tuple[list[int], Any]]] = {}
        for emb in (embeddings or {}).values():
            ids = self.token_ids([emb.name])[0]
            if ids:
                self._embeddings_by_first_id.setdefault(ids[0], []).append((ids, emb))
        for candidates in self._embeddings_by_first_id.values():
            candidates.sort(key=lambda c: len(c[0]), reverse=True)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def _embedding_at(self, tokens: list[int], position: int) -> tuple[Any, int]:
        for ids, emb in self._embeddings_by_first_id.get(tokens[position], []):
            if tokens[position:position + len(ids)] == ids:
                return emb, len(ids)
        return None, 0

    def tokenize_line(self, line: str) -> tuple[list[PromptChunk], int]:
        """Chunks for one prompt line, and its token count as the counter shows it."""
        if self.settings.emphasis != "None":
            parsed = prompt_parser.parse_prompt_attention(line)
        else:
            parsed = [[line, 1.0]]
        tokenized = self.token_ids([text for text, _ in parsed])
        chunks: list[PromptChunk] = []
        chunk = PromptChunk()
        token_count = 0
        last_comma = -1
        backtrack = self.settings.comma_padding_backtrack

        def close_chunk(is_last: bool = False) -> None:
            nonlocal chunk, token_count, last_comma
            token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
            pad = CHUNK_LENGTH - len(chunk.tokens)
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end] * (pad + 1)
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0] * (pad + 1)
            chunks.append(chunk)
            chunk = PromptChunk()
            last_comma = -1

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                close_chunk()
                continue
            position = 0
            while position < len(tokens):
                token = tokens[position]
                if token == self.comma:
                    last_comma = len(chunk.tokens)
                elif (backtrack and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                      and len(chunk.tokens) - last_comma <= backtrack):
                    # move the words after the last comma into the next chunk
                    cut = last_comma + 1
                    moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                    close_chunk()
                    chunk.tokens, chunk.multipliers = moved_tokens, moved_mults
                if len(chunk.tokens) == CHUNK_LENGTH:
                    close_chunk()
                emb, emb_token_len = self._embedding_at(tokens, position)
                if emb is None:
                    chunk.tokens.append(token)
                    chunk.multipliers.append(weight)
                    position += 1
                    continue
                n = emb.vector_count
                if len(chunk.tokens) + n > CHUNK_LENGTH:
                    close_chunk()
                chunk.fixes.append((len(chunk.tokens), emb))
                chunk.tokens += [0] * n
                chunk.multipliers += [weight] * n
                position += emb_token_len

        if chunk.tokens or not chunks:
            close_chunk(is_last=True)
        return chunks, token_count

    def empty_chunk(self) -> PromptChunk:
        return PromptChunk([self.id_start] + [self.id_end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))

    def used_embeddings(self, line: str) -> list[str]:
        chunks, _ = self.tokenize_line(line)
        return sorted({emb.name for c in chunks for _, emb in c.fixes})


COUNTED_STEPS_LIMIT = 1000
MAX_ENCODED_CHARACTERS = 200_000  # about 50,000 tokens: 700 chunks of 75 to encode and hold per prompt


def distinct_texts(schedules: list[list[list]]) -> list[str]:
    """The texts to encode for these schedules, each once; raises `PromptTooComplexError` where prompt editing
    and alternation make more text than `MAX_ENCODED_CHARACTERS` (each variant is encoded and held)."""
    texts = list(dict.fromkeys(text for schedule in schedules for _, text in schedule))
    size = sum(map(len, texts))
    if size > MAX_ENCODED_CHARACTERS:
        raise prompt_parser.PromptTooComplexError(
            f"prompt makes {len(texts)} different texts to encode (prompt editing and alternation) of {size} "
            f"characters together; at most {MAX_ENCODED_CHARACTERS} are supported")
    return texts


def prompt_token_count(tokenizer: PromptTokenizer, prompt: str, steps: int, is_negative: bool = False
                       ) -> tuple[int, int]:
    """(tokens, limit) for the UI counter ("80/150"): the longest text any step of the prompt uses.

    Called on every keystroke with whatever the page sends: a prompt too complex for the parsers, or with too
    many variants, is counted as plain text, and steps are capped (a job refuses more than that anyway)."""
    text, _ = extra_networks.parse_prompt(prompt)
    steps = max(1, min(int(steps), COUNTED_STEPS_LIMIT))
    try:
        prompt_parser.check_prompt_complexity(text)
        flat = [text] if is_negative else prompt_parser.get_multicond_prompt_list([text])[1]
        texts = distinct_texts(prompt_parser.get_learned_conditioning_prompt_schedules(flat, steps))
    except prompt_parser.PromptTooComplexError:
        count = len(tokenizer.token_ids([text])[0])
        return count, target_token_count(count)
    except Exception:  # the counter must never fail while the user types
        texts = [text]
    count = max(tokenizer.tokenize_line(t)[1] for t in texts)
    return count, target_token_count(count)


class _EmbeddingInjector:
    """While active, puts embedding vectors into the token-embedding layer's output at the
    chunk positions where their placeholder tokens are (after the BOS token)."""

    def __init__(self, encoder, key: str, fixes: list[list[tuple[int, Any]]]):
        self.layer = encoder.get_input_embeddings()
        self.key = key
        self.fixes = fixes
        self.handle = None

    def __enter__(self):
        if any(self.fixes):
            self.handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()

    def _hook(self, module, inputs, output):
        rows = []
        for row, fixes in zip(output, self.fixes):
            for offset, emb in fixes:
                vec = emb.vectors[self.key].to(device=row.device, dtype=row.dtype)
                n = min(row.shape[0] - offset - 1, vec.shape[0])
                row = torch.cat([row[: offset + 1], vec[:n], row[offset + 1 + n:]])
            rows.append(row)
        return torch.stack(rows)


class PromptEncoder:
    """Encodes prompt lines with one loaded model's text encoders."""

    def __init__(self, model, embeddings: dict[str, Any] | None = None, settings: EncodeSettings = EncodeSettings()):
        self.model = model
        self.settings = settings
        self.family: ModelFamily = model.spec.family
        self.tokenizer = PromptTokenizer(model.tokenizers[0], embeddings, settings)
        self.pad_ids = [tok.pad_token_id for tok in model.tokenizers]

    def _layer_output(self, index: int, out) -> torch.Tensor:
        encoder = self.model.text_encoders[index]
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        return self.family.layer_output(out, index, self.settings.clip_skip, self.settings.sdxl_clip_l_skip,
                                        final_norm)

    def _encode_chunks(self, chunks: list[PromptChunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One chunk position for the whole batch -> context [B, 77, width] (and pooled)."""
        placement = self.model.placement
        device = placement.policy.device
        zs, pooled = [], None
        for index, (encoder_name, pad_id) in enumerate(zip(
                [f"text_encoder_{i}" for i in range(len(self.model.text_encoders))], self.pad_ids)):
            tokens = torch.tensor([c.tokens for c in chunks])
            if pad_id != self.tokenizer.id_end:  # OpenCLIP pads after the first EOS with its own token
                for row in tokens:
                    first_end = (row == self.tokenizer.id_end).nonzero()[0].item()
                    row[first_end + 1:] = pad_id
            key = self.family.embedding_keys[index]
            with placement.use(encoder_name) as encoder, torch.no_grad(), \
                    _EmbeddingInjector(encoder, key, [c.fixes for c in chunks]):
                out = encoder(tokens.to(device), output_hidden_states=True)
                z = self._layer_output(index, out).float()
                if getattr(out, "text_embeds", None) is not None:
                    pooled = out.text_embeds.float()
            zs.append(self._emphasize(z, torch.tensor([c.multipliers for c in chunks], device=z.device)))
        return torch.cat(zs, dim=-1), pooled

    def _emphasize(self, z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
        if self.settings.emphasis == "None" or bool((multipliers == 1).all()):
            return z  # (A1111 multiplies by 1 and rescales by mean/mean here: the same, unless the mean is 0)
        original_mean = z.mean()
        z = z * multipliers.unsqueeze(-1)
        new_mean = z.mean()
        if self.settings.emphasis == "Original" and new_mean.abs() > 1e-12:
            z = z * (original_mean / new_mean)
        return z

    def encode(self, lines: list[str], is_negative: bool = False) -> TextConditioning:
        """Conditioning for a batch of prompt lines (no AND, no editing syntax left)."""
        if is_negative and self.family.zero_empty_negative and all(x == "" for x in lines):
            return self._zeros(len(lines))  # SDXL was trained with zeroed empty negatives
        per_line = [self.tokenizer.tokenize_line(line)[0] for line in lines]
        n_chunks = max(len(c) for c in per_line)
        contexts, pooled = [], None
        for i in range(n_chunks):
            batch = [c[i] if i < len(c) else self.tokenizer.empty_chunk() for c in per_line]
            z, p = self._encode_chunks(batch)
            contexts.append(z)
            if i == 0:
                pooled = p
        return TextConditioning(torch.cat(contexts, dim=1).cpu(), None if pooled is None else pooled.cpu())

    def _zeros(self, batch: int) -> TextConditioning:
        width = self.model.unet.config.cross_attention_dim
        pooled_dim = self.model.text_encoders[-1].config.projection_dim
        return TextConditioning(torch.zeros(batch, CHUNK_LENGTH + 2, width), torch.zeros(batch, pooled_dim))


# ---- schedules and AND ----------------------------------------------------------------------

@dataclass
class ScheduledConditioning:
    end_at_step: int
    cond: TextConditioning  # batch of one


class ConditioningCache:
    """Remembers recent encodings so the same prompt and settings are not encoded again.

    Keys include everything that changes the result: model, settings, embeddings and text LoRAs."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, TextConditioning] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_encode(self, key: tuple, encode) -> TextConditioning:
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        self.misses += 1
        value = encode()
        self._entries[key] = value
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


def _cached_encode(encoder: PromptEncoder, texts: list[str], is_negative: bool, cache: ConditioningCache | None,
                   context_key: tuple) -> list[TextConditioning]:
    """Encode each text once, through the cache when given."""
    def encode_one(text: str) -> TextConditioning:
        return encoder.encode([text], is_negative=is_negative)

    if cache is None:
        return [encode_one(t) for t in texts]
    return [cache.get_or_encode(context_key + (is_negative, t), lambda t=t: encode_one(t)) for t in texts]


def learned_conditioning(encoder: PromptEncoder, prompts: Iterable[str], steps: int, hires_steps: int | None = None,
                         use_old_scheduling: bool = False, is_negative: bool = False,
                         cache: ConditioningCache | None = None, context_key: tuple = ()
                         ) -> list[list[ScheduledConditioning]]:
    """For each prompt its conditioning schedule (prompt editing and alternation resolved).
    Raises `prompt_parser.PromptTooComplexError` for prompts too complex to parse or encode."""
    prompts = list(prompts)
    schedules = prompt_parser.get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps,
                                                                       use_old_scheduling)
    distinct_texts(schedules)
    out = []
    for schedule in schedules:
        conds = _cached_encode(encoder, [text for _, text in schedule], is_negative, cache, context_key)
        out.append([ScheduledConditioning(end, cond) for (end, _), cond in zip(schedule, conds)])
    return out


@dataclass
class MultiCondConditioning:
    """Per prompt: its AND-ed subprompts as (schedule, weight)."""
    batch: list[list[tuple[list[ScheduledConditioning], float]]]


def multicond_learned_conditioning(encoder: PromptEncoder, prompts: list[str], steps: int,
                                   hires_steps: int | None = None, use_old_scheduling: bool = False,
                                   cache: ConditioningCache | None = None, context_key: tuple = ()
                                   ) -> MultiCondConditioning:
    indexes, flat, _ = prompt_parser.get_multicond_prompt_list(prompts)
    schedules = learned_conditioning(encoder, flat, steps, hires_steps, use_old_scheduling, cache=cache,
                                     context_key=context_key)
    return MultiCondConditioning([[(schedules[i], w) for i, w in prompt] for prompt in indexes])


def pad_to_longest(conds: list[TextConditioning]) -> list[TextConditioning]:
    """Conditionings of different lengths (an AND-ed subprompt over 75 tokens, prompt editing to a longer text)
    made one length to share a batch, by A1111's rule (`prompt_parser.stack_conds`): each shorter context is
    extended with copies of its own last token vector up to the longest. Pooled vectors are left as they are."""
    longest = max(c.context.shape[1] for c in conds)
    padded = []
    for c in conds:
        missing = longest - c.context.shape[1]
        if missing:
            c = TextConditioning(torch.cat([c.context, c.context[:, -1:].expand(-1, missing, -1)], dim=1), c.pooled)
        padded.append(c)
    return padded


def cond_at_step(schedule: list[ScheduledConditioning], step: int) -> TextConditioning:
    """The conditioning in force at `step`, compared as A1111 does (its sampler steps count from 0
    while schedule ends count from 1, and past the end it falls back to the first entry)."""
    for entry in schedule:
        if step <= entry.end_at_step:
            return entry.cond
    return schedule[0].cond
