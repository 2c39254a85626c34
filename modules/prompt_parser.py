"""A1111's prompt syntax, with its exact semantics (extensions call these functions by name).

- Prompt editing and alternation: `[from:to:when]`, `[to:when]`, `[from::when]`, `[a|b|c]`
  -> `get_learned_conditioning_prompt_schedules`: for each prompt, the text in force up to each step.
- Emphasis: `(a)`, `((a))`, `[a]`, `(a:1.5)`, escapes, `BREAK` -> `parse_prompt_attention`.
- Composable diffusion: `a AND b:0.7` -> `get_multicond_prompt_list`.

Malformed prompts behave as in A1111: a prompt the editing grammar cannot parse is used as written,
and unbalanced emphasis brackets apply their weight up to the end of the prompt.

The editing grammar is parsed with an Earley parser (as in A1111), whose time grows steeply with the
number of brackets: a prompt without `[` never reaches it (its schedule is the prompt itself), and a
prompt with `[` is refused with `PromptTooComplexError` beyond `MAX_EDITING_SYNTAX` of the characters
`[]():|`, and any prompt beyond `MAX_BRACKET_DEPTH` levels of nesting (`check_prompt_complexity`).
"""
from __future__ import annotations

import re
from functools import lru_cache

import lark

# The prompt-editing language. Stray brackets and colons outside any construct are kept as text;
# `plain` is any run of characters other than brackets, colon and bar (backslash escapes any one).
# Ambiguities are resolved by lark's Earley parser, as A1111 does with an equivalent grammar.
_EDITING_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


MAX_BRACKET_DEPTH = 32  # deeper nesting multiplies weights beyond any use (1.1**32 = 21)
MAX_EDITING_SYNTAX = 192  # the Earley parser takes about a second for 192 of `[]():|`, a minute for 1000


class PromptTooComplexError(ValueError):
    """A prompt whose brackets would take the parsers too long or too much memory; the message is for the user."""


_SYNTAX_OR_ESCAPE = re.compile(r"\\.|[][():|]", re.S)


def syntax_counts(prompt: str) -> tuple[int, int]:
    """(deepest nesting of `(` and `[` together, number of the characters `[]():|`); escaped ones do not count."""
    depth = deepest = count = 0
    for m in _SYNTAX_OR_ESCAPE.finditer(prompt):
        token = m.group(0)
        if token.startswith("\\"):
            continue
        count += 1
        if token in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif token in ")]" and depth:
            depth -= 1
    return deepest, count


def check_prompt_complexity(prompt: str) -> None:
    """Raise `PromptTooComplexError` for a prompt nested too deep, or using prompt editing (`[`) with too much
    syntax for the editing parser."""
    deepest, count = syntax_counts(prompt)
    if deepest > MAX_BRACKET_DEPTH:
        raise PromptTooComplexError(f"prompt nests brackets {deepest} deep; at most {MAX_BRACKET_DEPTH} are "
                                    f"supported")
    if "[" in prompt and count > MAX_EDITING_SYNTAX:
        raise PromptTooComplexError(f"prompt uses [ ] and has {count} of the characters [ ] ( ) : |; at most "
                                    f"{MAX_EDITING_SYNTAX} are supported in a prompt with [ ] (prompt editing)")


@lru_cache(maxsize=1)
def _editing_parser() -> lark.Lark:
    return lark.Lark(_EDITING_GRAMMAR)


def _switch_steps(tree: lark.Tree, steps: int, int_offset: int, float_offset: float,
                  old_scheduling: bool) -> list[int]:
    """Resolve each `[..:..:when]` to the integer step it switches after (stored in the tree) and
    return every step at which the prompt text can change."""
    changes = {steps}
    for node in tree.iter_subtrees():
        if node.data == "alternate":
            changes.update(range(1, steps + 1))
        elif node.data == "scheduled":
            text = str(node.children[-2])
            when = float(text)
            if old_scheduling:
                if when < 1:
                    when *= steps
            elif "." in text:
                when = (when - float_offset) * steps  # a fraction of the steps (1.x: of the hires pass)
            else:
                when = when - int_offset  # an absolute step (in hires fix, counted from the first pass)
            node.children[-2] = min(steps, int(when))
            if node.children[-2] >= 1:
                changes.add(node.children[-2])
    return sorted(changes)


