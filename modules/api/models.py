"""The answers of /sdapi/v1 as pydantic models, with A1111's model names and fields (modules/api/models.py there),
so that /openapi.json describes what each route sends back and clients generated from A1111's schema fit.

Where we send more than A1111 (a `reason` for a skipped embedding, `queued` in the progress), the extra field is
declared too; FastAPI drops whatever a model does not declare.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from modules.cmd_args import build_parser
from modules.options import Options


class _Answer(BaseModel):
    model_config = ConfigDict(protected_namespaces=())  # A1111's fields model_name, model_path...


class TextToImageResponse(_Answer):
    images: list[str] | None = Field(default=None, title="Image", description="The generated images in base64 format.")
    parameters: dict = Field(title="Parameters", description="The request, as the server read it.")
    info: str = Field(title="Info", description="A JSON object (as a string): seeds, prompts and settings used, "
                                                "one infotext per picture, warnings.")


class ImageToImageResponse(TextToImageResponse):
    pass


class ExtraBaseResponse(_Answer):
    html_info: str = Field(title="HTML info", description="What was done, as text.")


class ExtrasSingleImageResponse(ExtraBaseResponse):
    image: str | None = Field(default=None, title="Image", description="The result in base64 format.")


class ExtrasBatchImagesResponse(ExtraBaseResponse):
    images: list[str] = Field(title="Images", description="The results in base64 format.")


class PNGInfoResponse(_Answer):
    info: str = Field(title="Image info", description="The parameters text the picture carries")
    items: dict = Field(title="Items", description="The picture's other text fields")
    parameters: dict = Field(title="Parameters", description="The parameters text, parsed")


class ProgressResponse(_Answer):
    progress: float = Field(title="Progress", description="The progress, from 0 to 1")
    eta_relative: float = Field(title="ETA in secs")
    state: dict = Field(title="State", description="The current state snapshot")
    current_image: str | None = Field(default=None, title="Current image",
                                      description="The live preview in base64 format, when there is one.")
    textinfo: str | None = Field(default=None, title="Info text")
    current_task: str | None = Field(default=None, title="Current task", description="Task ids are not tracked: null.")
    queued: int = Field(default=0, title="Queued", description="Jobs waiting behind the running one (not in A1111).")


class InterrogateResponse(_Answer):
    caption: str | None = Field(default=None, title="Caption")


class TrainResponse(_Answer):
    info: str = Field(title="Train info")


class CreateResponse(_Answer):
    info: str = Field(title="Create info")


class SamplerItem(_Answer):
    name: str = Field(title="Name")
    aliases: list[str] = Field(title="Aliases")
    options: dict[str, Any] = Field(title="Options")


class SchedulerItem(_Answer):
    name: str = Field(title="Name")
    label: str = Field(title="Label")
    aliases: list[str] | None = Field(title="Aliases")
    default_rho: float | None = Field(title="Default Rho")
    need_inner_model: bool | None = Field(title="Needs Inner Model")


class UpscalerItem(_Answer):
    name: str = Field(title="Name")
    model_name: str | None = Field(title="Model Name")
    model_path: str | None = Field(title="Path")
    model_url: str | None = Field(title="URL")
    scale: float | None = Field(title="Scale")


class LatentUpscalerModeItem(_Answer):
    name: str = Field(title="Name")


class SDModelItem(_Answer):
    title: str = Field(title="Title")
    model_name: str = Field(title="Model Name")
    hash: str | None = Field(title="Short hash")
    sha256: str | None = Field(title="sha256 hash")
    filename: str = Field(title="Filename")
    config: str | None = Field(title="Config file")


class SDVaeItem(_Answer):
    model_name: str = Field(title="Model Name")
    filename: str = Field(title="Filename")


class HypernetworkItem(_Answer):
    name: str = Field(title="Name")
    path: str | None = Field(title="Path")


class FaceRestorerItem(_Answer):
    name: str = Field(title="Name")
    cmd_dir: str | None = Field(title="Path")


class RealesrganItem(_Answer):
    name: str = Field(title="Name")
    path: str | None = Field(title="Path")
    scale: int | None = Field(title="Scale")


class PromptStyleItem(_Answer):
    name: str = Field(title="Name")
    prompt: str | None = Field(title="Prompt")
    negative_prompt: str | None = Field(title="Negative Prompt")


class EmbeddingItem(_Answer):
    step: int | None = Field(title="Step", description="Training steps, if the file says")
    sd_checkpoint: str | None = Field(title="SD Checkpoint", description="Hash of the checkpoint it was trained on")
    sd_checkpoint_name: str | None = Field(title="SD Checkpoint Name")
    shape: int = Field(title="Shape", description="The length of each vector")
    vectors: int = Field(title="Vectors", description="The number of vectors")
    reason: str | None = Field(default=None, title="Reason", description="Why it is skipped (not in A1111)")


class EmbeddingsResponse(_Answer):
    loaded: dict[str, EmbeddingItem] = Field(title="Loaded", description="Embeddings usable with the current model")
    skipped: dict[str, EmbeddingItem] = Field(title="Skipped", description="Embeddings that do not fit it")


class MemoryResponse(_Answer):
    ram: dict = Field(title="RAM", description="System memory (bytes)")
    cuda: dict = Field(title="CUDA", description="GPU memory (bytes), or an error")


class ScriptsList(_Answer):
    txt2img: list | None = Field(default=None, title="Txt2img", description="Titles of scripts (txt2img)")
    img2img: list | None = Field(default=None, title="Img2img", description="Titles of scripts (img2img)")


class ScriptArg(_Answer):
    label: str | None = None
    value: Any | None = None
    minimum: Any | None = None
    maximum: Any | None = None
    step: Any | None = None
    choices: list[str] | None = None


class ScriptInfo(_Answer):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg] = Field(title="Arguments")


class ExtensionItem(_Answer):
    name: str = Field(title="Name")
    remote: str = Field(title="Remote", description="The git remote, or '' for a folder that is not a git clone")
    branch: str = Field(title="Branch")
    commit_hash: str = Field(title="Commit Hash")
    version: str = Field(title="Version")
    commit_date: str = Field(title="Commit Date")
    enabled: bool = Field(title="Enabled", description="Always false here: extensions are listed, never run")


class LoraItem(_Answer):
    name: str
    alias: str
    path: str
    metadata: dict


class ErrorResponse(_Answer):
    error: str = Field(description="The kind of error")
    detail: str = Field(description="What is wrong, for a person to read")


def _optional(value: Any) -> Any:
    """The type of a setting's value, as optional (A1111's models allow null everywhere)."""
    return str | None if value is None else type(value) | None


def _flag_type(action: argparse.Action, value: Any) -> Any:
    """The type of a flag's value, as optional: from its parser entry, else from its default value."""
    if action.nargs in ("+", "*"):
        return list[str] | None
    if action.type in (int, float, str):
        return action.type | None
    return _optional(value)


class _OptionsAnswer(_Answer):
    model_config = ConfigDict(extra="allow")  # the settings extensions declared, beside ours


OptionsModel = create_model(  # A1111 calls it "Options"
    "Options", __base__=_OptionsAnswer,
    **{name: (_optional(value), Field(default=value)) for name, value in asdict(Options()).items()})


def _flags_model() -> type[BaseModel]:
    defaults = vars(build_parser().parse_args([]))  # our flags only: no extension's preload.py runs here
    actions = {a.dest: a for a in build_parser()._actions if a.dest in defaults}
    return create_model(  # A1111 calls it "Flags"; the defaults are those of a run without flags
        "Flags", __base__=_Answer,
        **{name: (_flag_type(actions[name], value), Field(default=value, description=actions[name].help))
           for name, value in defaults.items() if name in actions})  # not the values parse_args derives


FlagsModel = _flags_model()

NOT_AVAILABLE = {501: {"model": ErrorResponse, "description": "The feature is not available in this program"}}
