"""A1111 prompt syntax: schedules, emphasis, AND, extra-network tags. Expected values are what
A1111 produces for the same input, malformed input included."""
import pytest

from modules.conditioning import extra_networks
from modules.prompt_parser import (
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
)


def schedule(prompt, steps=10, hires=None, old=False):
    return get_learned_conditioning_prompt_schedules([prompt], steps, hires, old)[0]


ALT = lambda *texts: [[i + 1, texts[i % len(texts)]] for i in range(10)]  # noqa: E731

SCHEDULES = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]: 2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("a [b:0.25] c", [[2, "a  c"], [10, "a b c"]]),
    ("[red:blue:0.5] ball", [[5, "red ball"], [10, "blue ball"]]),
    ("[cat::4]", [[4, "cat"], [10, ""]]),
    ("[cat:dog:20]", [[10, "cat"]]),  # past the end: never switches
    ("[cat:dog:0]", [[10, "dog"]]),
    ("[cat:dog:-3]", [[10, "dog"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("a | b", [[10, "a | b"]]),  # a bar outside brackets: the grammar fails, used as written
    ("a [{b|d{:.5] c", [[10, "a [{b|d{:.5] c"]]),
    ("[a|(b:1.1)]", ALT("a", "(b:1.1)")),
    ("[fe|]male", ALT("female", "male")),
    ("[fe|||]male", ALT("female", "male", "male", "male")),
    ("[a|[b:c:5]]", [[1, "a"], [2, "b"], [3, "a"], [4, "b"], [5, "a"], [6, "c"], [7, "a"], [8, "c"], [9, "a"],
                     [10, "c"]]),
    ("(nested [x:y:2] emphasis:1.2)", [[2, "(nested x emphasis:1.2)"], [10, "(nested y emphasis:1.2)"]]),
    (r"\[not:a:3\] schedule", [[10, r"\[not:a:3\] schedule"]]),
]


@pytest.mark.parametrize("prompt,expected", SCHEDULES)
def test_schedules(prompt, expected):
    assert schedule(prompt) == expected


def test_hires_pass_counts_its_own_steps():
    assert schedule("a [b:.5] c", 10, hires=10) == [[10, "a b c"]]  # a fraction below 1: first pass only
    assert schedule("a [b:1.5] c", 10, hires=10) == [[5, "a  c"], [10, "a b c"]]
    assert schedule("a [b:15] c", 10, hires=10) == [[5, "a  c"], [10, "a b c"]]  # step 15 of 10+10
    assert schedule("a [b:.5] c", 10, hires=10, old=True) == [[5, "a  c"], [10, "a b c"]]


def test_old_scheduling_treats_whole_numbers_below_one_as_fractions():
    assert schedule("[a:b:0.5]", 20, old=True) == [[10, "a"], [20, "b"]]
    assert schedule("[a:b:3]", 20, old=True) == [[3, "a"], [20, "b"]]


def test_each_prompt_of_a_batch_gets_its_schedule():
    res = get_learned_conditioning_prompt_schedules(["[a:b:2]", "c", "[a:b:2]"], 4)
    assert res == [[[2, "a"], [4, "b"]], [[4, "c"]], [[2, "a"], [4, "b"]]]


ATTENTION = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("[unbalanced", [["unbalanced", 1 / 1.1]]),
    ("unbalanced)", [["unbalanced)", 1.0]]),
    ("unbalanced]", [["unbalanced]", 1.0]]),
    (r"\(literal\]", [["(literal]", 1.0]]),
    (r"a \\ b", [["a \\ b", 1.0]]),
    (r"a \x b", [["a x b", 1.0]]),  # a lone backslash disappears
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("((a))", [["a", 1.1 * 1.1]]),
    ("(((a)))", [["a", 1.1 * 1.1 * 1.1]]),
    ("[[a]]", [["a", (1 / 1.1) * (1 / 1.1)]]),
    ("(a:1.5)", [["a", 1.5]]),
    ("(a: 1.5 )", [["a", 1.5]]),
    ("(a:-1)", [["a", -1.0]]),
    ("(a:0)", [["a", 0.0]]),
    ("a:1.5)", [["a:1.5)", 1.0]]),  # a weight with no open bracket is text
    ("(a:b)", [["a:b", 1.1]]),  # a colon without a number is text
    ("([a]:1.5)", [["a", (1 / 1.1) * 1.5]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("aBREAKb", [["aBREAKb", 1.0]]),
    ("a, BREAK, b", [["a,", 1.0], ["BREAK", -1], [", b", 1.0]]),
    ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),  # inside brackets it is just a word
    ("", [["", 1.0]]),
    ("()", [["", 1.0]]),
    ("(:1.2)", [["", 1.0]]),
]


@pytest.mark.parametrize("text,expected", ATTENTION)
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == expected


def test_multicond_prompt_list():
    indexes, flat, index_of = get_multicond_prompt_list(["a cat AND a dog:0.5", "a cat AND a bird : -1 ", "ANDROID"])
    assert flat == ["a cat", " a dog", " a bird", "ANDROID"]
    assert indexes == [[(0, 1.0), (1, 0.5)], [(0, 1.0), (2, -1.0)], [(3, 1.0)]]
    assert index_of["a cat"] == 0
    _, flat, _ = get_multicond_prompt_list(["x:1.5 AND y:.5 AND z:2."])
    assert flat == ["x", " y", " z"]
    assert get_multicond_prompt_list(["x:1.5 AND y:.5 AND z:2."])[0] == [[(0, 1.5), (1, 0.5), (2, 2.0)]]


def test_lora_tags_are_taken_out_of_the_prompt():
    text, nets = extra_networks.parse_prompt("a cat <lora:style:0.8>, <lora:detail:1:0.5> <lora:x:te=0.3:unet=2>")
    assert text == "a cat ,  "
    tags, warnings = extra_networks.lora_tags(nets["lora"])
    assert [(t.name, t.te_multiplier, t.unet_multiplier) for t in tags] == [
        ("style", 0.8, 0.8), ("detail", 1.0, 0.5), ("x", 0.3, 2.0)]
    assert warnings == []
    tags, warnings = extra_networks.lora_tags(extra_networks.parse_prompt("<lora:a:heavy> <lora:b>")[1]["lora"])
    assert [(t.name, t.te_multiplier) for t in tags] == [("b", 1.0)]
    assert "not a number" in warnings[0]
