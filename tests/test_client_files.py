"""Files the page's clients must never reach: event values naming files of the server, localization paths, and
folders with --hide-ui-dir-config (implied by --listen). Events are sent as an attacker would, straight to
Gradio's queue routes, with the page's own event numbers."""
import json
import shutil
import struct
import uuid
import zlib

import pytest
import requests
from PIL import Image

from modules.cmd_args import parse_args
from modules.localization import list_localizations, load_localization, localization_folders
from tests.helpers import serving_checkpoints

FILE_DATA = {"_type": "gradio.FileData"}  # the marker Gradio wants on every file value


class PageClient:
    """One page session: the /config of the page, and its events sent by number."""

    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()
        self.session_hash = uuid.uuid4().hex[:11]
        self.config = self.http.get(url + "/config", timeout=30).json()
        self.by_id = {c["id"]: c for c in self.config["components"]}

    def elem(self, elem_id: str) -> dict:
        return next(c for c in self.config["components"] if c.get("props", {}).get("elem_id") == elem_id)

    def event(self, elem_id: str, trigger: str) -> dict | None:
        target = self.elem(elem_id)["id"]
        return next((d for d in self.config["dependencies"] if [target, trigger] in d["targets"]), None)

    def run(self, elem_id: str, trigger: str, values: dict | None = None, data: list | None = None) -> dict:
        """Send the event of `elem_id`'s `trigger`, with each input's default value unless given in `values` (by
        elem_id) or all inputs given as `data`; returns Gradio's process_completed message."""
        dep = self.event(elem_id, trigger)
        if data is None:
            data = [(values or {}).get(self.by_id[i]["props"].get("elem_id"), self.by_id[i]["props"].get("value"))
                    for i in dep["inputs"]]
        body = {"data": data, "fn_index": dep["id"], "session_hash": self.session_hash, "event_data": None,
                "trigger_id": dep["targets"][0][0]}
        joined = self.http.post(self.url + "/gradio_api/queue/join", json=body, timeout=30)
        assert joined.status_code == 200, joined.text
        event_id = joined.json()["event_id"]
        with self.http.get(self.url + "/gradio_api/queue/data", params={"session_hash": self.session_hash},
                           stream=True, timeout=120) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[len(b"data: "):]) if line.startswith(b"data: ") else {}
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    return message
        raise AssertionError("the event never completed")

    def upload(self, path) -> str:
        with open(path, "rb") as f:
            answer = self.http.post(self.url + "/gradio_api/upload", files={"files": f}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()[0]


def outputs(data, folder: str) -> list:
    return sorted(p for p in (data / "outputs" / folder).rglob("*") if p.is_file())


def saved_by_button(data) -> list:
    """What the Save button wrote: outdir_save, A1111's log/images in the data folder."""
    return sorted(p for p in (data / "log" / "images").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    data = tmp_path_factory.mktemp("client_files")
    secret = tmp_path_factory.mktemp("private") / "secret.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(secret)
    with serving_checkpoints(data, tiny_dir, "--hide-ui-dir-config") as running:
        yield running.url, data, secret


@pytest.mark.server
@pytest.mark.slow
def test_gallery_and_image_values_may_name_only_uploaded_files(server):
    url, data, secret = server
    page = PageClient(url)
    named = [{"image": {"path": str(secret), "meta": FILE_DATA}, "caption": None}]
    for button in ("save_txt2img", "save_zip_txt2img", "txt2img_send_to_extras", "img2img_send_to_inpaint"):
        takes_index = len(page.event(button, "click")["inputs"]) == 3  # (gallery, selected, last) or (gallery, last)
        answer = page.run(button, "click", data=[named, 0, {}] if takes_index else [named, {}])
        assert not answer["success"] and "not uploaded" in answer["output"]["error"], button
    assert saved_by_button(data) == []
    single = {"extras_image": {"path": str(secret), "meta": FILE_DATA}}
    assert not page.run("extras_generate", "click", values=single)["success"]
    assert outputs(data, "extras-images") == []

    uploaded = page.upload(secret)  # what the page does with a picture the user gives it
    mine = [{"image": {"path": uploaded, "meta": FILE_DATA}, "caption": None}]
    answer = page.run("save_txt2img", "click", data=[mine, 0, {}])
    assert answer["success"], answer
    [saved] = saved_by_button(data)
    assert Image.open(saved).getpixel((0, 0)) == (200, 10, 10)
    assert page.run("extras_generate", "click", values={"extras_image": {"path": uploaded, "meta": FILE_DATA}}
                    )["success"]


@pytest.mark.server
@pytest.mark.slow
def test_hidden_folder_fields_are_refused_by_the_server(server, tmp_path):
    url, data, secret = server
    page = PageClient(url)
    assert page.event("txt2img_open_folder", "click") is None  # no event that starts a file manager
    assert page.event("img2img_open_folder", "click") is None
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    shutil.copy(secret, source)

    page.run("extras_batch_directory_tab", "select")  # sets the tab's mode, as clicking the hidden tab would
    answer = page.run("extras_generate", "click", values={"extras_batch_input_dir": str(source),
                                                          "extras_batch_output_dir": str(target)})
    assert "--hide-ui-dir-config" in json.dumps(answer["output"])

    page.run("img2img_batch_tab", "select")
    answer = page.run("img2img_generate", "click", values={"img2img_batch_input_dir": str(source),
                                                           "img2img_batch_output_dir": str(target),
                                                           "img2img_steps": 1, "img2img_width": 64,
                                                           "img2img_height": 64})
    assert "--hide-ui-dir-config" in json.dumps(answer["output"])
    assert not target.exists()


def test_listen_share_and_server_name_hide_folder_fields_unless_insecure_access_is_asked_for():
    assert not parse_args([]).hide_ui_dir_config
    assert parse_args(["--hide-ui-dir-config"]).hide_ui_dir_config
    for flags in (["--listen"], ["--share"], ["--server-name", "127.0.0.1"]):
        assert parse_args(flags).hide_ui_dir_config, flags
        assert not parse_args([*flags, "--enable-insecure-extension-access"]).hide_ui_dir_config, flags
    assert parse_args(["--listen", "--enable-insecure-extension-access", "--hide-ui-dir-config"]).hide_ui_dir_config


def test_localization_names_only_files_of_the_localization_folders(tmp_path):
    repo, extensions = tmp_path / "repo", tmp_path / "extensions"
    (repo / "localizations").mkdir(parents=True)
    (repo / "localizations" / "de.json").write_text('{"Generate": "Erzeugen"}')
    (extensions / "ext-fr" / "localizations").mkdir(parents=True)
    (extensions / "ext-fr" / "localizations" / "fr.json").write_text('{"Generate": "Générer"}')
    (tmp_path / "private.json").write_text('{"password": "hunter2"}')
    folders = localization_folders(repo, extensions)
    assert list_localizations(folders) == ["de", "fr"]
    assert load_localization(folders, "fr") == {"Generate": "Générer"}
    for name in ("../../private", str(tmp_path / "private"), str(tmp_path / "private.json"), "de/../../../private"):
        assert load_localization(folders, name) == {}, name


def bomb_png(path, width: int = 20000, height: int = 20000):
    """A tiny PNG whose header claims `width`x`height` grey pixels: a decompression bomb's opening."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("size", [(20000, 20000), (11000, 11000)])
def test_an_uploaded_decompression_bomb_is_refused_with_a_message(server, tmp_path, size):
    """Headers claiming 400 and 121 megapixels: PIL would refuse the first only after its own limit and
    allocate the second; both are refused from the header, with the limit named, and the server goes on."""
    url, data, secret = server
    page = PageClient(url)
    bomb = {"path": page.upload(bomb_png(tmp_path / "bomb.png", *size)), "meta": FILE_DATA}
    for button, trigger, field, label in (("pnginfo_image", "change", "pnginfo_image", "Source"),
                                          ("extras_generate", "click", "extras_image", "Source"),
                                          ("img2img_generate", "click", "img2img_image", "Image for img2img")):
        answer = page.run(button, trigger, values={field: bomb, "img2img_steps": 1})
        assert not answer["success"]
        error = answer["output"]["error"]
        assert error.startswith(f"{label}: the picture is ") and error.endswith("at most 100 megapixels are supported")
        assert size[0] > 15000 or f"{size[0]}x{size[1]}" in error
    page.upload(bomb_png(tmp_path / "bomb.png", *size))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    answer = page.run("pnginfo_image", "change", values={"pnginfo_image": {"path": page.upload(broken),
                                                                           "meta": FILE_DATA}})
    assert answer["output"]["error"].startswith("Source: not a readable picture")
    fine = {"path": page.upload(secret), "meta": FILE_DATA}
    assert page.run("extras_generate", "click", values={"extras_image": fine})["success"]
