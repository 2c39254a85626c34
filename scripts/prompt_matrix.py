"""Prompt matrix (A1111's built-in script): the prompt's `|`-separated parts after the first are switched on and off
in every combination, one picture each, and a grid shows them with legends naming the parts each cell used.

"a cat | red | on grass" makes "a cat ", "a cat , red", "a cat , on grass" and "a cat , red, on grass" (the first
part as typed, the others stripped of spaces and commas, as A1111 joins them)."""
import gradio as gr

from modules import images, processing, scripts
from modules.generation import GenerationError
from modules.shared import opts

DELIMITERS = {"comma": ", ", "space": " "}


MAX_VARIABLE_PARTS = 10  # 1024 pictures, a job's batch count limit


def matrix_prompts(parts: list[str], put_at_start: bool, delimiter: str) -> list[str]:
    """One prompt per combination of the variable parts `parts[1:]`: combination k uses part n when bit n of k is
    set, so the first half of the parts changes along the grid's columns and the rest along its rows."""
    prompts = []
    for combination in range(1 << (len(parts) - 1)):
        chosen = [part.strip().strip(",") for n, part in enumerate(parts[1:]) if combination & (1 << n)]
        prompts.append(delimiter.join([*chosen, parts[0]] if put_at_start else [parts[0], *chosen]))
    return prompts


def dividing_batch_size(batch_size: int, count: int) -> int:
    """The largest power of two up to `batch_size` and `count` (itself a power of two): it divides `count`, so every
    batch is full. A1111 ends with a short batch instead, which our job loop does not make."""
    return min(count, 1 << (max(1, int(batch_size)).bit_length() - 1))


class Script(scripts.Script):
    def title(self):
        return "Prompt matrix"

    def ui(self, is_img2img):
        with gr.Row():
            with gr.Column():
                put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                           elem_id=self.elem_id("put_at_start"))
                different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                              elem_id=self.elem_id("different_seeds"))
            with gr.Column():
                prompt_type = gr.Radio(["positive", "negative"], label="Select prompt", value="positive",
                                       elem_id=self.elem_id("prompt_type"))
                variations_delimiter = gr.Radio(list(DELIMITERS), label="Select joining char", value="comma",
                                                elem_id=self.elem_id("variations_delimiter"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p, put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size):
        if prompt_type not in ("positive", "negative"):
            raise GenerationError(f"Prompt matrix: unknown prompt type {prompt_type!r}; give positive or negative")
        if variations_delimiter not in DELIMITERS:
            raise GenerationError(f"Prompt matrix: unknown joining char {variations_delimiter!r}; give comma or space")
        processing.fix_seed(p)
        save_grid = opts.grid_save and not (p.do_not_save_samples or p.do_not_save_grid)
        source = p.prompt if prompt_type == "positive" else p.negative_prompt
        source = source[0] if isinstance(source, list) else source
        parts = source.split("|")
        if len(parts) - 1 > MAX_VARIABLE_PARTS:  # each part doubles the pictures: refuse before listing them
            raise GenerationError(f"Prompt matrix: {len(parts) - 1} variable parts would make 2^{len(parts) - 1} "
                                  f"pictures; give at most {MAX_VARIABLE_PARTS}")
        prompts = matrix_prompts(parts, bool(put_at_start), DELIMITERS[variations_delimiter])

        p.batch_size = dividing_batch_size(p.batch_size, len(prompts))
        p.n_iter = len(prompts) // p.batch_size
        p.do_not_save_grid = True
        p.prompt_for_display = p.prompt[0] if isinstance(p.prompt, list) else p.prompt
        if prompt_type == "positive":
            p.prompt = prompts
        else:
            p.negative_prompt = prompts
        p.seed = [p.seed + (i if different_seeds else 0) for i in range(len(prompts))]
        processed = processing.process_images(p)

        cells = processed.images[processed.index_of_first_image:]
        if len(cells) != len(prompts):  # interrupted: no complete matrix to draw
            return processed
        grid = images.image_grid(cells, p.batch_size, rows=1 << ((len(parts) - 1) // 2))
        grid = images.draw_prompt_matrix(grid, cells[0].width, cells[0].height, parts, int(margin_size))
        processed.images.insert(0, grid)
        processed.infotexts.insert(0, processed.infotexts[0])
        processed.index_of_first_image = 1
        if save_grid:
            images.save_image(grid, p.outpath_grids, "prompt_matrix", extension=opts.grid_format, prompt=source,
                              seed=processed.seed, grid=True, p=p)
        return processed
