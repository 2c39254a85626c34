// A1111's page-script API, for extensions' javascript/*.js: gradioApp(), the onUiLoaded / onUiUpdate /
// onAfterUiUpdate / onUiTabChange / onOptionsChanged / onOptionsAvailable callbacks, the current main tab, and the
// small helpers its other page scripts offer (switch_to_*, get_tab_index, selected_gallery_index, updateInput...).
// Globals are `var`s and function declarations under A1111's names, so that a script that reads them, or declares
// one of them again with `var` or `function`, works as it does there.
//
// Gradio 6 differs from the Gradio 3 A1111 was written for: there is no shadow root, the page's scripts run once the
// config has loaded (after DOMContentLoaded, before the tabs are drawn), a tab's panel is drawn on its first visit,
// and switching back to a drawn tab only changes attributes (so the main tab is also watched through those).

var opts = {}; // filled by settings.js (window.setPageOpts), which then runs the options callbacks

var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiTabChangeCallbacks = [];
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];
var uiAfterUpdateTimeout = null;
var uiCurrentTab = null;
var executedOnLoaded = false;

// The element holding the page (the <gradio-app> element; its getElementById looks in the whole document, as
// extensions call gradioApp().getElementById(...)). The document itself when there is none.
function gradioApp() {
  const app = document.querySelector('gradio-app');
  if (!app) return document;
  if (app.shadowRoot) return app.shadowRoot;
  if (!app.getElementById) app.getElementById = (id) => document.getElementById(id);
  return app;
}

// The tab buttons of a gr.Tabs element itself, not those of tabs nested in its panels, nor the hidden copies
// Gradio 6 keeps to measure them.
function ownTabButtons(tabs) {
  return [...tabs.querySelectorAll('button[role="tab"]')].filter((b) => b.closest('.tabs') === tabs);
}

// The selected main tab's button (its text is the tab's name, e.g. "img2img").
function get_uiCurrentTab() {
  const tabs = gradioApp().querySelector('#tabs');
  return tabs ? ownTabButtons(tabs).find((b) => b.getAttribute('aria-selected') === 'true') || null : null;
}

// The selected main tab's panel (id tab_<name>, e.g. tab_txt2img).
function get_uiCurrentTabContent() {
  const panels = gradioApp().querySelectorAll('#tabs > .tabitem[id^="tab_"]');
  return [...panels].find((panel) => panel.style.display !== 'none') || null;
}

// Called with the MutationRecords of every change of the page.
function onUiUpdate(callback) {
  uiUpdateCallbacks.push(callback);
}

// Called without arguments once the page has stopped changing for a moment (one call for a burst of changes).
function onAfterUiUpdate(callback) {
  uiAfterUpdateCallbacks.push(callback);
}

// Called once, when the page's tabs are there. A callback registered later (a script loaded after that) runs at
// once: A1111 never gets there, as all its scripts are in the page before Gradio draws it.
function onUiLoaded(callback) {
  if (executedOnLoaded) {
    executeCallbacks([callback]);
  } else {
    uiLoadedCallbacks.push(callback);
  }
}

// Called when another main tab gets selected (and once for the first one).
function onUiTabChange(callback) {
  uiTabChangeCallbacks.push(callback);
}

// Called each time the settings are handed to the page (`opts` filled or refilled).
function onOptionsChanged(callback) {
  optionsChangedCallbacks.push(callback);
}

// Called once `opts` holds the settings; at once when it already does.
function onOptionsAvailable(callback) {
  if (Object.keys(opts).length) {
    executeCallbacks([callback]);
  } else {
    optionsAvailableCallbacks.push(callback);
  }
}

// Runs every callback with `arg`; one that throws is logged and the others still run.
function executeCallbacks(queue, arg) {
  for (const callback of queue) {
    try {
      callback(arg);
    } catch (e) {
      console.error('error running callback', callback, ':', e);
    }
  }
}

function scheduleAfterUiUpdateCallbacks() {
  clearTimeout(uiAfterUpdateTimeout);
  uiAfterUpdateTimeout = setTimeout(() => executeCallbacks(uiAfterUpdateCallbacks), 200);
}

