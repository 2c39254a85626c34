"""Prompts from file or textbox (A1111's built-in script): one job per line of the list. A plain line is a prompt;
a line starting with "--" gives the job's parameters in A1111's syntax, e.g.
`--prompt "a red square" --negative_prompt blurry --steps 10 --cfg_scale 5 --seed 3 --sampler_name "Euler a"`.

A1111 quietly uses a line it cannot read as a prompt; here a line starting with "--" must be readable, and an
unknown option or a bad value is refused, naming it, before anything is generated. The list comes from the textbox;
an uploaded file only fills the textbox with its text (its content as uploaded, never a path from the client).
"""
import copy
import random
import shlex

import gradio as gr

from modules import images, processing, scripts, sd_models, sd_samplers, shared
from modules.generation import GenerationError
from modules.shared import opts, state

TITLE = "Prompts from file or textbox"


def _checkpoint(value: str) -> str:
    info = sd_models.get_closet_checkpoint_match(value)
    if info is None:
        raise ValueError(f"unknown checkpoint {value!r}")
    return info.name


def _sampler(value: str) -> str:
    name = sd_samplers.samplers_map.get(value.lower())
    if name is None:
        raise ValueError(f"unknown sampler {value!r}; known: {', '.join(sd_samplers.visible_sampler_names())}")
    return name


def _boolean(value: str) -> bool:
    return value == "true"  # A1111's reading: anything else is false


def _folder(value: str) -> str:
    """An output folder: refused when the server hides folders from the page and the API (--hide-ui-dir-config,
    implied by --listen), as the folder settings are."""
    if getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        raise ValueError("output folders cannot be chosen on this server (--hide-ui-dir-config)")
    return value


def _style_names(value: str) -> list[str]:
    """A comma-separated list of style names (A1111 hands the text itself to `p.styles`, which wants a list)."""
    return [name.strip() for name in value.split(",") if name.strip()]


# A1111's options of a line and how each value is read; --prompt and --negative_prompt take every word up to the
# next option
LINE_OPTIONS = {
    "sd_model": _checkpoint, "outpath_samples": _folder, "outpath_grids": _folder, "prompt_for_display": str,
    "prompt": str, "negative_prompt": str, "styles": _style_names, "seed": int, "subseed_strength": float,
    "subseed": int, "seed_resize_from_h": int, "seed_resize_from_w": int, "sampler_index": int,
    "sampler_name": _sampler,
    "batch_size": int, "n_iter": int, "steps": int, "cfg_scale": float, "width": int, "height": int,
    "restore_faces": _boolean, "tiling": _boolean, "do_not_save_samples": _boolean, "do_not_save_grid": _boolean,
}
PROMPT_OPTIONS = ("prompt", "negative_prompt")


def parse_line(line: str) -> dict:
    """The options of one line as {p attribute: value}; GenerationError names what cannot be used."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise GenerationError(f"{TITLE}: cannot read the line {line!r}: {e}") from e
    found = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise GenerationError(f"{TITLE}: {word!r} in the line {line!r} should be an option starting with --")
        tag = word[2:]
        if tag not in LINE_OPTIONS:
            raise GenerationError(f"{TITLE}: unknown option --{tag} in the line {line!r}; known options: "
                                  + ", ".join(f"--{name}" for name in LINE_OPTIONS))
        if pos + 1 >= len(words):
            raise GenerationError(f"{TITLE}: --{tag} has no value in the line {line!r}")
        if tag in PROMPT_OPTIONS:
            end = pos + 2
            while end < len(words) and not words[end].startswith("--"):
                end += 1
            found[tag] = " ".join(words[pos + 1:end])
            pos = end
            continue
        try:
            found[tag] = LINE_OPTIONS[tag](words[pos + 1])
        except ValueError as e:
            raise GenerationError(f"{TITLE}: --{tag} {words[pos + 1]!r} in the line {line!r}: {e}") from e
        pos += 2
    return found


def read_jobs(text: str) -> list[dict]:
    """Every non-empty line as the options of its job (a plain line: its prompt)."""
    lines = [line.strip() for line in (text or "").splitlines()]
    return [parse_line(line) if line.startswith("--") else {"prompt": line} for line in lines if line]


def text_of_upload(data: bytes | None):
    """(cleared upload, textbox value): the uploaded file's lines in the textbox."""
    if data is None:
        return None, gr.update()
    return None, "\n".join(line.strip() for line in data.decode("utf8", errors="ignore").split("\n"))


