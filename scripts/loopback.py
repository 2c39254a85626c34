"""Loopback (A1111's built-in img2img script): each result is the input of the next img2img pass, `loops` times, the
denoising strength moving from the one set to the final one along the chosen curve.

Differences from A1111, said plainly: appending an interrogated prompt (CLIP, DeepBooru) is not available here, so
asking for it leaves the prompt as given and says so in the result's warnings; each picture keeps its own infotext
(A1111 labels all of them with the first loop's); with img2img colour correction on, each pass matches the colours
of its own input (A1111 matches every pass to the first input).
"""
import logging
import math

import gradio as gr

from modules import images, processing, scripts
from modules.generation import GenerationError
from modules.shared import opts, state

log = logging.getLogger(__name__)

CURVES = ("Aggressive", "Linear", "Lazy")
INTERROGATORS = ("None", "CLIP", "DeepBooru")


def curve_progress(curve: str, progress: float) -> float:
    """How far along (0 to 1) the strength has moved at `progress` (0 to 1) of the loops."""
    if curve == "Aggressive":
        return math.sin(progress * math.pi / 2)
    if curve == "Lazy":
        return 1 - math.cos(progress * math.pi / 2)
    return progress


def denoising_strengths(initial: float, final: float, curve: str, loops: int) -> list[float]:
    """The strength of each loop: the initial one first, the final one last."""
    if loops == 1:
        return [initial]
    return [initial + (final - initial) * curve_progress(curve, i / (loops - 1)) for i in range(loops)]


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    match = next((c for c in choices if c.lower() == str(value).lower()), None)
    if match is None:
        raise GenerationError(f"Loopback: unknown {what} {value!r}; give one of {', '.join(choices)}")
    return match


class Script(scripts.Script):
    def title(self):
        return "Loopback"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        loops = gr.Slider(minimum=1, maximum=32, step=1, label="Loops", value=4, elem_id=self.elem_id("loops"))
        final_denoising_strength = gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength",
                                             value=0.5, elem_id=self.elem_id("final_denoising_strength"))
        denoising_curve = gr.Dropdown(label="Denoising strength curve", choices=list(CURVES), value="Linear",
                                      elem_id=self.elem_id("denoising_curve"))
        append_interrogation = gr.Dropdown(label="Append interrogated prompt at each iteration",
                                           choices=list(INTERROGATORS), value="None",
                                           elem_id=self.elem_id("append_interrogation"))
        return [loops, final_denoising_strength, denoising_curve, append_interrogation]

    def run(self, p, loops, final_denoising_strength, denoising_curve, append_interrogation):
        curve = _choice(denoising_curve, CURVES, "denoising curve")
        interrogator = _choice(append_interrogation, INTERROGATORS, "interrogator")
        loops = int(loops)
        if loops < 1:
            raise GenerationError(f"Loopback: loops must be at least 1 (got {loops})")
        warnings = []
        if interrogator != "None":
            warnings.append(f"Loopback: appending an interrogated prompt ({interrogator}) is not available here; "
                            f"every loop used the prompt as given")
            log.warning(warnings[-1])
        processing.fix_seed(p)
        save_grid = opts.grid_save and not (p.do_not_save_samples or p.do_not_save_grid)
        batch_count = p.n_iter
        p.extra_generation_params = {"Final denoising strength": final_denoising_strength,
                                     "Denoising curve": curve}
        p.batch_size = p.n_iter = 1
        p.do_not_save_grid = True
        strengths = denoising_strengths(p.denoising_strength, final_denoising_strength, curve, loops)
        original_init_images, original_fill = p.init_images, p.inpainting_fill
        state.job_count = loops * batch_count

        shown = []  # (picture, infotext, seed) of each picture returned
        first_seed, first_info = None, None
        for _ in range(batch_count):
            p.init_images = original_init_images
            last = None
            for loop in range(loops):
                p.denoising_strength = strengths[loop]
                processed = processing.process_images(p)
                warnings += processed.warnings
                if state.interrupted or not processed.images:
                    break
                if first_seed is None:
                    first_seed, first_info = processed.seed, processed.info
                last = (processed.images[0], processed.infotexts[0], processed.seed)
                p.seed = processed.seed + 1
                if state.skipped:
                    break
                p.init_images = [last[0]]
                p.inpainting_fill = 1  # "original": later loops start from the picture itself under the mask
                if batch_count == 1:
                    shown.append(last)
            if batch_count > 1 and last is not None and not state.skipped and not state.interrupted:
                shown.append(last)
            p.inpainting_fill = original_fill
            if state.interrupted:
                break

        pictures = [picture for picture, _, _ in shown]
        texts = [text for _, text, _ in shown]
        seeds = [seed for _, _, seed in shown]
        grids = []
        if len(pictures) > 1:
            grid = images.image_grid(pictures, rows=1)
            if save_grid:
                images.save_image(grid, p.outpath_grids, "grid", first_seed, p.prompt, opts.grid_format,
                                  info=first_info, short_filename=not opts.grid_extended_filename, grid=True, p=p)
            if opts.return_grid:
                grids = [grid]
        processed = processing.Processed(p, grids + pictures, first_seed, first_info, all_seeds=seeds,
                                         infotexts=[first_info] * len(grids) + texts,
                                         index_of_first_image=len(grids))
        processed.warnings = warnings
        processed.interrupted = state.interrupted
        return processed
