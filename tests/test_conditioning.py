"""Prompt text to conditioning on tiny models: chunks, emphasis, BREAK, clip skip, SDXL, caching."""
import pytest
import torch

from modules.conditioning.text import (
    ConditioningCache,
    EncodeSettings,
    PromptEncoder,
    cond_at_step,
    learned_conditioning,
    multicond_learned_conditioning,
    prompt_token_count,
)
from modules.models.loading import load_model
from modules.models.model_files import ModelFile


@pytest.fixture(scope="module")
def sd1(tiny_dir, cpu_policy):
    path = tiny_dir / "tiny-sd1.safetensors"
    return load_model(ModelFile(path, path.name), cpu_policy)


@pytest.fixture(scope="module")
def sd2(tiny_dir, cpu_policy):
    path = tiny_dir / "sd2" / "tiny-sd2-v.safetensors"
    return load_model(ModelFile(path, path.name), cpu_policy)


@pytest.fixture(scope="module")
def sdxl(tiny_dir, cpu_policy):
    path = tiny_dir / "tiny-sdxl.safetensors"
    return load_model(ModelFile(path, path.name), cpu_policy)


def words(n: int) -> str:
    """n distinct one-token words."""
    vocab = ["cat", "dog", "red", "blue", "tree", "house", "car", "sun", "moon", "star"]
    return " ".join(vocab[i % len(vocab)] for i in range(n))


def test_long_prompt_is_chunked_and_counted(sd1):
    enc = PromptEncoder(sd1)
    chunks, count = enc.tokenizer.tokenize_line(words(200))
    assert count == 200 and len(chunks) == 3
    assert all(len(c.tokens) == 77 and c.tokens[0] == 49406 and c.tokens[-1] == 49407 for c in chunks)
    cond = enc.encode([words(200)])
    assert cond.context.shape == (1, 3 * 77, 64)
    assert prompt_token_count(enc.tokenizer, words(80), steps=20) == (80, 150)
    assert prompt_token_count(enc.tokenizer, "", steps=20) == (0, 75)


def test_token_counter_uses_the_longest_step_and_ignores_lora_tags(sd1):
    tok = PromptEncoder(sd1).tokenizer
    assert prompt_token_count(tok, f"[{words(3)}:{words(90)}:5] <lora:x:1>", steps=20) == (90, 150)
    assert prompt_token_count(tok, f"{words(10)} AND {words(80)}", steps=20) == (80, 150)


def test_emphasis_scales_the_token_vectors(sd1):
    plain = PromptEncoder(sd1).encode(["a red circle"]).context
    assert torch.equal(PromptEncoder(sd1).encode(["a (red:1.0) circle"]).context, plain)
    emphasized = PromptEncoder(sd1).encode(["a (red) circle"]).context
    assert not torch.allclose(emphasized, plain)

    no_norm = PromptEncoder(sd1, settings=EncodeSettings(emphasis="No norm")).encode(["a (red:1.5) circle"]).context
    # token 0 is BOS, then "a", "red": only "red" is scaled
    assert torch.allclose(no_norm[0, 2], plain[0, 2] * 1.5)
    assert torch.equal(no_norm[0, 1], plain[0, 1])

    off = PromptEncoder(sd1, settings=EncodeSettings(emphasis="None"))
    chunks, _ = off.tokenizer.tokenize_line("a (red) circle")
    assert 263 in chunks[0].tokens  # "(" stays a token when emphasis is off


def test_break_starts_a_new_chunk_and_commas_pull_words_along(sd1):
    tok = PromptEncoder(sd1).tokenizer
    chunks, _ = tok.tokenize_line("a cat BREAK a dog")
    assert len(chunks) == 2
    assert chunks[1].tokens[1:3] == tok.token_ids(["a dog"])[0]

    prompt = words(70) + ", " + words(10)
    chunks, _ = tok.tokenize_line(prompt)
    comma = tok.comma
    first = chunks[0].tokens[1:chunks[0].tokens.index(49407)]
    assert first[-1] == comma and len(first) == 71  # the 10 words after the comma moved on
    assert chunks[1].tokens[1:11] == tok.token_ids([words(10)])[0]
    no_backtrack = PromptEncoder(sd1, settings=EncodeSettings(comma_padding_backtrack=0)).tokenizer
    chunks, _ = no_backtrack.tokenize_line(prompt)
    assert 49407 not in chunks[0].tokens[1:76]


