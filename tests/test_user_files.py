"""The user's files on disk: atomic saves under concurrency and kill -9, corrupt files kept aside, disk full."""
import errno
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from modules import user_files
from modules.options import Options
from tests.helpers import REPO


def names_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "config.json"
    user_files.write_json(path, {"a": 1})
    user_files.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert names_in(path.parent) == ["config.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(user_files.NEW_FILE_MODE)


def test_nan_is_never_written(tmp_path):
    with pytest.raises(ValueError):
        user_files.write_json(tmp_path / "config.json", {"s_noise": math.nan})
    assert names_in(tmp_path) == []


@pytest.mark.parametrize("failing", ["os.replace", "os.fsync"])
def test_disk_full_says_so_and_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "config.json"
    Options(s_noise=0.5).save(path)
    before = path.read_bytes()

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(f"modules.user_files.{failing}", full)
    with pytest.raises(user_files.DiskFullError, match="disk full") as caught:
        Options(s_noise=0.9).save(path)
    assert caught.value.errno == errno.ENOSPC and str(path) in str(caught.value)
    assert path.read_bytes() == before
    assert names_in(tmp_path) == ["config.json"]


def run_until_written(writers: list[threading.Thread], readers: list[threading.Thread], done: threading.Event):
    """Start everyone; readers read until every writer has finished, then `done` stops them."""
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()


def test_concurrent_saves_never_tear_the_file_nor_lose_a_key(tmp_path):
    """Settings saves, another tool adding its own keys (read, merge, write under the lock) and readers, all
    at once: readers always find a whole JSON object and every key written survives."""
    path = tmp_path / "config.json"
    Options().save(path)
    errors: list[BaseException] = []
    done = threading.Event()

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 (reported by the test)
                errors.append(e)
        return run

    def save_settings(i: int):
        for n in range(30):
            Options(eta_noise_seed_delta=i * 100 + n).save(path)

    def other_tool(i: int):
        for n in range(20):
            with user_files.locked(path):
                data = user_files.read_json_object(path)
                data[f"tool{i}_{n}"] = n
                user_files.write_json(path, data)

    def read():
        while not done.is_set():
            assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)

    writers = [threading.Thread(target=guarded(lambda i=i: save_settings(i))) for i in range(5)]
    writers += [threading.Thread(target=guarded(lambda i=i: other_tool(i))) for i in range(5)]
    readers = [threading.Thread(target=guarded(read)) for _ in range(3)]
    run_until_written(writers, readers, done)
    assert not errors, errors[:3]
    data = json.loads(path.read_text())
    assert all(f"tool{i}_{n}" in data for i in range(5) for n in range(20))
    assert Options.load(path).eta_noise_seed_delta % 100 == 29
    assert names_in(tmp_path) == ["config.json"]


# Each user file saved in a loop by its own writer, growing so that a kill lands mid-write.
SAVE_IN_A_LOOP = {
    "config.json": """
from modules.options import Options
def setup(path):
    pass
def save(path, n):
    Options(eta_noise_seed_delta=n, outdir_txt2img_samples="x" * (n % 5000)).save(path)
""",
    "styles.csv": """
from modules.conditioning.styles import PromptStyle, StyleDatabase
def setup(path):
    global db
    db = StyleDatabase(path)
def save(path, n):
    db.save_style(PromptStyle(f"style {n % 300}", "a, " * (n % 700), "b"))
""",
    "cache.json": """
import os
from modules.models.hashes import HashCache
def setup(path):
    global cache, model
    cache = HashCache(path)
    model = path.with_name("model.safetensors")
    model.write_bytes(b"x" * 1000)
def save(path, n):
    os.utime(model, (n, n))  # a changed file is hashed again and the cache saved
    cache.sha256(model)
""",
    "ui-config.json": """
import gradio as gr
from modules.ui.ui_config import apply_ui_config
def setup(path):
    global demo, tab
    demo = gr.Blocks()
    with demo:
        with gr.Tab("txt2img", elem_id="tab_txt2img") as tab:
            pass
def save(path, n):
    with demo, tab:
        gr.Textbox(label=f"Field {n}", value="x" * (n % 500))  # a new control: new keys to write
        apply_ui_config(demo, path)
""",
}

RUN_LOOP = """
import sys
from pathlib import Path
exec(sys.argv[2])
path = Path(sys.argv[1])
setup(path)
n = 0
save(path, n)
print("saving", flush=True)
while True:
    n += 1
    save(path, n)
"""


def read_back(path) -> object:
    """The file read by its own reader, failing the test if it is torn."""
    if path.name == "styles.csv":
        from modules.conditioning.styles import StyleDatabase
        db = StyleDatabase(path)
        assert db.error is None and db.styles
        return db.styles
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data
    return data


@pytest.mark.parametrize("name", list(SAVE_IN_A_LOOP))
def test_a_writer_killed_mid_save_leaves_a_whole_file(tmp_path, name):
    path = tmp_path / name
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", RUN_LOOP, str(path), SAVE_IN_A_LOOP[name]], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "saving"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        read_back(path)
        if name == "config.json":
            assert Options.load(path).eta_noise_seed_delta > 0  # parsed, not quarantined
        assert not list(tmp_path.glob(f"{name}.bad-*"))


