"""Test extension: its own HTTP route on the program's FastAPI app (on_app_started), reading the loaded model."""
from modules import script_callbacks, shared


def on_app_started(demo, app):
    @app.get("/hello-route/model")
    def model_name():
        model = shared.sd_model
        return {"model": model.sd_checkpoint_info.model_name if model is not None else None,
                "is_sdxl": bool(model is not None and model.is_sdxl)}


script_callbacks.on_app_started(on_app_started)
