"""The Extras tab: upscale one picture, several, or a folder."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from modules.generation.extras import ExtrasRequest, PostprocessError, pictures_in
from modules.generation.requests import GenerationError, read_picture
from modules.generation.worker import GenerationWorker
from modules.ui.generation import DIR_ACCESS_REFUSED
from modules.ui.picture_inputs import picture_input


def build(worker: GenerationWorker, show_dir_fields: bool, scripts=None) -> gr.Image:
    """Build the tab; returns the source image control (a target of "Send to extras"). `scripts`
    (modules.scripts.ScriptHost): the extensions' Extras scripts add their controls under ours."""
    upscaler_names = worker.ctx.upscalers.names()
    with gr.Row():
        with gr.Column():
            mode = gr.State("single")
            with gr.Tabs(elem_id="mode_extras"):
                with gr.Tab("Single Image", elem_id="extras_single_tab") as t1:
                    image = picture_input(label="Source", type="pil", elem_id="extras_image", height=360, format="png")
                with gr.Tab("Batch Process", elem_id="extras_batch_process_tab") as t2:
                    files = gr.File(label="Batch Process", file_count="multiple", elem_id="extras_image_batch")
                with gr.Tab("Batch from Directory", elem_id="extras_batch_directory_tab",
                            visible=show_dir_fields) as t3:
                    input_dir = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir")
                    output_dir = gr.Textbox(label="Output directory (empty: outputs/extras-images)",
                                            elem_id="extras_batch_output_dir")
            for tab, name in ((t1, "single"), (t2, "batch"), (t3, "directory")):
                tab.select(lambda n=name: n, outputs=mode, queue=False, api_visibility="private")
            resize_mode = gr.State(0)
            with gr.Tabs():
                with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as by:
                    factor = gr.Slider(1, 8, value=2, step=0.05, label="Resize", elem_id="extras_upscaling_resize")
                with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as to:
                    with gr.Row():
                        width = gr.Slider(64, 8192, value=1024, step=8, label="Width",
                                          elem_id="extras_upscaling_resize_w")
                        height = gr.Slider(64, 8192, value=1024, step=8, label="Height",
                                           elem_id="extras_upscaling_resize_h")
                    crop = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
            by.select(lambda: 0, outputs=resize_mode, queue=False, api_visibility="private")
            to.select(lambda: 1, outputs=resize_mode, queue=False, api_visibility="private")
            with gr.Row():
                upscaler_1 = gr.Dropdown(upscaler_names, value="Lanczos", label="Upscaler 1",
                                         elem_id="extras_upscaler_1")
                upscaler_2 = gr.Dropdown(upscaler_names, value="None", label="Upscaler 2",
                                         elem_id="extras_upscaler_2")
                visibility = gr.Slider(0, 1, value=0, step=0.001, label="Upscaler 2 visibility",
                                       elem_id="extras_upscaler_2_visibility")
            with gr.Row():
                gfpgan_visibility = gr.Slider(0, 1, value=0, step=0.001, label="GFPGAN visibility",
                                              elem_id="extras_gfpgan_visibility")
                codeformer_visibility = gr.Slider(0, 1, value=0, step=0.001, label="CodeFormer visibility",
                                                  elem_id="extras_codeformer_visibility")
                codeformer_weight = gr.Slider(0, 1, value=0, step=0.001, label="CodeFormer weight",
                                              info="0 = maximum effect; 1 = minimum effect",
                                              elem_id="extras_codeformer_weight")
            script_inputs = scripts.build_extras() if scripts is not None else []
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column():
            gallery = gr.Gallery(label="Result", elem_id="extras_gallery", columns=2, height=480, format="png",
                                 interactive=False)
            info = gr.HTML(elem_id="html_info_extras")

    def process(tab, single, many, in_dir, out_dir, rmode, by_factor, w, h, do_crop, up1, up2, vis, gfpgan,
                codeformer, weight, *script_values):
        req = ExtrasRequest(resize_mode=int(rmode), upscaling_resize=float(by_factor), upscaling_resize_w=int(w),
                            upscaling_resize_h=int(h), upscaling_crop=bool(do_crop), upscaler_1=up1,
                            upscaler_2=up2, extras_upscaler_2_visibility=float(vis), gfpgan_visibility=float(gfpgan),
                            codeformer_visibility=float(codeformer), codeformer_weight=float(weight))
        problems: list[str] = []
        try:
            if tab == "single":
                pictures = [single] if single is not None else []
            elif tab == "batch":
                pictures = []
                for f in many or []:
                    path = Path(f if isinstance(f, str) else f.name)
                    try:
                        pictures.append(read_picture(path))
                    except OSError as e:
                        problems.append(f"{path.name}: not a readable image ({e})")
                    except GenerationError as e:  # too large, refused from its header
                        problems.append(str(e))
            elif show_dir_fields:
                pictures, problems = pictures_in(Path(in_dir or ""))
            else:  # the tab is hidden, but its select event can still set the mode
                raise PostprocessError(DIR_ACCESS_REFUSED)
            if not pictures:
                raise PostprocessError("no picture to process")
            into = Path(out_dir) if tab == "directory" and out_dir else None
            postprocess = scripts.extras_postprocess(list(script_values)) if scripts is not None else None
            results, texts, _ = worker.run_extras(pictures, req, into, postprocess)
        except PostprocessError as e:
            return gr.skip(), f"<p class='error'>❌ {html.escape(str(e))}</p>"
        if not results:
            return gr.skip(), "<p class='warning'>⚠️ Interrupted before the first picture was done</p>"
        notes = "".join(f"<p class='warning'>⚠️ {html.escape(p)}</p>" for p in problems)
        return results, f"<p>{html.escape(texts[0]).replace(chr(10), '<br>')}</p>{notes}"

    run.click(process, inputs=[mode, image, files, input_dir, output_dir, resize_mode, factor, width, height, crop,
                               upscaler_1, upscaler_2, visibility, gfpgan_visibility, codeformer_visibility,
                               codeformer_weight, *script_inputs], outputs=[gallery, info], api_name="extras",
              concurrency_limit=1, concurrency_id="generate")
    return image
