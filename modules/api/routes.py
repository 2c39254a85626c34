"""The HTTP API under /sdapi/v1, with A1111's routes, field names and answers.

A thin adapter: JSON in, the same typed request objects the UI fills, the same worker (so API and
UI jobs queue behind each other), JSON out with base64 images. Bad input gets a 4xx answer naming
the problem; the server keeps running.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import secrets
import time
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, create_model

from modules import infotext_utils
from modules.api import infotext as api_infotext
from modules.api import models as api_models
from modules.extensions import list_extensions
from modules.generation import (
    LATENT_UPSCALE_MODES,
    VERSION,
    GenerationError,
    GenerationResult,
    Img2ImgRequest,
    Txt2ImgRequest,
    extras,
    saving,
)
from modules.generation.requests import MAX_INPUT_PIXELS, check_picture
from modules.generation.worker import GenerationWorker
from modules.models.checkpoint_io import CheckpointError
from modules.models.memory import memory_report
from modules.options import PATH_SETTINGS, Options, SettingError
from modules.sampling.samplers import SAMPLERS, sampler_and_scheduler
from modules.sampling.schedules import SCHEDULERS
from modules.user_files import DiskFullError

SECRET_FLAGS = ("gradio_auth", "api_auth")
MODEL_FIELDS = ("sd_model_checkpoint", "sd_vae")  # options that switch models rather than just being set

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- request models, derived from the typed requests so the two never drift apart ----------------

def _pydantic_fields(cls, skip: set[str]) -> dict[str, tuple]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        default = Field(default_factory=f.default_factory) if f.default_factory is not MISSING else f.default
        out[f.name] = (hints[f.name], default)
    return out


class _ApiBase(BaseModel):
    # Like A1111, fields nobody knows are dropped without a word.
    model_config = ConfigDict(extra="ignore")


_API_EXTRAS: dict[str, tuple] = {
    "sampler_index": (str | None, "Euler"),  # the old name of sampler_name, used when sampler_name is not given
    "send_images": (bool, True),
    "override_settings": (dict[str, Any], Field(default_factory=dict)),
    "override_settings_restore_afterwards": (bool, True),
    "script_name": (str | None, None),
    "script_args": (list, Field(default_factory=list)),  # the selected script's arguments, in order
    "alwayson_scripts": (dict[str, Any], Field(default_factory=dict)),  # {"name": {"args": [...]}}
    "infotext": (str | None, None),  # parameters to fill the fields not given (modules/api/infotext.py)
}

# A1111's API defaults where they differ from the page's (the request classes hold the page's): its processing
# classes' defaults (modules/processing.py) and its API models' (sampler_index "Euler").
_COMMON_API_DEFAULTS: dict[str, tuple] = {
    "sampler_name": (str | None, None),  # None: sampler_index, "Euler"
    "scheduler": (str | None, None),  # None: "Automatic"
    "steps": (int, 50),
    "seed_resize_from_h": (int, -1),
    "seed_resize_from_w": (int, -1),
}
TXT2IMG_API_DEFAULTS: dict[str, tuple] = {**_COMMON_API_DEFAULTS, "denoising_strength": (float, 0.75)}
IMG2IMG_API_DEFAULTS: dict[str, tuple] = {
    **_COMMON_API_DEFAULTS,
    "inpainting_fill": (int, 0),  # fill
    "inpaint_full_res": (bool, True),  # "Only masked"
    "inpaint_full_res_padding": (int, 0),
    "initial_noise_multiplier": (float | None, None),  # None: A1111's setting, whose default is 1
}


@dataclass(frozen=True)
class NotImplementedField:
    """A field of A1111's API that we accept but do not carry out yet. A client that sends a value other than an
    `inert` one gets its answer with a warning saying `missing`, rather than a result that pretends to honour it."""
    type: Any
    default: Any
    missing: str
    inert: typing.Callable[[Any, BaseModel], bool] = lambda value, payload: not value


# A1111's own defaults and types (modules/processing.py, modules/api/models.py); Forge's hr_additional_modules too.
COMMON_NOT_IMPLEMENTED: dict[str, NotImplementedField] = {
    "s_min_uncond": NotImplementedField(float | None, None,
                                        "skipping the negative prompt at low noise is not implemented"),
    "disable_extra_networks": NotImplementedField(bool, False, "<lora:...> tags in the prompt are always applied"),
    "firstpass_image": NotImplementedField(str | None, None, "a given first-pass image is not used"),
    "force_task_id": NotImplementedField(str | None, None, "task ids are not tracked"),
}
TXT2IMG_NOT_IMPLEMENTED: dict[str, NotImplementedField] = {
    **COMMON_NOT_IMPLEMENTED,
    **{name: NotImplementedField(int, 0, "the old hires fix's first-pass size is not supported; "
                                         "use hr_scale or hr_resize_x/hr_resize_y")
       for name in ("firstphase_width", "firstphase_height")},
    "hr_additional_modules": NotImplementedField(list[str] | None, None, "additional modules are not supported",
                                                 inert=lambda v, _: v in (None, [], ["Use same choices"])),
}
IMG2IMG_NOT_IMPLEMENTED: dict[str, NotImplementedField] = {
    **COMMON_NOT_IMPLEMENTED,
    # A1111 uses these only when mask_blur is not given; mask_blur blurs both directions alike
    **{name: NotImplementedField(int, 4, "only mask_blur, the same in both directions, is supported",
                                 inert=lambda v, p: "mask_blur" in p.model_fields_set or v == p.mask_blur)
       for name in ("mask_blur_x", "mask_blur_y")},
    "mask_round": NotImplementedField(bool, True, "the latent mask is always rounded to 0 or 1", inert=lambda v, _: v),
    "latent_mask": NotImplementedField(str | None, None, "a separate latent mask is not supported"),
    "refiner_checkpoint": NotImplementedField(str | None, None, "the refiner is used in txt2img only",
                                              inert=lambda v, _: v in (None, "", "None")),
    "refiner_switch_at": NotImplementedField(
        float | None, None, "the refiner is used in txt2img only",
        inert=lambda v, p: v is None or p.refiner_checkpoint in (None, "", "None")),
}


def _as_pydantic(table: dict[str, NotImplementedField]) -> dict[str, tuple]:
    return {name: (f.type, f.default) for name, f in table.items()}


def not_implemented_warnings(payload: BaseModel, table: dict[str, NotImplementedField]) -> list[str]:
    """One line for each field of `table` that the client set to something we do not do."""
    warnings = []
    for name, f in table.items():
        value = getattr(payload, name)
        if not f.inert(value, payload):
            which = f": {', '.join(value)}" if isinstance(value, dict) else ""  # the scripts asked for
            warnings.append(f"{name}: not applied ({f.missing}){which}")
    return warnings


Txt2ImgPayload = create_model(
    "Txt2ImgPayload", __base__=_ApiBase,
    **{**_pydantic_fields(Txt2ImgRequest, skip={"save_images"}), **TXT2IMG_API_DEFAULTS, "save_images": (bool, False),
       **_API_EXTRAS, **_as_pydantic(TXT2IMG_NOT_IMPLEMENTED)})

Img2ImgPayload = create_model(
    "Img2ImgPayload", __base__=_ApiBase,
    **{**_pydantic_fields(Img2ImgRequest, skip={"save_images", "init_images", "mask"}), **IMG2IMG_API_DEFAULTS,
       "save_images": (bool, False), "init_images": (list[str], Field(default_factory=list)),
       "mask": (str | None, None), "include_init_images": (bool, False), **_API_EXTRAS,
       **_as_pydantic(IMG2IMG_NOT_IMPLEMENTED)})


ExtrasSinglePayload = create_model(  # ExtrasRequest's fields; A1111's API defaults to no upscaler
    "ExtrasSinglePayload", __base__=_ApiBase,
    **{**_pydantic_fields(extras.ExtrasRequest, skip={"save"}), "image": (str, ...),
       "upscaler_1": (str, "None"), "show_extras_results": (bool, True)})


class FileData(_ApiBase):
    data: str
    name: str = ""


class ExtrasBatchPayload(ExtrasSinglePayload):  # type: ignore[valid-type, misc]
    image: str = ""
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 (A1111's name)


class PngInfoPayload(_ApiBase):
    image: str


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# ---- images ------------------------------------------------------------------------------------

def decode_image(data: str, what: str = "image") -> Image.Image:
    """A base64 picture, with or without a data: URL prefix. URLs are not fetched (nothing goes online)."""
    if not data:
        raise ApiError(422, f"{what}: empty")
    if data.startswith(("http://", "https://")):
        raise ApiError(422, f"{what}: URLs are not fetched; send the picture as base64")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data, validate=False)
        image = Image.open(io.BytesIO(raw))  # reads the header: a small file can claim a huge size
        check_picture(what, image)
        image.load()
        return image
    except Image.DecompressionBombError as e:
        raise ApiError(422, f"{what}: the picture is too large to decode "
                            f"(at most {MAX_INPUT_PIXELS // 1_000_000} megapixels are supported)") from e
    except GenerationError as e:
        raise ApiError(422, str(e)) from e
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise ApiError(422, f"{what}: not a readable base64-encoded picture ({e.__class__.__name__})") from e


def encode_image(image: Image.Image, infotext: str | None = None) -> str:
    """PNG with the parameters embedded, as A1111 sends them."""
    return base64.b64encode(saving.image_bytes(image, infotext)).decode("ascii")


# ---- the API -----------------------------------------------------------------------------------

@dataclass
class ApiServices:
    worker: GenerationWorker
    save_settings: typing.Callable[[], None]
    cmd_flags: dict[str, Any]
    frozen_settings: bool = False
    hide_dir_settings: bool = False  # --hide-ui-dir-config: PATH_SETTINGS cannot be changed
    # --api-server-stop: how the program that serves the API stops (webui.py sets them once its server exists)
    stop_server: typing.Callable[[], None] | None = None  # ends serving cleanly; the program then exits
    kill_server: typing.Callable[[], None] | None = None  # ends the program at once
    # the tabs' scripts (modules.scripts.ScriptHost): script_name, script_args, alwayson_scripts; None: no scripts
    scripts: Any = None
    # the settings extensions declared (modules.shared.ExtensionSettings): in /options beside ours
    extension_settings: Any = None
    # the extensions found, as /extensions lists them (A1111's fields): () -> list of dicts
    list_extensions: typing.Callable[[], list[dict]] | None = None


# A1111's routes for features this program does not have: they answer 501 with this message.
NOT_AVAILABLE_ROUTES: dict[tuple[str, str], tuple[type[BaseModel], str]] = {
    ("POST", "/interrogate"): (api_models.InterrogateResponse,
                               "interrogating a picture (CLIP or DeepBooru captions) is not available in this program"),
    ("POST", "/create/embedding"): (api_models.CreateResponse,
                                    "creating embeddings (textual inversion) is not available in this program"),
    ("POST", "/create/hypernetwork"): (api_models.CreateResponse, "hypernetworks are not supported in this program"),
    ("POST", "/train/embedding"): (api_models.TrainResponse,
                                   "training embeddings (textual inversion) is not available in this program"),
    ("POST", "/train/hypernetwork"): (api_models.TrainResponse, "hypernetworks are not supported in this program"),
}


def _credentials_check(credentials: list[tuple[str, str]] | None):
    if not credentials:
        return None
    basic = HTTPBasic()

    def check(c: HTTPBasicCredentials = Depends(basic)) -> None:  # noqa: B008 (FastAPI idiom)
        for user, password in credentials:
            if secrets.compare_digest(c.username, user) and secrets.compare_digest(c.password, password):
                return
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})
    return check


def create_router(services: ApiServices, credentials: list[tuple[str, str]] | None = None) -> APIRouter:
    check = _credentials_check(credentials)
    router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(check)] if check else [])
    api = _Api(services)
    for method, path, fn, answer in api.routes():
        router.add_api_route(path, fn, methods=[method], response_model=answer)
    for (method, path), (answer, message) in NOT_AVAILABLE_ROUTES.items():
        router.add_api_route(path, _not_available(message), methods=[method], response_model=answer,
                             responses=api_models.NOT_AVAILABLE, summary=f"Not available: {message}")
    return router


def _not_available(message: str):
    def answer():
        raise ApiError(501, message)
    return answer


def install_docs(app, credentials: list[tuple[str, str]] | None = None) -> None:
    """/docs and /openapi.json behind the API's password: they describe the API to whoever may use it."""
    from fastapi.openapi.docs import get_swagger_ui_html
    check = _credentials_check(credentials)
    guard = [Depends(check)] if check else []
    app.add_api_route("/openapi.json", lambda: JSONResponse(app.openapi()), methods=["GET"], dependencies=guard,
                      include_in_schema=False)
    app.add_api_route("/docs", lambda: get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs"),
                      methods=["GET"], dependencies=guard, include_in_schema=False)


