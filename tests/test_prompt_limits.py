"""Prompts that would take the parsers minutes or gigabytes are refused at once with a clear message, and prompts
within the limits give exactly what the editing grammar gives."""
import pytest

from modules import prompt_parser
from modules.conditioning.text import MAX_ENCODED_CHARACTERS, distinct_texts, prompt_token_count
from modules.generation.requests import GenerationError, Txt2ImgRequest
from modules.prompt_parser import (
    MAX_BRACKET_DEPTH,
    MAX_EDITING_SYNTAX,
    PromptTooComplexError,
    check_prompt_complexity,
    get_learned_conditioning_prompt_schedules,
    syntax_counts,
)


def through_the_grammar(prompt: str, steps: int) -> list[list]:
    """The schedule as the Earley grammar alone makes it, without the shortcut for prompts without `[`."""
    tree = prompt_parser._editing_parser().parse(prompt)
    return [[t, prompt_parser._text_at_step(tree, t)] for t in prompt_parser._switch_steps(tree, steps, 0, 0.0, False)]


@pytest.mark.parametrize("prompt", [
    "a cat", "(a cat)", "((a cat:1.3)), dog", "(a:1.2) (b) c: d", "a (b:c) d", "\\(escaped\\)", "a ( b", "a ) b",
    "(((", ":", "a: (b)", "BREAK (x) AND y:0.5", "",
])
def test_prompts_without_square_brackets_schedule_as_the_grammar_does(prompt):
    assert get_learned_conditioning_prompt_schedules([prompt], 20) == [through_the_grammar(prompt, 20)]


def test_many_emphasis_brackets_without_editing_are_quick_and_unchanged():
    prompt = "(cat) (dog:1.2) " * 1000  # the grammar would take hours; nothing in it is scheduled
    assert get_learned_conditioning_prompt_schedules([prompt], 30) == [[[30, prompt]]]


@pytest.mark.parametrize("prompt", ["(" * 5000 + "a", "[" * 5000 + "a", "([" * 2500 + "a" + "])" * 2500])
def test_deep_nesting_is_refused_with_its_depth(prompt):
    with pytest.raises(PromptTooComplexError, match=f"5000 deep; at most {MAX_BRACKET_DEPTH}"):
        check_prompt_complexity(prompt)
    if "[" in prompt:
        with pytest.raises(PromptTooComplexError):
            get_learned_conditioning_prompt_schedules([prompt], 20)


@pytest.mark.parametrize("prompt,count", [("[a|b]" * 2000, 6000), (":" * 3000 + "[a|b]", 3003),
                                          (")" * 3000 + "[a:b:3]", 3004)])
def test_much_editing_syntax_is_refused_with_its_count(prompt, count):
    with pytest.raises(PromptTooComplexError, match=f"has {count} of the characters .* at most {MAX_EDITING_SYNTAX}"):
        get_learned_conditioning_prompt_schedules([prompt], 20)


def test_prompts_at_the_limits_are_parsed_as_before():
    deep = "[" * MAX_BRACKET_DEPTH + "a:b:0.5" + "]" * MAX_BRACKET_DEPTH
    alternating = "[a|[b|" * (MAX_BRACKET_DEPTH // 2) + "c" + "]]" * (MAX_BRACKET_DEPTH // 2)
    weighted = "(a:1.2) " * ((MAX_EDITING_SYNTAX - 3) // 3) + "[x|y]"
    for prompt in (deep, alternating, weighted):
        check_prompt_complexity(prompt)
        assert get_learned_conditioning_prompt_schedules([prompt], 10) == [through_the_grammar(prompt, 10)]
    with pytest.raises(PromptTooComplexError):
        check_prompt_complexity("[" + deep + "]")
    with pytest.raises(PromptTooComplexError):
        check_prompt_complexity(weighted + "(x:2)")


def test_escaped_characters_do_not_count():
    assert syntax_counts("\\(\\[ a \\] \\) \\: \\|") == (0, 0)
    assert syntax_counts("(a) [b:c] ((d|e))") == (2, 10)
    assert syntax_counts(")))(((") == (3, 6)
    assert syntax_counts("\\\\(a)") == (1, 2)  # an escaped backslash, then a real bracket


def test_requests_name_the_prompt_field_that_is_too_complex():
    Txt2ImgRequest(prompt="[a|b] (c:1.2)").validate()
    for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        with pytest.raises(GenerationError, match=f"^{name}: prompt nests brackets"):
            Txt2ImgRequest(**{name: "(" * 100 + "x"}).validate()


class CharacterTokenizer:
    """One token per character: enough to count with."""

    def token_ids(self, texts):
        return [list(range(len(t))) for t in texts]

    def tokenize_line(self, line):
        return [], len(line)


def test_token_counter_counts_a_too_complex_prompt_as_plain_text():
    prompt = "[a|b]" * 2000
    assert prompt_token_count(CharacterTokenizer(), prompt, 20) == (len(prompt), 10050)
    assert prompt_token_count(CharacterTokenizer(), "[x|yy]", 10**9)[0] == 2  # steps are capped, not enumerated


def test_too_many_variants_to_encode_are_refused_and_counted_as_plain_text():
    prompt = "[a|b|c|d|e|f|g|h|i|j] " + "word " * 5000  # ten variants of 25,000 characters
    schedules = get_learned_conditioning_prompt_schedules([prompt], 20)
    with pytest.raises(PromptTooComplexError, match=f"10 different texts .* at most {MAX_ENCODED_CHARACTERS}"):
        distinct_texts(schedules)
    assert distinct_texts(get_learned_conditioning_prompt_schedules([prompt], 1)) == [schedules[0][0][1]]
    assert prompt_token_count(CharacterTokenizer(), prompt, 20)[0] == len(prompt)
