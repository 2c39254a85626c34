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
import secrets
import time
import typing
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, create_model

from modules import infotext_utils
from modules.generation import saving as images
from modules.postprocessing import extras as postprocessing
from modules.models.checkpoint_io import CheckpointError
from modules.options import Options
from modules.generation.processing import (IMAGE_UPSCALERS, LATENT_UPSCALE_MODES, VERSION, GenerationError, GenerationResult,
                                Img2ImgRequest, Txt2ImgRequest)
from modules.sampling.samplers import SAMPLERS
from modules.sampling.schedules import SCHEDULERS
from modules.generation.worker import GenerationWorker

MODEL_FIELDS = ("sd_model_checkpoint", "sd_vae")  # options that switch models rather than just being set


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
    # A1111 clients send fields for scripts and extensions we do not have; they are ignored.
    model_config = ConfigDict(extra="ignore")


_API_EXTRAS: dict[str, tuple] = {
    "sampler_index": (str | None, None),  # the old name of sampler_name
    "send_images": (bool, True),
    "override_settings": (dict[str, Any], Field(default_factory=dict)),
    "override_settings_restore_afterwards": (bool, True),
    "script_name": (str | None, None),
}

Txt2ImgPayload = create_model(
    "Txt2ImgPayload", __base__=_ApiBase,
    **{**_pydantic_fields(Txt2ImgRequest, skip={"save_images"}), "save_images": (bool, False), **_API_EXTRAS})

Img2ImgPayload = create_model(
    "Img2ImgPayload", __base__=_ApiBase,
    **{**_pydantic_fields(Img2ImgRequest, skip={"save_images", "init_images", "mask"}),
       "save_images": (bool, False), "init_images": (list[str], Field(default_factory=list)),
       "mask": (str | None, None), "include_init_images": (bool, False), **_API_EXTRAS})


ExtrasSinglePayload = create_model(  # ExtrasRequest's fields; A1111's API defaults to no upscaler
    "ExtrasSinglePayload", __base__=_ApiBase,
    **{**_pydantic_fields(postprocessing.ExtrasRequest, skip={"save"}), "image": (str, ...),
       "upscaler_1": (str, "None"), "show_extras_results": (bool, True)})


class FileData(_ApiBase):
    data: str
    name: str = ""


class ExtrasBatchPayload(ExtrasSinglePayload):  # type: ignore[valid-type, misc]
    image: str = ""
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 (A1111's name)


class PngInfoPayload(_ApiBase):
    image: str


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
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise ApiError(422, f"{what}: not a readable base64-encoded picture ({e.__class__.__name__})") from e


def encode_image(image: Image.Image, infotext: str | None = None) -> str:
    """PNG with the parameters embedded, as A1111 sends them."""
    buf = io.BytesIO()
    pnginfo = None
    if infotext:
        from PIL import PngImagePlugin
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text("parameters", infotext)
    image.save(buf, format="PNG", pnginfo=pnginfo)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---- the API -----------------------------------------------------------------------------------

@dataclass
class ApiServices:
    worker: GenerationWorker
    save_settings: typing.Callable[[], None]
    cmd_flags: dict[str, Any]
    frozen_settings: bool = False


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
    for method, path, fn in api.routes():
        router.add_api_route(path, fn, methods=[method])
    return router


def install_error_handler(app) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):  # noqa: ARG001 (FastAPI's signature)
        return JSONResponse(status_code=exc.status, content={"error": type(exc).__name__, "detail": str(exc)})


