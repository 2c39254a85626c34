"""Gradio adapters: turn what the user does on the page into calls on the module layer."""