def test_concurrent_style_saves_from_two_databases_keep_every_style(tmp_path):
    """Two databases on one file (say, the page and a script) saving and deleting at once, readers
    alongside: no reader sees a torn file and no saved style is lost."""
    from modules.conditioning.styles import PromptStyle, StyleDatabase
    path = tmp_path / "styles.csv"
    databases = [StyleDatabase(path), StyleDatabase(path)]
    errors: list[BaseException] = []
    done = threading.Event()

    def save(i: int):
        try:
            for n in range(25):
                databases[i % 2].save_style(PromptStyle(f"s{i}-{n}", f"p{n}", "neg"))
                databases[i % 2].save_style(PromptStyle(f"tmp{i}", "x", ""))
                databases[(i + 1) % 2].delete_style(f"tmp{i}")
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            errors.append(e)

    def read():
        while not done.is_set():
            if path.exists():
                db = StyleDatabase(path)
                if db.error:
                    errors.append(AssertionError(db.error))

    writers = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    run_until_written(writers, readers, done)
    assert not errors, errors[:3]
    assert sorted(StyleDatabase(path).names()) == sorted(f"s{i}-{n}" for i in range(4) for n in range(25))


def test_concurrent_hash_caches_on_one_file_keep_every_hash(tmp_path):
    from modules.models.hashes import HashCache
    cache_file = tmp_path / "cache.json"
    models = []
    for i in range(40):
        models.append(tmp_path / f"m{i}.safetensors")
        models[-1].write_bytes(bytes([i]) * 100)
    caches = [HashCache(cache_file), HashCache(cache_file)]
    threads = [threading.Thread(target=lambda i=i: [caches[i % 2].sha256(m) for m in models[i::4]])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = HashCache(cache_file)
    assert all(fresh.cached(m) for m in models)


def test_temp_files_of_an_interrupted_save_are_cleaned_up_when_the_settings_load(tmp_path):
    path = tmp_path / "config.json"
    user_files.write_json(path, {"eta_noise_seed_delta": 3})
    stale = tmp_path / ".config.json.abc123.tmp"  # what a writer killed mid-save leaves
    fresh = tmp_path / ".config.json.def456.tmp"  # another process saving right now
    stale.write_text("{half")
    fresh.write_text("{half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert Options.load(path).eta_noise_seed_delta == 3
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize("content", ["123", "null", "[]", '"text"', "{not json", "\udcff"])
def test_a_corrupt_config_is_kept_aside_and_defaults_used(tmp_path, caplog, content):
    path = tmp_path / "config.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING):
        opts = Options.load(path)
    assert opts == Options()
    bad = list(tmp_path.glob("config.json.bad-*"))
    assert len(bad) == 1 and bad[0].read_bytes() == content.encode("utf-8", "surrogateescape")
    assert bad[0].name in caplog.text
    opts.save(path)  # the next save starts a new file; the bad one stays
    assert json.loads(path.read_text())["s_noise"] == 1.0 and bad[0].exists()


def test_a_save_over_a_file_corrupted_since_start_keeps_it(tmp_path):
    path = tmp_path / "config.json"
    opts = Options.load(path)
    path.write_text("{half a file")
    opts.save(path)
    assert [p.read_text() for p in tmp_path.glob("config.json.bad-*")] == ["{half a file"]
    assert json.loads(path.read_text())["randn_source"] == "GPU"


def test_bad_values_in_config_are_reported_and_defaults_kept(tmp_path, caplog):
    path = tmp_path / "config.json"
    path.write_text('{"s_noise": NaN, "randn_source": "XYZ", "samples_format": "exe", "eta_ddim": Infinity, '
                    '"sd_model_checkpoint": 123, "localization": "../../etc/passwd", "CLIP_stop_at_last_layers": 2, '
                    '"emphasis": "No norm", "other_tool": {"kept": true}}')
    with caplog.at_level(logging.WARNING):
        opts = Options.load(path)
    assert (opts.s_noise, opts.randn_source, opts.samples_format, opts.eta_ddim) == (1.0, "GPU", "png", 0.0)
    assert (opts.sd_model_checkpoint, opts.localization) == ("", "None")
    assert (opts.CLIP_stop_at_last_layers, opts.emphasis) == (2, "No norm")
    for name in ("s_noise", "randn_source", "samples_format", "eta_ddim", "sd_model_checkpoint", "localization"):
        assert f"setting {name}:" in caplog.text
    opts.save(path)
    data = json.loads(path.read_text())  # strict JSON again
    assert data["other_tool"] == {"kept": True} and data["s_noise"] == 1.0


@pytest.mark.parametrize("content", ["[]", "{half", "null"])
def test_a_corrupt_ui_config_is_kept_aside_and_a_fresh_one_written(tmp_path, caplog, content):
    import gradio as gr

    from modules.ui.ui_config import apply_ui_config
    path = tmp_path / "ui-config.json"
    path.write_text(content)
    with gr.Blocks() as demo, gr.Tab("txt2img", elem_id="tab_txt2img"):
        gr.Slider(1, 150, value=20, label="Sampling steps")
        with caplog.at_level(logging.WARNING):
            problems = apply_ui_config(demo, path)
    bad = list(tmp_path.glob("ui-config.json.bad-*"))
    assert len(bad) == 1 and bad[0].read_text() == content
    assert bad[0].name in problems[0] and bad[0].name in caplog.text
    assert json.loads(path.read_text())["txt2img/Sampling steps/value"] == 20
