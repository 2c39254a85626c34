"""Test extension: an always-on script that appends a suffix to every prompt in process(), as wildcard and
dynamic-prompt extensions do. The suffix comes from its own setting (on_ui_settings), whose default comes from
a command-line flag its preload.py adds."""
import gradio as gr

from modules import script_callbacks, scripts, shared


def on_ui_settings():
    section = ("prompt-suffix", "Prompt suffix")
    shared.opts.add_option("prompt_suffix_text", shared.OptionInfo(
        shared.cmd_opts.prompt_suffix_default, "Text appended to every prompt", gr.Textbox, section=section))


script_callbacks.on_ui_settings(on_ui_settings)


class PromptSuffix(scripts.Script):
    def title(self):
        return "Prompt suffix"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Prompt suffix", open=False):
            enabled = gr.Checkbox(False, label="Append the suffix", elem_id=self.elem_id("enabled"))
        self.infotext_fields = [(enabled, lambda params: "Prompt suffix" in params)]  # pasting ticks it again
        return [enabled]

    def after_component(self, component, **kwargs):
        """Put a note right after txt2img's negative prompt box, as extensions place their controls."""
        if kwargs.get("elem_id") == "txt2img_neg_prompt":
            gr.HTML("<span>Prompt suffix is installed</span>", elem_id="prompt_suffix_note")

    def process(self, p, enabled):
        if not enabled:
            return
        suffix = shared.opts.prompt_suffix_text
        p.all_prompts = [f"{prompt}, {suffix}" for prompt in p.all_prompts]
        p.extra_generation_params["Prompt suffix"] = suffix
