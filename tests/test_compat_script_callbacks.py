"""modules.script_callbacks: A1111's callback registry as extensions use it, with scripts loaded from real files."""
import importlib.util
import logging
import textwrap
from pathlib import Path

import pytest

from modules import script_callbacks as sc


@pytest.fixture(autouse=True)
def empty_registry():
    """Each test starts with no callbacks; whatever was registered before is put back afterwards."""
    saved = {key: list(callbacks) for key, callbacks in sc.callback_map.items()}
    sc.clear_callbacks()
    yield
    for key, callbacks in sc.callback_map.items():
        callbacks[:] = saved[key]


def write_script(root: Path, relative: str, body: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def run_script(path: Path):
    """Execute a script file as A1111's loader does (a module from a file path)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABS_SCRIPT = """
    from modules import script_callbacks

    def tabs():
        return [("blocks", "My tab", "my_tab")]

    script_callbacks.on_ui_tabs(tabs)
"""


def test_registered_callbacks_run_with_their_arguments_in_registration_order():
    calls = []
    sc.on_app_started(lambda demo, app: calls.append(("app_started", demo, app)))
    sc.on_model_loaded(lambda model: calls.append(("model_loaded", model)))
    sc.on_model_loaded(lambda model: calls.append(("model_loaded again", model)))
    sc.on_ui_settings(lambda: calls.append(("ui_settings",)))
    sc.on_before_component(lambda component, **kwargs: calls.append(("before", component, kwargs["elem_id"])))
    sc.on_after_component(lambda component, **kwargs: calls.append(("after", component, kwargs["elem_id"])))
    sc.on_infotext_pasted(lambda infotext, params: params.update(Steps=30))
    sc.on_list_unets(lambda unets: unets.append("my unet"))

    sc.app_started_callback(None, "app")
    sc.model_loaded_callback("model")
    sc.ui_settings_callback()
    sc.before_component_callback("box", elem_id="txt2img_prompt")
    sc.after_component_callback("box", elem_id="txt2img_prompt")
    params = {"Steps": 20}
    sc.infotext_pasted_callback("a cat\nSteps: 20", params)

    assert calls == [("app_started", None, "app"), ("model_loaded", "model"), ("model_loaded again", "model"),
                     ("ui_settings",), ("before", "box", "txt2img_prompt"), ("after", "box", "txt2img_prompt")]
    assert params == {"Steps": 30}
    assert sc.list_unets_callback() == ["my unet"]


def test_callbacks_may_change_the_params_they_are_given():
    sc.on_cfg_denoiser(lambda p: setattr(p, "x", p.x * 2))
    sc.on_before_image_saved(lambda p: p.pnginfo.update(extra="yes"))
    sc.on_image_grid(lambda p: setattr(p, "cols", 1))
    sc.on_before_token_counter(lambda p: setattr(p, "prompt", p.prompt + ", masterpiece"))

    denoiser = sc.CFGDenoiserParams(3, None, 1.0, 0, 20, "cond", "uncond")
    sc.cfg_denoiser_callback(denoiser)
    saved = sc.ImageSaveParams("image", None, "00001.png", {"parameters": "a cat"})
    sc.before_image_saved_callback(saved)
    grid = sc.ImageGridLoopParams(["a", "b"], 2, 1)
    sc.image_grid_callback(grid)
    tokens = sc.BeforeTokenCounterParams("a cat", 20, [])
    sc.before_token_counter_callback(tokens)

    assert denoiser.x == 6
    assert saved.pnginfo == {"parameters": "a cat", "extra": "yes"}
    assert grid.cols == 1
    assert tokens.prompt == "a cat, masterpiece"


def test_ui_tabs_collects_the_tabs_of_every_callback():
    sc.on_ui_tabs(lambda: [("a", "A", "tab_a")])
    sc.on_ui_tabs(lambda: None)
    sc.on_ui_tabs(lambda: [("b", "B", "tab_b"), ("c", "C", "tab_c")])
    assert sc.ui_tabs_callback() == [("a", "A", "tab_a"), ("b", "B", "tab_b"), ("c", "C", "tab_c")]


def test_a_callback_remembers_the_extension_file_that_registered_it(tmp_path):
    script = write_script(tmp_path, "extensions/My-Ext/scripts/tabs.py", TABS_SCRIPT)
    run_script(script)

    [registered] = sc.callback_map["callbacks_ui_tabs"]
    assert registered.script == str(script)
    assert registered.name == "my-ext/tabs.py/ui_tabs"
    assert sc.extension_name(registered.script) == "My-Ext"
    assert sc.ui_tabs_callback() == [("blocks", "My tab", "my_tab")]


def test_the_script_announced_by_the_loader_owns_its_callbacks(tmp_path):
    announced = tmp_path / "extensions-builtin" / "builtin-ext" / "scripts" / "main.py"
    with sc.loading_script(announced):
        sc.on_model_loaded(print)
    sc.on_image_saved(print)
    sc.set_current_script(str(announced))
    sc.on_ui_settings(print)
    sc.set_current_script(None)
    sc.on_image_grid(print)

    assert sc.callback_map["callbacks_model_loaded"][0].script == str(announced)
    assert sc.callback_map["callbacks_ui_settings"][0].script == str(announced)
    assert sc.callback_map["callbacks_image_saved"][0].script == __file__
    assert sc.callback_map["callbacks_image_grid"][0].script == __file__
    assert sc.extension_name(announced) == "builtin-ext"
    assert sc.extension_name(__file__) is None


def test_a_failing_callback_is_logged_with_its_extension_and_the_others_still_run(tmp_path, caplog):
    run_script(write_script(tmp_path, "extensions/good-ext/scripts/tabs.py", TABS_SCRIPT))
    broken = write_script(tmp_path, "extensions/broken-ext/scripts/broken.py", """
        from modules import script_callbacks

        def tabs():
            return 1 / 0

        script_callbacks.on_ui_tabs(tabs)
    """)
    run_script(broken)
    run_script(write_script(tmp_path, "extensions/late-ext/scripts/tabs.py", TABS_SCRIPT.replace("My tab", "Late")))

    with caplog.at_level(logging.ERROR, logger=sc.__name__):
        tabs = sc.ui_tabs_callback()

    assert tabs == [("blocks", "My tab", "my_tab"), ("blocks", "Late", "my_tab")]
    [record] = caplog.records
    assert "broken-ext" in record.getMessage()
    assert str(broken) in record.getMessage()
    assert "ui_tabs" in record.getMessage()
    assert record.exc_info[0] is ZeroDivisionError
    assert "1 / 0" in caplog.text  # the traceback points at the failing line


def test_a_failing_step_callback_does_not_stop_the_others(caplog):
    seen = []

    def broken(_params):
        raise RuntimeError("bad hook")

    sc.on_cfg_denoised(broken)
    sc.on_cfg_denoised(lambda params: seen.append(params.sampling_step))
    with caplog.at_level(logging.ERROR, logger=sc.__name__):
        sc.cfg_denoised_callback(sc.CFGDenoisedParams("x", 3, 20, "model"))

    assert seen == [3]
    [record] = caplog.records
    assert "cfg_denoised" in record.getMessage() and __file__ in record.getMessage()


def test_a_reloaded_script_removes_only_its_own_callbacks(tmp_path):
    reloading = write_script(tmp_path, "extensions/reloading/scripts/hooks.py", """
        from modules import script_callbacks

        script_callbacks.remove_current_script_callbacks()
        script_callbacks.on_model_loaded(lambda model: None)
        script_callbacks.on_image_saved(lambda params: None)
    """)
    other = write_script(tmp_path, "extensions/other/scripts/hooks.py", """
        from modules import script_callbacks

        script_callbacks.on_model_loaded(lambda model: None)
    """)
    run_script(reloading)
    run_script(other)
    run_script(reloading)

    scripts = [c.script for c in sc.callback_map["callbacks_model_loaded"]]
    assert scripts == [str(other), str(reloading)]
    assert [c.script for c in sc.callback_map["callbacks_image_saved"]] == [str(reloading)]

    with sc.loading_script(other):
        sc.remove_current_script_callbacks()
    assert [c.script for c in sc.callback_map["callbacks_model_loaded"]] == [str(reloading)]


def test_remove_callbacks_for_function_and_clear():
    def hook(params):
        pass

    sc.on_cfg_denoiser(hook)
    sc.on_cfg_after_cfg(hook)
    sc.on_cfg_after_cfg(print)
    sc.remove_callbacks_for_function(hook)
    assert sc.callback_map["callbacks_cfg_denoiser"] == []
    assert [c.callback for c in sc.callback_map["callbacks_cfg_after_cfg"]] == [print]

    sc.clear_callbacks()
    assert all(callbacks == [] for _, callbacks in sc.enumerate_callbacks())


def test_names_are_unique_per_kind():
    sc.on_before_ui(print, name="setup")
    sc.on_before_ui(print, name="setup")
    sc.on_before_ui(print)
    assert [c.name for c in sc.callback_map["callbacks_before_ui"]] == [
        "base/test_compat_script_callbacks.py/before_ui/setup",
        "base/test_compat_script_callbacks.py/before_ui/setup-1",
        "base/test_compat_script_callbacks.py/before_ui",
    ]


def test_unload_and_before_ui_run_newest_first():
    order = []
    for label in ("first", "second"):
        sc.on_script_unloaded(lambda label=label: order.append(("unloaded", label)))
        sc.on_before_ui(lambda label=label: order.append(("before_ui", label)))
    sc.script_unloaded_callback()
    sc.before_ui_callback()
    assert order == [("unloaded", "second"), ("unloaded", "first"), ("before_ui", "second"), ("before_ui", "first")]


def test_registering_or_removing_while_callbacks_run_does_not_disturb_the_run():
    ran = []

    def registers_another(_model):
        ran.append("registers")
        sc.on_model_loaded(lambda model: ran.append("added later"))

    def removes_itself(_model):
        ran.append("removes")
        sc.remove_callbacks_for_function(removes_itself)

    sc.on_model_loaded(registers_another)
    sc.on_model_loaded(removes_itself)
    sc.on_model_loaded(lambda model: ran.append("last"))
    sc.model_loaded_callback("model")
    assert ran == ["registers", "removes", "last"]

    ran.clear()
    sc.model_loaded_callback("model")
    assert ran == ["registers", "last", "added later"]


def test_parameter_classes_take_a1111s_positional_arguments():
    saved = sc.ImageSaveParams("img", "p", "f.png", {"parameters": "x"})
    assert (saved.image, saved.p, saved.filename, saved.pnginfo) == ("img", "p", "f.png", {"parameters": "x"})
    noise = sc.ExtraNoiseParams("noise", "x", "xi")
    assert (noise.noise, noise.x, noise.xi) == ("noise", "x", "xi")
    denoiser = sc.CFGDenoiserParams("x", "ic", 1.5, 2, 20, "tc", "tu", "den")
    assert (denoiser.x, denoiser.image_cond, denoiser.sigma, denoiser.sampling_step, denoiser.total_sampling_steps,
            denoiser.text_cond, denoiser.text_uncond, denoiser.denoiser) == ("x", "ic", 1.5, 2, 20, "tc", "tu", "den")
    assert sc.CFGDenoiserParams("x", "ic", 1.5, 2, 20, "tc", "tu").denoiser is None
    denoised = sc.CFGDenoisedParams("x", 2, 20, "inner")
    assert (denoised.x, denoised.sampling_step, denoised.total_sampling_steps, denoised.inner_model) == (
        "x", 2, 20, "inner")
    after = sc.AfterCFGCallbackParams("x", 2, 20)
    assert (after.x, after.sampling_step, after.total_sampling_steps) == ("x", 2, 20)
    assert sc.UiTrainTabParams("preview").txt2img_preview_params == "preview"
    grid = sc.ImageGridLoopParams(["a"], 1, 1)
    assert (grid.imgs, grid.cols, grid.rows) == (["a"], 1, 1)
    tokens = sc.BeforeTokenCounterParams("a cat", 20, ["style"])
    assert (tokens.prompt, tokens.steps, tokens.styles, tokens.is_positive) == ("a cat", 20, ["style"], True)
