"""ControlNet units in the A1111 extension's API form: its field names, aliases, enums by name or index, limits,
and its infotext; pictures only as base64, never as a file path."""
import base64
import io

import pytest
from PIL import Image

from modules.generation import GenerationError
from modules.generation.control import ControlNetUnitRequest, unit_from_dict


def b64(picture: Image.Image) -> str:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def decode(data: str, what: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(base64.b64decode(data, validate=True))).convert("RGB")
    except Exception as e:
        raise GenerationError(f"{what}: not a base64 picture") from e


def test_a_unit_takes_the_extensions_fields_aliases_and_defaults():
    picture = Image.new("RGB", (16, 8), (10, 20, 30))
    unit = unit_from_dict({"enabled": True, "module": "canny", "model": "control_canny [abc]",
                           "input_image": b64(picture), "lowvram": True, "guidance": 0.6,
                           "resize_mode": "Inner Fit (Scale to Fit)", "control_mode": 2, "unknown_field": 1}, decode)
    assert unit.image.size == (16, 8) and unit.low_vram and unit.guidance_end == 0.6
    assert unit.resize_mode == "Crop and Resize" and unit.control_mode == "ControlNet is more important"
    assert (unit.weight, unit.processor_res, unit.guidance_start, unit.pixel_perfect) == (1.0, -1, 0.0, False)
    with_mask = unit_from_dict({"image": {"image": b64(picture), "mask": b64(picture)}}, decode)
    assert with_mask.image is not None and with_mask.mask is not None
    assert unit_from_dict({}, decode) == ControlNetUnitRequest()


@pytest.mark.parametrize(("values", "message"), [
    ({"weight": 3}, "weight: 3 is out of range"),
    ({"weight": float("nan")}, "weight: expected a number"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start (0.8) is after guidance_end"),
    ({"control_mode": "Louder"}, "control_mode: 'Louder' is not one of Balanced"),
    ({"resize_mode": 7}, "resize_mode: 7 is not one of Just Resize"),
    ({"image": "/etc/passwd"}, "image: not a base64 picture"),  # a path is decoded as data, never opened
    ({"image": 5}, "image: expected a base64 picture"),
    ({"image": "x", "input_image": "y"}, "give 'input_image' or 'image', not both"),
])
def test_a_unit_that_cannot_be_used_is_refused_naming_the_field(values, message):
    with pytest.raises(GenerationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        unit_from_dict(values, decode, index=1)


def test_a_unit_is_written_into_the_infotext_as_the_extension_writes_it():
    unit = ControlNetUnitRequest(enabled=True, module="canny", model="control_v11p_sd15_canny [d14c016b]",
                                 processor_res=512, threshold_a=100, threshold_b=200)
    assert unit.infotext() == ("Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, "
                               "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100, "
                               "Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, "
                               "Control Mode: Balanced")