def test_clip_skip_changes_sd1_and_not_sd2(sd1, sd2):
    base = PromptEncoder(sd1).encode(["a cat"]).context
    skipped = PromptEncoder(sd1, settings=EncodeSettings(clip_skip=2)).encode(["a cat"]).context
    assert not torch.allclose(base, skipped)
    assert torch.equal(PromptEncoder(sd2).encode(["a cat"]).context,
                       PromptEncoder(sd2, settings=EncodeSettings(clip_skip=2)).encode(["a cat"]).context)


def test_openclip_pads_with_its_own_token(sd2):
    enc = PromptEncoder(sd2)
    assert enc.pad_ids == [0]
    seen = []
    layer = sd2.text_encoders[0].get_input_embeddings()
    handle = layer.register_forward_hook(lambda _module, inputs, _output: seen.append(inputs[0].clone()))
    enc.encode(["a cat"])
    handle.remove()
    ids = seen[0][0].tolist()
    assert ids[:4] == [49406, 320, 2368, 49407] and set(ids[4:]) == {0}


def test_sdxl_concatenates_both_encoders_and_pools(sdxl):
    enc = PromptEncoder(sdxl)
    cond = enc.encode(["a red circle", "a blue square"])
    assert cond.context.shape == (2, 77, 64 + 128)
    assert cond.pooled.shape == (2, 128)
    assert not torch.allclose(cond.pooled[0], cond.pooled[1])
    zero = enc.encode([""], is_negative=True)
    assert torch.count_nonzero(zero.context) == 0 and torch.count_nonzero(zero.pooled) == 0
    assert torch.count_nonzero(enc.encode([""]).context) > 0  # only an empty *negative* is zeroed


def test_schedules_and_and(sd1):
    enc = PromptEncoder(sd1)
    cache = ConditioningCache()
    [schedule] = learned_conditioning(enc, ["a [red:blue:0.5] ball"], steps=10, cache=cache)
    assert [s.end_at_step for s in schedule] == [5, 10]
    assert not torch.allclose(cond_at_step(schedule, 0).context, cond_at_step(schedule, 9).context)
    assert torch.equal(cond_at_step(schedule, 5).context, schedule[0].cond.context)  # A1111's step counting
    assert cache.misses == 2

    learned_conditioning(enc, ["a [red:blue:0.5] ball"], steps=10, cache=cache)
    assert cache.misses == 2 and cache.hits == 2  # same prompt, same settings: nothing re-encoded

    multi = multicond_learned_conditioning(enc, ["a cat AND a dog:0.5"], steps=10, cache=cache)
    [(cat, w1), (dog, w2)] = multi.batch[0]
    assert (w1, w2) == (1.0, 0.5)
    assert not torch.allclose(cat[0].cond.context, dog[0].cond.context)


def test_textual_inversion_embedding_replaces_its_tokens(sd1, sdxl, tmp_path):
    from modules.conditioning.embeddings import EmbeddingDatabase
    vectors = torch.randn(2, 64, generator=torch.Generator().manual_seed(3))
    torch.save({"string_to_param": {"*": vectors}, "name": "whatever", "step": 500}, tmp_path / "shiny-style.pt")
    torch.save({"clip_l": torch.randn(1, 64), "clip_g": torch.randn(1, 128)}, tmp_path / "xl-only.pt")
    db = EmbeddingDatabase(tmp_path)
    db.reload()
    usable, skipped = db.for_model(sd1.spec)
    assert set(usable) == {"shiny-style"} and "xl-only" in skipped

    enc = PromptEncoder(sd1, usable)
    chunks, count = enc.tokenizer.tokenize_line("a photo, shiny-style")
    assert count == 3 + 2  # "a", "photo", ",", then the embedding's two vectors
    assert chunks[0].fixes[0][0] == 3 and enc.tokenizer.used_embeddings("a shiny-style") == ["shiny-style"]

    with_emb = enc.encode(["a photo, shiny-style"]).context
    without = PromptEncoder(sd1).encode(["a photo, shiny-style"]).context
    assert not torch.allclose(with_emb, without)
    # what the text transformer receives: after BOS and 3 tokens, the embedding's two vectors
    from modules.conditioning.text import _EmbeddingInjector
    layer = sd1.text_encoders[0].get_input_embeddings()
    with _EmbeddingInjector(sd1.text_encoders[0], "default", [chunks[0].fixes]):
        out = layer(torch.tensor([chunks[0].tokens]))
    assert torch.equal(out[0, 4:6], vectors)

    xl_usable, _ = db.for_model(sdxl.spec)
    assert set(xl_usable) == {"xl-only"}
    assert PromptEncoder(sdxl, xl_usable).encode(["xl-only"]).context.shape == (1, 77, 192)