def install_error_handler(app) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):  # noqa: ARG001 (FastAPI's signature)
        return JSONResponse(status_code=exc.status, content={"error": type(exc).__name__, "detail": _text(exc)})

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):  # noqa: ARG001
        """FastAPI's 422, without the echoed input where JSON cannot hold it (NaN, infinity, a lone surrogate)."""
        return JSONResponse(status_code=422, content={"detail": [_writable_error(e) for e in exc.errors()]})


def _writable_error(error: dict) -> dict:
    """One of pydantic's errors as JSON can hold it: as it is, else without the input, else as plain text."""
    for candidate in (error, {k: v for k, v in error.items() if k not in ("input", "ctx")}):
        try:
            encoded = jsonable_encoder(candidate)
            json.dumps(encoded, allow_nan=False, ensure_ascii=False).encode("utf-8")
            return encoded
        except (ValueError, TypeError):  # NaN, infinity; UnicodeEncodeError (a lone surrogate) is a ValueError
            pass
    return {"type": _text(error.get("type")), "loc": [_text(part) for part in error.get("loc", ())],
            "msg": _text(error.get("msg"))}


def _text(value) -> str:
    """str(value) with anything UTF-8 cannot hold (a lone surrogate a client sent) written as an escape."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


class _Api:
    def __init__(self, services: ApiServices):
        self.s = services
        self.worker = services.worker
        self.ctx = services.worker.ctx

    def routes(self) -> list[tuple[str, str, typing.Callable, Any]]:
        """(method, path, handler, response model) of each route, A1111's names and answers."""
        m = api_models
        routes = [
            ("POST", "/txt2img", self.txt2img, m.TextToImageResponse),
            ("POST", "/img2img", self.img2img, m.ImageToImageResponse),
            ("POST", "/extra-single-image", self.extra_single_image, m.ExtrasSingleImageResponse),
            ("POST", "/extra-batch-images", self.extra_batch_images, m.ExtrasBatchImagesResponse),
            ("POST", "/png-info", self.png_info, m.PNGInfoResponse),
            ("GET", "/progress", self.progress, m.ProgressResponse),
            ("POST", "/interrupt", self.interrupt, None),
            ("POST", "/skip", self.skip, None),
            ("GET", "/options", self.get_options, m.OptionsModel),
            ("POST", "/options", self.set_options, None),
            ("GET", "/cmd-flags", self.cmd_flags, m.FlagsModel),
            ("GET", "/samplers", self.samplers, list[m.SamplerItem]),
            ("GET", "/schedulers", self.schedulers, list[m.SchedulerItem]),
            ("GET", "/upscalers", self.upscalers, list[m.UpscalerItem]),
            ("GET", "/latent-upscale-modes", self.latent_upscale_modes, list[m.LatentUpscalerModeItem]),
            ("GET", "/sd-models", self.sd_models, list[m.SDModelItem]),
            ("GET", "/sd-vae", self.sd_vae, list[m.SDVaeItem]),
            ("GET", "/hypernetworks", self.hypernetworks, list[m.HypernetworkItem]),
            ("GET", "/face-restorers", self.face_restorers, list[m.FaceRestorerItem]),
            ("GET", "/realesrgan-models", self.realesrgan_models, list[m.RealesrganItem]),
            ("GET", "/prompt-styles", self.prompt_styles, list[m.PromptStyleItem]),
            ("GET", "/embeddings", self.embeddings, m.EmbeddingsResponse),
            ("GET", "/loras", self.loras, list[m.LoraItem]),
            ("POST", "/refresh-embeddings", self.refresh_embeddings, None),
            ("POST", "/refresh-checkpoints", self.refresh_checkpoints, None),
            ("POST", "/refresh-vae", self.refresh_checkpoints, None),
            ("POST", "/refresh-loras", self.refresh_loras, None),
            ("GET", "/memory", self.memory, m.MemoryResponse),
            ("POST", "/unload-checkpoint", self.unload_checkpoint, None),
            ("POST", "/reload-checkpoint", self.reload_checkpoint, None),
            ("GET", "/scripts", self.scripts, m.ScriptsList),
            ("GET", "/script-info", self.script_info, list[m.ScriptInfo]),
            ("GET", "/extensions", self.extensions, list[m.ExtensionItem]),
        ]
        if self.s.cmd_flags.get("api_server_stop"):  # as A1111: without the flag these routes do not exist (404)
            routes += [("POST", "/server-kill", self.server_kill, None),
                       ("POST", "/server-restart", self.server_restart, None),
                       ("POST", "/server-stop", self.server_stop, None)]
        return routes

    # ---- generation ----------------------------------------------------------------------------
    def txt2img(self, payload: Txt2ImgPayload):  # type: ignore[valid-type]
        """A1111's txt2img, with A1111's API defaults (sampler Euler, 50 steps...). `images` holds the batch; as in
        A1111, a grid comes first only with `save_images` (and the return_grid setting on), and `info`'s
        `index_of_first_image` is then 1. An `infotext` fills the fields the request does not give.
        A1111 fields we do not implement yet are accepted; each one set to something that would need them is
        named in `info`'s `warnings` list (with the job's own warnings) and in the server log. `script_name` and
        `script_args` run a script of the Script dropdown, `alwayson_scripts` give always-on scripts their arguments;
        a name no script has answers 422, as in A1111."""
        self._apply_infotext(payload, "txt2img")
        req = Txt2ImgRequest(**self._request_fields(payload, Txt2ImgRequest))
        return self._generate(req, payload, not_implemented_warnings(payload, TXT2IMG_NOT_IMPLEMENTED),
                              self._script_runner("txt2img", payload))

    def img2img(self, payload: Img2ImgPayload):  # type: ignore[valid-type]
        """A1111's img2img; `images`, `info`, `infotext` and `warnings` as for txt2img."""
        if not payload.init_images:
            raise ApiError(422, "init_images: give at least one picture")
        self._apply_infotext(payload, "img2img")
        init = [decode_image(d, f"init_images[{i}]") for i, d in enumerate(payload.init_images)]
        mask = decode_image(payload.mask, "mask") if payload.mask else None
        req = Img2ImgRequest(**self._request_fields(payload, Img2ImgRequest), init_images=init, mask=mask)
        answer = self._generate(req, payload, not_implemented_warnings(payload, IMG2IMG_NOT_IMPLEMENTED),
                                self._script_runner("img2img", payload))
        if not payload.include_init_images:
            answer["parameters"]["init_images"] = None
            answer["parameters"]["mask"] = None
        return answer

    def _apply_infotext(self, payload: BaseModel, mode: str) -> None:
        try:
            api_infotext.apply_infotext(payload, mode, self.ctx.options)
        except api_infotext.InfotextError as e:
            raise ApiError(422, str(e)) from e

    def _request_fields(self, payload: BaseModel, cls) -> dict:
        names = {f.name for f in fields(cls)} - {"init_images", "mask"}
        values = {k: v for k, v in payload.model_dump().items() if k in names}
        values["sampler_name"], values["scheduler"] = sampler_and_scheduler(
            payload.sampler_name or payload.sampler_index or "Euler", payload.scheduler)
        if "initial_noise_multiplier" in values and values["initial_noise_multiplier"] is None:
            values["initial_noise_multiplier"] = 1.0  # A1111's setting (which we do not have) at its default
        values["do_not_save_grid"] = not payload.save_images  # as A1111's API: a grid only where one is saved
        return values

    def _script_runner(self, tab: str, payload):
        """What carries the job out with the request's scripts (None: no script takes part)."""
        if self.s.scripts is None:
            if payload.script_name:
                raise ApiError(422, f"Script '{payload.script_name}' not found")
            if payload.alwayson_scripts:
                raise ApiError(422, f"always on script {next(iter(payload.alwayson_scripts))} not found")
            return None
        try:
            return self.s.scripts.api_runner(tab, payload.script_name, list(payload.script_args or []),
                                             dict(payload.alwayson_scripts or {}))
        except ValueError as e:  # modules.scripts.ScriptArgsError: an unknown name, a selectable one as always-on
            raise ApiError(422, str(e)) from e

    def _generate(self, req: Txt2ImgRequest, payload, warnings: list[str], runner=None) -> dict:
        for warning in warnings:
            log.warning("%s: %s", req.mode, warning)
        overrides = self._checked_options(dict(payload.override_settings or {}))
        option_values = {k: v for k, v in overrides.items() if k not in MODEL_FIELDS}
        model_values = {k: v for k, v in overrides.items() if k in MODEL_FIELDS}
        started = time.strftime("%Y%m%d%H%M%S")
        try:
            result = self.worker.run(req, option_overrides=option_values, models=model_values,
                                     restore_models=payload.override_settings_restore_afterwards, runner=runner)
        except GenerationError as e:
            raise ApiError(422, str(e)) from e
        except CheckpointError as e:
            raise ApiError(422, str(e)) from e
        return self._answer(req, payload, result, warnings, started)

    def _answer(self, req: Txt2ImgRequest, payload, result: GenerationResult, warnings: list[str],
                started: str) -> dict:
        """A1111's answer: with a grid, `images` and `infotexts` start with it and the per-image lists
        (`all_seeds`, ...) start at `index_of_first_image`. `info` has the keys of A1111's Processed.js()."""
        grid = result.grid if not req.do_not_save_grid else None
        images_out, infotexts = result.images, result.infotexts
        if grid is not None:  # labelled with the first picture's infotext, as A1111 does
            images_out, infotexts = [grid, *images_out], infotexts[:1] + infotexts
        pictures = [encode_image(im, text) for im, text in zip(images_out, infotexts)] if payload.send_images else []
        used = infotext_utils.parse_generation_parameters(result.infotexts[0]) if result.infotexts else {}
        prompts = result.all_prompts or [req.prompt]
        negatives = result.all_negative_prompts or [req.negative_prompt]
        info = {
            "prompt": prompts[0], "all_prompts": prompts,
            "negative_prompt": negatives[0], "all_negative_prompts": negatives,
            "seed": result.seeds[0] if result.seeds else req.seed, "all_seeds": result.seeds or [req.seed],
            "subseed": result.subseeds[0] if result.subseeds else req.subseed,
            "all_subseeds": result.subseeds or [req.subseed],
            "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
            "sampler_name": req.sampler_name, "cfg_scale": req.cfg_scale, "steps": req.steps,
            "batch_size": req.batch_size, "restore_faces": bool(used.get("Face restoration")),
            "face_restoration_model": used.get("Face restoration"),
            **self._models_used(used),
            "seed_resize_from_w": req.seed_resize_from_w, "seed_resize_from_h": req.seed_resize_from_h,
            "denoising_strength": getattr(req, "denoising_strength", None),
            "extra_generation_params": result.extra_generation_params,
            "index_of_first_image": 1 if grid is not None else result.first_image, "infotexts": infotexts,
            "styles": req.styles,
            "job_timestamp": started, "clip_skip": _int_or(used.get("Clip skip"), 1),
            "is_using_inpainting_conditioning": self._inpainting_model(used.get("Model hash")),
            "version": VERSION,
            "warnings": warnings + result.warnings, "interrupted": result.interrupted,
        }
        parameters = payload.model_dump()
        return {"images": pictures, "parameters": parameters, "info": json.dumps(info, ensure_ascii=False)}

    def _models_used(self, used: dict) -> dict:
        """sd_model_name/hash and sd_vae_name/hash of the models the job used, as its infotext names them."""
        vae_name, vae_hash = used.get("VAE"), None
        if vae_name:
            vae = next((v for v in self.ctx.models.vaes if Path(v.name).name == vae_name), None)
            if vae is not None:
                vae_hash = (vae.sha256 or self.ctx.models.hashes.sha256(vae.path))[:10]
        return {"sd_model_name": used.get("Model"), "sd_model_hash": used.get("Model hash"),
                "sd_vae_name": vae_name, "sd_vae_hash": vae_hash}

    def _inpainting_model(self, model_hash: str | None) -> bool:
        """Whether the job's checkpoint is an inpainting one (its UNet takes the mask and masked picture)."""
        model = self.ctx.models.current
        return bool(model is not None and model_hash and model.file.shorthash == model_hash
                    and model.spec.is_inpainting)

    # ---- extras and PNG info -------------------------------------------------------------------
    @staticmethod
    def _extras_request(payload) -> extras.ExtrasRequest:
        names = {f.name for f in fields(extras.ExtrasRequest)}
        return extras.ExtrasRequest(**{k: v for k, v in payload.model_dump().items() if k in names},
                                            save=False)

    def _run_extras(self, pictures: list[Image.Image], payload):
        try:
            postprocess = self.s.scripts.extras_postprocess() if self.s.scripts is not None else None
            return self.worker.run_extras(pictures, self._extras_request(payload), postprocess=postprocess)
        except extras.PostprocessError as e:
            raise ApiError(422, str(e)) from e

    def extra_single_image(self, payload: ExtrasSinglePayload):  # type: ignore[valid-type]
        out, texts, _ = self._run_extras([decode_image(payload.image)], payload)
        if not out:
            return {"html_info": "Interrupted before the picture was done", "image": None}
        return {"html_info": texts[0], "image": encode_image(out[0], texts[0]) if payload.show_extras_results else None}

    def extra_batch_images(self, payload: ExtrasBatchPayload):
        if not payload.imageList:
            raise ApiError(422, "imageList: give at least one picture")
        pictures = [decode_image(f.data, f"imageList[{i}] {f.name}".strip()) for i, f in enumerate(payload.imageList)]
        out, texts, _ = self._run_extras(pictures, payload)
        return {"html_info": texts[0] if texts else "",
                "images": [encode_image(im, t) for im, t in zip(out, texts)] if payload.show_extras_results else []}

    def png_info(self, payload: PngInfoPayload):
        image = decode_image(payload.image)
        text = saving.read_infotext(image) or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, str | int | float)}
        parameters = infotext_utils.parse_generation_parameters(text) if text else {}
        return {"info": text, "items": items, "parameters": parameters}

    # ---- progress ------------------------------------------------------------------------------
    def progress(self, skip_current_image: bool = False):
        s = self.worker.progress()
        state = self.ctx.state
        return {
            "progress": s.progress if s.active else 0.0,
            "eta_relative": s.eta_seconds or 0.0,
            "state": {"skipped": state.skipped, "interrupted": state.interrupted, "job": s.text if s.active else "",
                      "job_count": s.job_count if s.active else 0, "job_no": s.job_no,
                      "sampling_step": s.step, "sampling_steps": s.steps},
            "current_image": None if skip_current_image or s.preview is None or not s.active
            else encode_image(s.preview),
            "textinfo": s.text if s.active else None,
            "current_task": None,
            "queued": self.worker.waiting,
        }

    def interrupt(self):
        self.worker.interrupt()
        return {}

    def skip(self):
        self.worker.skip()
        return {}

    # ---- options -------------------------------------------------------------------------------
    def get_options(self):
        extension_values = self.s.extension_settings.values() if self.s.extension_settings is not None else {}
        return {**asdict(self.ctx.options), **extension_values}

    def _extension_keys(self) -> set[str]:
        return set(self.s.extension_settings.keys()) if self.s.extension_settings is not None else set()

    def _checked_options(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values as their settings hold them: 422 naming a setting whose value does not fit it, 403 for a
        changed path setting with --hide-ui-dir-config (an unchanged one passes, so GET-modify-POST works)."""
        out = {}
        for name, value in values.items():
            try:
                out[name] = Options.check(name, value)
            except SettingError as e:
                raise ApiError(422, str(e)) from e
            if self.s.hide_dir_settings and name in PATH_SETTINGS and out[name] != getattr(self.ctx.options, name):
                raise ApiError(403, f"setting {name}: folders cannot be changed (--hide-ui-dir-config)")
        return out

    def set_options(self, values: dict[str, Any]):
        """Waits its turn like a job: the running job finishes with the settings it started with, and the next
        one starts with all of the new ones."""
        if self.s.frozen_settings:
            raise ApiError(403, "settings are frozen (--freeze-settings)")
        theirs = {k: values.pop(k) for k in list(values) if k in self._extension_keys()}
        restricted = [k for k in theirs if self.s.extension_settings.restricted(k)]
        if restricted:
            raise ApiError(403, f"setting {restricted[0]}: its extension does not allow changing it from the API")
        try:
            theirs = {k: self.s.extension_settings.check(k, v) for k, v in theirs.items()}
        except ValueError as e:
            raise ApiError(422, str(e)) from e
        checked = self._checked_options(values)

        def apply() -> None:
            manager = self.ctx.models
            if checked.get("sd_model_checkpoint"):  # "" (none loaded yet, sent back by GET-modify-POST) is no choice
                manager.load(checked["sd_model_checkpoint"])
            if "sd_vae" in checked:
                manager.set_vae(checked["sd_vae"])
            for name, value in checked.items():
                if name not in MODEL_FIELDS:
                    setattr(self.ctx.options, name, value)
            self.s.save_settings()
            if theirs:
                for name, value in theirs.items():
                    self.s.extension_settings.set(name, value)
                self.s.extension_settings.save()

        try:
            self.worker.with_lock(apply)
        except CheckpointError as e:
            raise ApiError(422, str(e)) from e
        except OSError as e:
            raise ApiError(507 if isinstance(e, DiskFullError) else 500,
                           f"the settings are in effect until restart but were not saved: {e}") from e
        return None

    def cmd_flags(self):
        """The flags, with the values of --gradio-auth and --api-auth masked (A1111 shows the passwords)."""
        return {name: "***" if name in SECRET_FLAGS and value else value for name, value in self.s.cmd_flags.items()}

    # ---- lists ---------------------------------------------------------------------------------
    def samplers(self):
        return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS]

    def schedulers(self):
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
                 "need_inner_model": False} for s in SCHEDULERS]

    def upscalers(self):
        """The resamplers and every model file found (the folders are scanned once, as A1111 does)."""
        return [{"name": e.name, "model_name": e.model.architecture if e.model else None,
                 "model_path": str(e.model.path) if e.model else None, "model_url": None, "scale": e.scale}
                for e in self.ctx.upscalers.entries()]

    def latent_upscale_modes(self):
        return [{"name": n} for n in LATENT_UPSCALE_MODES]

    def sd_models(self):
        return [{"title": c.title, "model_name": c.model_name, "hash": c.shorthash, "sha256": c.sha256,
                 "filename": str(c.path), "config": str(c.path.with_suffix(".yaml"))
                 if c.path.with_suffix(".yaml").is_file() else None} for c in self.ctx.models.checkpoints]

    def sd_vae(self):
        return [{"model_name": v.name, "filename": str(v.path)} for v in self.ctx.models.vaes]

    def loras(self):
        if self.ctx.loras is None:
            return []
        return [{"name": f.name, "alias": f.alias or f.name, "path": str(f.path), "metadata": f.metadata}
                for f in self.ctx.loras.loras]

    def embeddings(self):
        db, model = self.ctx.embeddings, self.ctx.models.current
        if db is None or model is None:
            return {"loaded": {}, "skipped": {}}
        db.reload()
        loaded, skipped = db.for_model(model.spec)

        def item(e, reason: str | None = None) -> dict:
            return {"step": e.step, "sd_checkpoint": getattr(e, "sd_checkpoint", None),
                    "sd_checkpoint_name": getattr(e, "sd_checkpoint_name", None),
                    "shape": next(iter(e.dims.values())), "vectors": e.vector_count, "reason": reason}
        return {"loaded": {name: item(e) for name, e in loaded.items()},
                "skipped": {name: item(db.all[name], why) for name, why in skipped.items()}}

    def prompt_styles(self):
        styles = self.ctx.styles
        if styles is None:
            return []
        styles.reload()
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in styles.styles.values()]

    def refresh_checkpoints(self):
        self.ctx.models.refresh()
        return {}

    def refresh_loras(self):
        if self.ctx.loras is not None:
            self.ctx.loras.refresh()
        return {}

    def refresh_embeddings(self):
        if self.ctx.embeddings is not None:
            self.ctx.embeddings.reload()
        return {}

    def unload_checkpoint(self):
        """Frees the loaded checkpoints (after the running job); the chosen one loads again when next needed."""
        self.worker.with_lock(self.ctx.models.unload)
        return {}

    def reload_checkpoint(self):
        """Loads the chosen checkpoint again after unload-checkpoint (nothing to do while it is loaded)."""
        try:
            self.worker.with_lock(self.ctx.models.ensure_selected)
        except CheckpointError as e:
            raise ApiError(422, str(e)) from e
        return {}

    # ---- what this program does not have: empty lists, as A1111 answers without any ------------
    def hypernetworks(self):
        return []  # hypernetworks are not supported

    def face_restorers(self):
        """As A1111: CodeFormer and GFPGAN always (without a model file, restore_faces says so in the warnings), and
        RestoreFormer when its file is there; cmd_dir: the folder of the restorer's files."""
        restorers = self.ctx.face_restorers
        if restorers is None:
            return []
        names = dict.fromkeys(["CodeFormer", "GFPGAN", *restorers.names()])
        return [{"name": name, "cmd_dir": str(restorers.folder_of(name))} for name in names]

    def realesrgan_models(self):
        """The model files in models/RealESRGAN (A1111 lists its built-in, downloaded ones; nothing downloads here)."""
        return [{"name": m.name, "path": str(m.path), "scale": m.scale}
                for m in self.ctx.upscalers.realesrgan_models()]

    def scripts(self):
        """The scripts of each tab's Script dropdown, by their lower-case titles (what script_name takes)."""
        if self.s.scripts is None:
            return {"txt2img": [], "img2img": []}
        return self.s.scripts.script_names()

    def script_info(self):
        """Every script of both tabs with its arguments (label, default, range, choices), as A1111."""
        return self.s.scripts.script_info() if self.s.scripts is not None else []

    def extensions(self):
        """The installed extensions, as A1111 lists them."""
        if self.s.list_extensions is not None:
            return self.s.list_extensions()
        return [{"name": e.name, "remote": e.url, "branch": e.branch, "commit_hash": e.commit, "version": e.commit,
                 "commit_date": e.modified, "enabled": False}
                for e in list_extensions(self.ctx.models.paths.data_dir / "extensions")]

    # ---- stopping the server (--api-server-stop) -------------------------------------------------
    def server_stop(self):
        """As A1111: answers "Stopping." and the program ends; a running job is interrupted first."""
        if self.s.stop_server is None:
            raise ApiError(501, "this server cannot be stopped from the API")
        self.worker.interrupt()
        self.s.stop_server()
        return PlainTextResponse("Stopping.")

    def server_kill(self):
        """Ends the program at once (A1111's server-kill), without waiting for a running job."""
        if self.s.kill_server is None:
            raise ApiError(501, "this server cannot be killed from the API")
        self.s.kill_server()
        return PlainTextResponse("Killing.")

    def server_restart(self):
        """A1111 restarts only under its launcher's restart loop and answers 501 otherwise; we have no such loop."""
        raise ApiError(501, "restarting from the API is not supported; use server-stop and start the program again")

    def memory(self):
        return memory_report()