def _text_at_step(tree: lark.Tree, step: int) -> str:
    """The prompt text in force at `step`, with emphasis brackets kept for the attention parser."""
    parts: list[str] = []

    def emit(node) -> None:
        if node is None:
            return
        if isinstance(node, lark.Token):
            parts.append(str(node))
            return
        if node.data == "scheduled":
            before, after, _, when, _ = node.children
            emit(before if step <= when else after)
        elif node.data == "alternate":
            options = node.children
            emit(options[(step - 1) % len(options)])
        else:
            for child in node.children:
                emit(child)

    emit(tree)
    return "".join(parts)


def get_learned_conditioning_prompt_schedules(prompts: list[str], base_steps: int, hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[list[list]]:
    """For each prompt, `[[end_step, text], ...]`: `text` is used for steps up to and including
    `end_step`. With `hires_steps`, schedules are for the hires pass: integer `when` counts from
    the start of the first pass, fractions above 1 are fractions of the hires pass.
    Raises `PromptTooComplexError` for a prompt `check_prompt_complexity` refuses."""
    if hires_steps is None or use_old_scheduling:
        int_offset, float_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, float_offset, steps = base_steps, 1.0, hires_steps

    def schedule(prompt: str) -> list[list]:
        if "[" not in prompt:  # nothing to schedule or alternate: the grammar would give the prompt back as is
            return [[steps, prompt]]
        check_prompt_complexity(prompt)
        try:
            tree = _editing_parser().parse(prompt)
        except lark.exceptions.LarkError:
            return [[steps, prompt]]
        return [[t, _text_at_step(tree, t)]
                for t in _switch_steps(tree, steps, int_offset, float_offset, use_old_scheduling)]

    unique = {p: schedule(p) for p in set(prompts)}
    return [unique[p] for p in prompts]


# ---- emphasis -------------------------------------------------------------------------------

_ATTENTION_TOKENS = re.compile(r"""
    \\[()\[\]\\]        # escaped bracket or backslash: literal
  | \\                  # lone backslash: dropped
  | [(\[]               # opening bracket
  | :\s*([+-]?[.\d]+)\s*\)   # ":1.5)" closes a round bracket with a weight
  | [)\]]               # closing bracket
  | [^\\()\[\]:]+       # text
  | :                   # a colon that closes nothing is text
""", re.VERBOSE)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1


def _parse_weight(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None  # "(a:1.2.3)": not a weight; kept as text


def parse_prompt_attention(text: str) -> list[list]:
    """Split emphasis syntax into `[[text, weight], ...]`; `["BREAK", -1]` marks a forced chunk break.

    `(a)` x1.1, `[a]` /1.1, `(a:w)` xw, nested brackets multiply; unclosed brackets apply to the
    end of the prompt; `\\(` `\\)` `\\[` `\\]` `\\\\` are literal. Adjacent pieces of equal weight merge.
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for item in res[start:]:
            item[1] *= multiplier

    for m in _ATTENTION_TOKENS.finditer(text):
        token = m.group(0)
        weight = _parse_weight(m.group(1))
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply_from(round_open.pop(), weight)
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    if not res:
        return [["", 1.0]]
    merged = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged


# ---- composable diffusion (AND) --------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
_SUBPROMPT_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_subprompt_weight(subprompt: str) -> tuple[str, float]:
    """`"a dog:0.5"` -> ("a dog", 0.5); no weight means 1.0."""
    m = _SUBPROMPT_WEIGHT.search(subprompt)
    if m is None:
        return subprompt, 1.0
    text, weight = m.groups()
    return text, float(weight) if weight is not None else 1.0


def get_multicond_prompt_list(prompts: list[str]) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """Split prompts on `AND` into weighted subprompts, each distinct text encoded once.

    Returns `(indexes, flat_list, index_of)`: for each prompt a list of (index into flat_list, weight).
    """
    res_indexes: list[list[tuple[int, float]]] = []
    flat: list[str] = []
    index_of: dict[str, int] = {}
    for prompt in prompts:
        indexes = []
        for sub in _AND.split(prompt):
            text, weight = split_subprompt_weight(sub)
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            indexes.append((index_of[text], weight))
        res_indexes.append(indexes)
    return res_indexes, flat, index_of