// A new main tab counts once its panel is the one shown (Gradio draws a panel a moment after its button is
// selected, on the tab's first visit), so that the callbacks find both.
function checkUiTabChange() {
  const tab = get_uiCurrentTab();
  if (tab && tab !== uiCurrentTab && get_uiCurrentTabContent()?.id === tab.getAttribute('aria-controls')) {
    uiCurrentTab = tab;
    executeCallbacks(uiTabChangeCallbacks);
  }
}

new MutationObserver((mutations) => {
  if (!executedOnLoaded && gradioApp().querySelector('#txt2img_prompt')) {
    executedOnLoaded = true;
    executeCallbacks(uiLoadedCallbacks);
  }
  executeCallbacks(uiUpdateCallbacks, mutations);
  scheduleAfterUiUpdateCallbacks();
  checkUiTabChange();
}).observe(gradioApp(), {childList: true, subtree: true});
new MutationObserver(() => checkUiTabChange())
  .observe(gradioApp(), {attributeFilter: ['aria-selected', 'style'], subtree: true});

// Whether the element and everything around it is displayed (not in a hidden tab, accordion or element).
function uiElementIsVisible(el) {
  for (let node = el; node && node !== document; node = node.parentNode) {
    if (node instanceof Element && getComputedStyle(node).display === 'none') return false;
  }
  return true;
}

// Whether part of the element is within the window's height.
function uiElementInSight(el) {
  const rect = el.getBoundingClientRect();
  return rect.bottom > 0 && rect.top < window.innerHeight;
}

// The index of the selected button among a gr.Tabs element's own tab buttons (0 when none is).
function get_tab_index(tabId) {
  const index = ownTabButtons(gradioApp().getElementById(tabId)).findIndex((b) => b.classList.contains('selected'));
  return Math.max(index, 0);
}

function switch_to_txt2img() {
  gradioApp().getElementById('tab_txt2img-button').click();
  return Array.from(arguments);
}

// img2img's mode tabs are drawn on the tab's first visit, a moment after its button is clicked.
function switch_to_img2img_tab(no) {
  gradioApp().getElementById('tab_img2img-button').click();
  const pick = () => {
    const modes = gradioApp().getElementById('mode_img2img');
    if (modes) ownTabButtons(modes)[no]?.click();
    return Boolean(modes);
  };
  if (pick()) return;
  const observer = new MutationObserver(() => pick() && observer.disconnect());
  observer.observe(gradioApp(), {childList: true, subtree: true});
}

function switch_to_img2img() {
  switch_to_img2img_tab(0);
  return Array.from(arguments);
}

function switch_to_sketch() {
  switch_to_img2img_tab(1);
  return Array.from(arguments);
}

function switch_to_inpaint() {
  switch_to_img2img_tab(2);
  return Array.from(arguments);
}

function switch_to_inpaint_sketch() {
  switch_to_img2img_tab(3);
  return Array.from(arguments);
}

function switch_to_extras() {
  gradioApp().getElementById('tab_extras-button').click();
  return Array.from(arguments);
}

window.args_to_array = Array.from;

// The thumbnails of the galleries shown in the current main tab.
function all_gallery_buttons() {
  const content = get_uiCurrentTabContent();
  if (!content) return [];
  return [...content.querySelectorAll('[id$="_gallery"] .thumbnail-item')].filter(uiElementIsVisible);
}

function selected_gallery_button() {
  return all_gallery_buttons().find((b) => b.classList.contains('selected')) || null;
}

// The index of the selected picture in the current tab's gallery, -1 when none is selected.
function selected_gallery_index() {
  return all_gallery_buttons().findIndex((b) => b.classList.contains('selected'));
}

// A task id in A1111's form, "task(<15 random letters and digits>)".
function randomId() {
  const part = () => Math.random().toString(36).slice(2, 7).padEnd(5, '0');
  return `task(${part()}${part()}${part()})`;
}

// Tells Gradio that a script changed an input's value (otherwise the server keeps the old one).
function updateInput(target) {
  const event = new Event('input', {bubbles: true});
  Object.defineProperty(event, 'target', {value: target});
  target.dispatchEvent(event);
}