def joined(line_text: str, main_text: str, position: str) -> str:
    return f"{line_text} {main_text}" if position == "start" else f"{main_text} {line_text}"


class Script(scripts.Script):
    def title(self):
        return TITLE

    def ui(self, is_img2img):
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False,
                                       elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start",
                                   elem_id=self.elem_id("prompt_position"))
        make_combined = gr.Checkbox(label="Make a combined image containing all outputs (if more than one)",
                                    value=False, elem_id=self.elem_id("make_combined"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=2, elem_id=self.elem_id("prompt_txt"))
        file = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))
        file.upload(fn=text_of_upload, inputs=[file], outputs=[file, prompt_txt], show_progress="hidden")
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt, make_combined]

    def run(self, p, checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt, make_combined=False):
        if prompt_position not in ("start", "end"):
            raise GenerationError(f"{TITLE}: unknown prompt position {prompt_position!r}; give start or end")
        jobs = read_jobs(prompt_txt)
        save_combined = not p.do_not_save_samples
        p.do_not_save_grid = True
        if (checkbox_iterate or checkbox_iterate_batch) and int(p.seed) == -1:
            p.seed = random.randrange(4294967294)
        state.job_count = sum(job.get("n_iter", p.n_iter) for job in jobs)

        pictures, prompts, negatives, seeds, infotexts, warnings = [], [], [], [], [], []
        interrupted = False
        for job in jobs:
            if state.interrupted:
                interrupted = True
                break
            line_p = copy.copy(p)
            line_p.extra_generation_params = dict(p.extra_generation_params)  # each line's own, not shared
            line_p.override_settings = dict(p.override_settings)
            for name, value in job.items():
                if name == "sd_model":
                    line_p.override_settings["sd_model_checkpoint"] = value
                else:
                    setattr(line_p, name, value)
            for name in PROMPT_OPTIONS:
                if job.get(name) and getattr(p, name):
                    setattr(line_p, name, joined(job[name], getattr(p, name), prompt_position))
            processed = processing.process_images(line_p)
            pictures += processed.images
            prompts += processed.all_prompts
            negatives += processed.all_negative_prompts
            seeds += processed.all_seeds
            infotexts += processed.infotexts
            warnings += processed.warnings
            interrupted = interrupted or processed.interrupted
            if checkbox_iterate:
                p.seed = p.seed + p.batch_size * p.n_iter

        first = 0
        if make_combined and len(pictures) > 1:
            combined = images.image_grid(pictures, batch_size=1).convert("RGB")
            combined_text = "\n".join(infotexts)
            if save_combined and opts.grid_save:
                images.save_image(combined, p.outpath_grids, "", -1, prompt_txt, opts.grid_format, combined_text,
                                  grid=True, p=p)
            elif save_combined:
                images.save_image(combined, p.outpath_samples, "", -1, prompt_txt, opts.samples_format,
                                  combined_text, p=p)
            pictures.insert(0, combined)
            prompts.insert(0, prompt_txt)
            infotexts.insert(0, combined_text)
            first = 1
        processed = processing.Processed(p, pictures, p.seed, infotexts[0] if infotexts else "",
                                         all_prompts=prompts, all_negative_prompts=negatives, all_seeds=seeds,
                                         infotexts=infotexts, index_of_first_image=first)
        processed.warnings = warnings
        processed.interrupted = interrupted
        return processed
