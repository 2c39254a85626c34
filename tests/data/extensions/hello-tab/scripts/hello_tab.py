"""Test extension: a tab of its own (on_ui_tabs) whose button answers from the server."""
import gradio as gr

from modules import script_callbacks


def on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        name = gr.Textbox(label="Your name", elem_id="hello_tab_name")
        greet = gr.Button("Greet", elem_id="hello_tab_greet")
        answer = gr.Textbox(label="Answer", elem_id="hello_tab_answer")
        greet.click(lambda n: f"Hello, {n}!", inputs=name, outputs=answer)
    return [(tab, "Hello", "hello_tab")]


script_callbacks.on_ui_tabs(on_ui_tabs)
