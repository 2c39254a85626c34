"""A1111's page-script API (javascript/script.js) in a real browser, called as an A1111 extension's javascript/*.js
calls it: the extension's script registers its callbacks while the page loads, then the test reads what ran."""
from pathlib import Path

import pytest

from tests.helpers import serving_checkpoints
from tests.test_browser import CHROMIUM, browser  # noqa: F401 (browser: the fixture)

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)"),
              pytest.mark.server, pytest.mark.browser]

# What an extension's script does with the API; `probe` records it for the test.
PROBE_JS = """
window.probe = {loaded: 0, promptAtLoad: false, afterBroken: 0, tabs: [], optionsAvailable: 0, optionsChanged: 0,
                sendSeedAtAvailable: null, updateRecords: true, updates: 0, afterUpdates: 0};
onUiLoaded(() => {
  probe.loaded += 1;
  probe.promptAtLoad = Boolean(gradioApp().querySelector('#txt2img_prompt'));
});
onUiLoaded(() => { throw new Error('probe: a broken callback'); });
onUiLoaded(() => { probe.afterBroken += 1; });
onUiTabChange(() => { probe.tabs.push([get_uiCurrentTab().textContent, get_uiCurrentTabContent().id]); });
onOptionsAvailable(() => {
  probe.optionsAvailable += 1;
  probe.sendSeedAtAvailable = typeof opts.send_seed;
});
onOptionsChanged(() => { probe.optionsChanged += 1; });
onUiUpdate((mutations) => {
  probe.updates += 1;
  probe.updateRecords = probe.updateRecords && mutations.every((m) => m instanceof MutationRecord);
});
onAfterUiUpdate(() => { probe.afterUpdates += 1; });
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    data = tmp_path_factory.mktemp("page_script_api")
    scripts = data / "extensions" / "page-api-probe" / "javascript"
    scripts.mkdir(parents=True)
    (scripts / "probe.js").write_text(PROBE_JS)
    with serving_checkpoints(data, tiny_dir) as running:
        yield running.url


@pytest.fixture
def page(server, browser):  # noqa: F811 (browser: the fixture)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.goto(server)
    page.wait_for_function("window.probe && probe.loaded && probe.optionsChanged && probe.afterUpdates",
                           timeout=60_000)
    yield page
    page.close()


def probe(page) -> dict:
    return page.evaluate("window.probe")


def test_load_and_options_callbacks(page):
    assert page.evaluate("gradioApp().querySelector('#txt2img_prompt') !== null")
    assert page.evaluate("gradioApp().getElementById('txt2img_prompt') === document.getElementById('txt2img_prompt')")
    seen = probe(page)
    assert (seen["loaded"], seen["promptAtLoad"], seen["afterBroken"]) == (1, True, 1)
    assert any("probe: a broken callback" in e for e in page.errors), page.errors
    assert (seen["optionsAvailable"], seen["sendSeedAtAvailable"]) == (1, "boolean")
    assert seen["updates"] > 0 and seen["updateRecords"]
    # registered once the page is there: onOptionsAvailable runs at once (as in A1111), and so does onUiLoaded
    assert page.evaluate("""() => {
        const ran = [];
        onOptionsAvailable(() => ran.push('options'));
        onUiLoaded(() => ran.push('loaded'));
        return ran;
    }""") == ["options", "loaded"]
    assert probe(page)["loaded"] == 1
    # an applied setting is handed to the page again: onOptionsChanged runs again, onOptionsAvailable does not
    page.locator("#tab_settings-button").click()
    send_seed = page.locator("#setting_send_seed input[type=checkbox]")
    for wanted in (False, True):  # and back, for the next test
        before = probe(page)["optionsChanged"]
        send_seed.set_checked(wanted)
        page.locator("#settings_submit").click()
        page.wait_for_function(f"probe.optionsChanged > {before} && opts.send_seed === {str(wanted).lower()}")
    assert probe(page)["optionsAvailable"] == 1


def test_tabs_and_helpers(page):
    assert probe(page)["tabs"] == [["txt2img", "tab_txt2img"]]
    # img2img's first visit (its panel is drawn now), to its third mode tab
    assert page.evaluate("switch_to_inpaint(1, 'a')") == [1, "a"]
    page.wait_for_function("probe.tabs.length === 2 && get_tab_index('mode_img2img') === 2")
    assert page.locator("#img2img_inpaint_tab-button").get_attribute("aria-selected") == "true"
    assert page.evaluate("uiElementIsVisible(gradioApp().getElementById('txt2img_prompt'))") is False
    # between tabs drawn before: Gradio only changes attributes, no element is added
    page.evaluate("switch_to_txt2img()")
    page.wait_for_function("probe.tabs.length === 3")
    page.locator("#tab_img2img-button").click()
    page.wait_for_function("probe.tabs.length === 4")
    assert probe(page)["tabs"][1:] == [["img2img", "tab_img2img"], ["txt2img", "tab_txt2img"],
                                       ["img2img", "tab_img2img"]]
    assert page.evaluate("[get_uiCurrentTab().textContent, get_uiCurrentTabContent().id]") == ["img2img", "tab_img2img"]
    assert page.evaluate("selected_gallery_index()") == -1
    assert page.evaluate("/^task\\([a-z0-9]{15}\\)$/.test(randomId()) && randomId() !== randomId()")

    # a value set from a script reaches Gradio once updateInput tells it: the token counter counts the new prompt
    page.evaluate("switch_to_txt2img()")
    page.wait_for_function("probe.tabs.length === 5")
    prompt = "gradioApp().querySelector('#txt2img_prompt textarea')"
    assert page.evaluate(f"uiElementIsVisible({prompt}) && uiElementInSight({prompt})")
    empty = page.locator("#txt2img_token_counter").inner_text()
    page.evaluate(f"(() => {{ const box = {prompt}; box.value = 'a red apple on a table'; updateInput(box); }})()")
    page.wait_for_function(f"document.querySelector('#txt2img_token_counter').innerText !== {empty!r}")
    assert page.locator("#txt2img_prompt textarea").input_value() == "a red apple on a table"
    assert probe(page)["loaded"] == 1