class _Api:
    def __init__(self, services: ApiServices):
        self.s = services
        self.worker = services.worker
        self.ctx = services.worker.ctx

    def routes(self):
        return [
            ("POST", "/txt2img", self.txt2img),
            ("POST", "/img2img", self.img2img),
            ("POST", "/extra-single-image", self.extra_single_image),
            ("POST", "/extra-batch-images", self.extra_batch_images),
            ("POST", "/png-info", self.png_info),
            ("GET", "/progress", self.progress),
            ("POST", "/interrupt", self.interrupt),
            ("POST", "/skip", self.skip),
            ("GET", "/options", self.get_options),
            ("POST", "/options", self.set_options),
            ("GET", "/cmd-flags", self.cmd_flags),
            ("GET", "/samplers", self.samplers),
            ("GET", "/schedulers", self.schedulers),
            ("GET", "/upscalers", self.upscalers),
            ("GET", "/latent-upscale-modes", self.latent_upscale_modes),
            ("GET", "/sd-models", self.sd_models),
            ("GET", "/sd-vae", self.sd_vae),
            ("GET", "/loras", self.loras),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/prompt-styles", self.prompt_styles),
            ("POST", "/refresh-checkpoints", self.refresh_checkpoints),
            ("POST", "/refresh-vae", self.refresh_checkpoints),
            ("POST", "/refresh-loras", self.refresh_loras),
            ("POST", "/refresh-embeddings", self.refresh_embeddings),
            ("POST", "/reload-checkpoint", self.reload_checkpoint),
            ("GET", "/memory", self.memory),
        ]

    # ---- generation ----------------------------------------------------------------------------
    def txt2img(self, payload: Txt2ImgPayload):  # type: ignore[valid-type]
        req = Txt2ImgRequest(**self._request_fields(payload, Txt2ImgRequest))
        return self._generate(req, payload)

    def img2img(self, payload: Img2ImgPayload):  # type: ignore[valid-type]
        if not payload.init_images:
            raise ApiError(422, "init_images: give at least one picture")
        init = [decode_image(d, f"init_images[{i}]") for i, d in enumerate(payload.init_images)]
        mask = decode_image(payload.mask, "mask") if payload.mask else None
        req = Img2ImgRequest(**self._request_fields(payload, Img2ImgRequest), init_images=init, mask=mask)
        answer = self._generate(req, payload)
        if not payload.include_init_images:
            answer["parameters"]["init_images"] = None
            answer["parameters"]["mask"] = None
        return answer

    def _request_fields(self, payload: BaseModel, cls) -> dict:
        names = {f.name for f in fields(cls)} - {"init_images", "mask"}
        values = {k: v for k, v in payload.model_dump().items() if k in names}
        if payload.sampler_index and not payload.model_fields_set & {"sampler_name"}:
            values["sampler_name"] = payload.sampler_index
        if payload.script_name not in (None, "", "None"):
            raise ApiError(422, f"script_name: no script named {payload.script_name!r} (scripts are not supported yet)")
        return values

    def _generate(self, req: Txt2ImgRequest, payload) -> dict:
        overrides = dict(payload.override_settings or {})
        option_values = self._checked_options({k: v for k, v in overrides.items() if k not in MODEL_FIELDS})
        model_values = {k: overrides[k] for k in MODEL_FIELDS if k in overrides}
        ctx = replace(self.ctx, options=replace(self.ctx.options, **option_values)) if option_values else None
        try:
            result = self.worker.run(req, ctx=ctx, models=model_values,
                                     restore_models=payload.override_settings_restore_afterwards)
        except GenerationError as e:
            raise ApiError(422, str(e)) from e
        except CheckpointError as e:
            raise ApiError(422, str(e)) from e
        return self._answer(req, payload, result)

    def _answer(self, req: Txt2ImgRequest, payload, result: GenerationResult) -> dict:
        pictures: list[str] = []
        if payload.send_images:
            if result.grid is not None:
                pictures.append(encode_image(result.grid, result.infotexts[0] if result.infotexts else None))
            pictures += [encode_image(im, text) for im, text in zip(result.images, result.infotexts)]
        model = self.ctx.models.current
        info = {
            "prompt": req.prompt, "all_prompts": [req.prompt] * len(result.images),
            "negative_prompt": req.negative_prompt,
            "all_negative_prompts": [req.negative_prompt] * len(result.images),
            "seed": result.seeds[0] if result.seeds else None, "all_seeds": result.seeds,
            "subseed": result.subseeds[0] if result.subseeds else None, "all_subseeds": result.subseeds,
            "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
            "sampler_name": req.sampler_name, "cfg_scale": req.cfg_scale, "steps": req.steps,
            "batch_size": req.batch_size, "restore_faces": False,
            "sd_model_name": model.file.model_name if model else None,
            "sd_model_hash": model.file.shorthash if model else None,
            "seed_resize_from_w": req.seed_resize_from_w, "seed_resize_from_h": req.seed_resize_from_h,
            "denoising_strength": req.denoising_strength, "styles": req.styles,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": req.clip_skip,
            "infotexts": result.infotexts, "warnings": result.warnings, "interrupted": result.interrupted,
            "version": VERSION,
        }
        parameters = payload.model_dump()
        return {"images": pictures, "parameters": parameters, "info": json.dumps(info, ensure_ascii=False)}

    # ---- extras and PNG info -------------------------------------------------------------------
    @staticmethod
    def _extras_request(payload) -> postprocessing.ExtrasRequest:
        names = {f.name for f in fields(postprocessing.ExtrasRequest)}
        return postprocessing.ExtrasRequest(**{k: v for k, v in payload.model_dump().items() if k in names},
                                            save=False)

    def _run_extras(self, pictures: list[Image.Image], payload):
        try:
            return postprocessing.run_extras(pictures, self._extras_request(payload), self.ctx.outputs_dir)
        except postprocessing.PostprocessError as e:
            raise ApiError(422, str(e)) from e

    def extra_single_image(self, payload: ExtrasSinglePayload):  # type: ignore[valid-type]
        out, texts, _ = self._run_extras([decode_image(payload.image)], payload)
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
        text = images.read_infotext(image) or ""
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
        return asdict(self.ctx.options)

    def _checked_options(self, values: dict[str, Any]) -> dict[str, Any]:
        known = {f.name: f for f in fields(Options)}
        out = {}
        for name, value in values.items():
            if name not in known:
                raise ApiError(422, f"unknown setting {name!r}")
            default = getattr(Options(), name)
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, float) and not isinstance(value, int | float)) or (
                    not isinstance(default, float | bool) and not isinstance(value, type(default))):
                raise ApiError(422, f"setting {name}: expected {type(default).__name__}, got {value!r}")
            out[name] = type(default)(value)
        return out

    def set_options(self, values: dict[str, Any]):
        if self.s.frozen_settings:
            raise ApiError(403, "settings are frozen (--freeze-settings)")
        manager = self.ctx.models
        plain = self._checked_options({k: v for k, v in values.items() if k not in MODEL_FIELDS})
        try:
            if "sd_model_checkpoint" in values:
                self.worker.with_lock(lambda: manager.load(str(values["sd_model_checkpoint"])))
            if "sd_vae" in values:
                self.worker.with_lock(lambda: manager.set_vae(str(values["sd_vae"])))
        except CheckpointError as e:
            raise ApiError(422, str(e)) from e
        for name, value in plain.items():
            setattr(self.ctx.options, name, value)
        self.s.save_settings()
        return None

    def cmd_flags(self):
        return self.s.cmd_flags

    # ---- lists ---------------------------------------------------------------------------------
    def samplers(self):
        return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS]

    def schedulers(self):
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho, "need_inner_model": False}
                for s in SCHEDULERS]

    def upscalers(self):
        names = [n for n in postprocessing.UPSCALERS]
        return [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4} for n in names]

    def latent_upscale_modes(self):
        return [{"name": n} for n in LATENT_UPSCALE_MODES] + [{"name": n} for n in IMAGE_UPSCALERS if n != "None"]

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
        return {"loaded": {name: {"step": e.step, "sd_checkpoint": e.sd_checkpoint,
                                  "sd_checkpoint_name": e.sd_checkpoint_name, "shape": next(iter(e.dims.values())),
                                  "vectors": e.vector_count} for name, e in loaded.items()},
                "skipped": {name: {"reason": why} for name, why in skipped.items()}}

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

    def reload_checkpoint(self):
        try:
            self.worker.with_lock(self.ctx.models.ensure_selected)
        except CheckpointError as e:
            raise ApiError(422, str(e)) from e
        return {}

    def memory(self):
        import psutil
        import torch
        vm = psutil.virtual_memory()
        answer: dict[str, Any] = {"ram": {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}}
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            answer["cuda"] = {"system": {"free": free, "used": total - free, "total": total},
                              "active": {"peak": torch.cuda.max_memory_allocated()}}
        else:
            answer["cuda"] = {"error": "no CUDA GPU"}
        return answer
