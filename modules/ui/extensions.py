"""The Extensions tab, as A1111's: the installed extensions with a checkbox each ("Apply and restart UI" saves
`disabled_extensions` and restarts the program), "Check for updates", and installing from a git URL or from a
folder of this computer. Changes are refused when others may reach the server (A1111's rule)."""
from __future__ import annotations

import argparse
import html
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from modules import extensions
from modules.extensions import Extension, ExtensionError, UpdateCheck
from modules.options import EXTENSION_SWITCH_OFF, Options, SettingError

log = logging.getLogger(__name__)

ACCESS_REFUSED = ("Others may reach this server (it was started with --listen, --share or --server-name), so "
                  "extensions cannot be installed, updated, enabled or disabled from this page. Start it with "
                  "--enable-insecure-extension-access to allow that: anyone who reaches the page can then run "
                  "programs on this computer.")
FOLDERS_REFUSED = "Folders of this computer cannot be used from the page: it was started with --hide-ui-dir-config."

# The checkboxes' state as the page shows it, for "Apply": [disabled names, names to update, disable-all choice]
COLLECT_CHECKBOXES = """(disabled, update, mode) => {
    const boxes = [...document.querySelectorAll('#extensions input[type=checkbox]')];
    const named = (prefix, checked) => boxes.filter((b) => b.name.startsWith(prefix) && b.checked === checked)
                                            .map((b) => b.name.slice(prefix.length));
    return [JSON.stringify(named('enable_', false)), JSON.stringify(named('update_', true)), mode];
}"""
# Once the program restarts its page has a new Gradio app id: reload then.
RELOAD_AFTER_RESTART = """async (restarting) => {
    if (!restarting) return;
    const before = window.gradio_config && window.gradio_config.app_id;
    const url = new URL('gradio_api/app_id', location.href);
    for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        try {
            const answer = await fetch(url, {cache: 'no-store'});
            if (answer.ok && (await answer.json()).app_id !== before) { location.reload(); return; }
        } catch (e) { /* down while it restarts */ }
    }
}"""


def _link(url: str) -> str:
    """The address as a link when it is a web address (a .git/config may hold anything)."""
    text = html.escape(url)
    if url.startswith(("https://", "http://")):
        return f'<a href="{text}" target="_blank" rel="noopener noreferrer">{text}</a>'
    return text


def table_html(found: list[Extension], statuses: Mapping[str, str], updates: Mapping[str, UpdateCheck],
               where: Path, changeable: bool) -> str:
    """A1111's table (id "extensions"): a checkbox `enable_<name>` per extension, `update_<name>` where an update
    was found."""
    if not found:
        return f"<p>No extensions in <code>{html.escape(str(where))}</code>.</p>"
    off = "" if changeable else " disabled"
    rows = []
    for e in found:
        name = html.escape(e.name)
        status = html.escape(statuses.get(e.name, ""))
        if status.startswith("failed"):
            status = f"<span class='error'>{status}</span>"
        update = updates.get(e.name)
        if update is not None:
            status += " — " + (f"<label><input type='checkbox' name='update_{name}' checked{off}> "
                               f"{html.escape(update.status)}: update on Apply</label>" if update.can_update
                               else html.escape(update.status))
        checked = " checked" if e.enabled else ""
        rows.append(f"<tr><td><label><input type='checkbox' name='enable_{name}'{checked}{off}> {name}</label></td>"
                    f"<td>{'built-in' if e.is_builtin else _link(e.url) or '—'}</td><td>{html.escape(e.branch)}</td>"
                    f"<td>{html.escape(e.commit)}</td><td>{html.escape(e.modified)}</td>"
                    f"<td class='extension_status'>{status}</td></tr>")
    return ("<table id='extensions'><thead><tr>"
            "<th><abbr title='Uncheck to disable the extension; it takes effect with Apply and restart UI'>"
            "Extension</abbr></th><th>URL</th><th>Branch</th><th>Version</th><th>Date</th><th>Status</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _names(names_json: str) -> list[str]:
    names = json.loads(names_json or "[]")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected a list of extension names, got {names_json!r}")
    return names


def _message(text: str, error: bool = False) -> str:
    return f"<p class='{'error' if error else 'extensions-message'}'>{html.escape(text)}</p>"


@dataclass
class ExtensionsTab:
    """What the tab shows and does; `build` puts it on the page. `install_errors`: run_installers' result at
    start; `load_errors`: the script loader's {extension name: error}, asked each time the table is drawn;
    `stamps_file`: run_installers' at start (default user_dir/.installed.json), for an extension installed here."""
    user_dir: Path
    options: Options
    save_settings: Callable[[], None]
    restart: Callable[[], None]
    args: argparse.Namespace
    load_errors: Callable[[], Mapping[str, str]] = dict
    install_errors: Mapping[str, str] = field(default_factory=dict)
    builtin_dir: Path = extensions.BUILTIN_DIR
    stamps_file: Path | None = None
    updates: dict[str, UpdateCheck] = field(default_factory=dict)  # the last "Check for updates"
    installed_now: set[str] = field(default_factory=set)  # not loaded before the restart

    @property
    def changeable(self) -> bool:
        return not self.args.disable_extension_access

    def found(self) -> list[Extension]:
        return extensions.discover(self.builtin_dir, self.user_dir, self.options)

    def notes(self) -> str:
        """What is off and why, above the table."""
        notes = [] if self.changeable else [ACCESS_REFUSED]
        mode = extensions.switched_off(self.options, self.args)
        if self.args.disable_all_extensions:
            notes.append("--disable-all-extensions: no extension is loaded.")
        elif self.args.disable_extra_extensions:
            notes.append("--disable-extra-extensions: only the built-in extensions are loaded.")
        elif mode != "none":
            notes.append(f'"Disable all extensions" is set to "{mode}": set it to "none" to load all the checked '
                         "extensions again.")
        return "".join(_message(n, error=n == ACCESS_REFUSED) for n in notes)

    def table(self) -> str:
        found = self.found()
        errors = {**self.install_errors}
        for name, error in self.load_errors().items():
            errors[name] = f"{errors[name]}; {error}" if name in errors else error
        statuses = extensions.extension_statuses(found, extensions.switched_off(self.options, self.args), errors)
        for name in self.installed_now:
            if statuses.get(name) == "ok":
                statuses[name] = "installed: loaded after Apply and restart UI"
        return table_html(found, statuses, self.updates, self.user_dir, self.changeable)

    def current(self) -> tuple[str, str, str]:
        """Notes, table and "Disable all extensions" as they are now (for the page's load event)."""
        return self.notes(), self.table(), self.options.disable_all_extensions

    def apply(self, disabled_json: str, update_json: str, mode: str) -> tuple[str, bool]:
        """Update the ticked extensions, save disabled_extensions and disable_all_extensions, and restart.
        Returns (message, whether the program restarts)."""
        if not self.changeable:
            return _message(ACCESS_REFUSED, error=True), False
        if self.args.freeze_settings:
            return _message("Settings are frozen (--freeze-settings): extensions cannot be enabled or "
                            "disabled.", error=True), False
        try:
            disabled = Options.check("disabled_extensions", json.loads(disabled_json or "[]"))
            to_update = set(_names(update_json))
            mode = Options.check("disable_all_extensions", mode)
        except (ValueError, SettingError) as e:
            return _message(f"Nothing was changed: {e}", error=True), False
        failures = []
        for extension in (e for e in self.found() if e.name in to_update):
            try:
                extensions.update_extension(extension)
                self.updates.pop(extension.name, None)
            except ExtensionError as e:
                failures.append(str(e))
        self.options.disabled_extensions = disabled
        self.options.disable_all_extensions = mode
        try:
            self.save_settings()
        except OSError as e:
            return _message(f"The choice could not be saved: {e}", error=True), False
        if failures:
            return _message("Saved, but not restarting: " + "; ".join(failures), error=True), False
        log.info("Extensions tab: disabled %s, 'Disable all extensions' %s; restarting", disabled or "none", mode)
        self.restart()
        return _message("Saved. Restarting: the page reloads when the program is back."), True

    def check_updates(self) -> tuple[str, str]:
        """(table, message) after asking each git clone's remote for new commits."""
        if not self.changeable:
            return self.table(), _message(ACCESS_REFUSED, error=True)
        found = self.found()
        self.updates = extensions.check_for_updates(found)
        if not self.updates:
            return self.table(), _message("None of the extensions is a git clone: there is nothing to check.")
        unknown = sum(not c.can_update and c.status != "latest" for c in self.updates.values())
        newer = sum(c.can_update for c in self.updates.values())
        text = (f"Checked {len(self.updates)}: {newer} can be updated (ticked in the table; Apply and restart UI "
                f"updates them)" + (f", {unknown} could not be checked (see the table)" if unknown else "") + ".")
        return self.table(), _message(text, error=bool(unknown))

    def install_from_url(self, url: str, branch: str, name: str) -> tuple[str, str]:
        """(table, message) after git clone."""
        if not self.changeable:
            return self.table(), _message(ACCESS_REFUSED, error=True)
        if not (url or "").strip():
            return self.table(), _message("Give the address of the extension's git repository.", error=True)
        try:
            target = extensions.clone_extension(url, self.user_dir, name or "", branch or "", self._taken())
        except ExtensionError as e:
            return self.table(), _message(str(e), error=True)
        return self._installed(target)

    def install_from_folder(self, folder: str, name: str) -> tuple[str, str]:
        """(table, message) after copying a folder of this computer."""
        if not self.changeable:
            return self.table(), _message(ACCESS_REFUSED, error=True)
        if self.args.hide_ui_dir_config:
            return self.table(), _message(FOLDERS_REFUSED, error=True)
        if not (folder or "").strip():
            return self.table(), _message("Give the path of the extension's folder.", error=True)
        try:
            target = extensions.copy_extension(Path(folder.strip()), self.user_dir, name or "", self._taken())
        except ExtensionError as e:
            return self.table(), _message(str(e), error=True)
        return self._installed(target)

    def _taken(self) -> set[str]:
        return {e.name for e in self.found()}

    def _installed(self, target: Path) -> tuple[str, str]:
        """Run the new extension's install.py now (as A1111 does) and say what happened."""
        self.installed_now.add(target.name)
        new = next(e for e in extensions.list_extensions(self.user_dir) if e.name == target.name)
        stamps = self.stamps_file or self.user_dir / extensions.INSTALL_STAMPS
        error = extensions.run_installers([new], stamps).get(new.name)
        if error:
            return self.table(), _message(f"Installed {target.name} into {target}, but {error}. It is tried again "
                                          "when the program restarts.", error=True)
        return self.table(), _message(f"Installed {target.name} into {target}. Click Apply and restart UI on the "
                                      "Installed tab to load it.")


@dataclass
class ExtensionsPage:
    """The built tab: wire `current` to the page's load event with `outputs` (as the Settings tab's), so that a
    reload shows what is on disk and in the settings now."""
    current: Callable[[], tuple[str, str, str]]
    outputs: list


def build(tab: ExtensionsTab) -> ExtensionsPage:
    """The tab's content, inside the page's Extensions tab."""
    notes = gr.HTML(tab.notes(), elem_id="extensions_notes")
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="installed"):
            with gr.Row(elem_id="extensions_installed_top"):
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply",
                                  interactive=tab.changeable)
                check = gr.Button("Check for updates", elem_id="extensions_check", interactive=tab.changeable)
                disable_all = gr.Radio(list(EXTENSION_SWITCH_OFF), value=tab.options.disable_all_extensions,
                                       label="Disable all extensions", elem_id="extensions_disable_all",
                                       interactive=tab.changeable)
                disabled_list = gr.Textbox(visible=False, elem_id="extensions_disabled_list")
                update_list = gr.Textbox(visible=False, elem_id="extensions_update_list")
                restarting = gr.Checkbox(visible=False, elem_id="extensions_restarting")
            result = gr.HTML(elem_id="extensions_result")
            table = gr.HTML("Loading...", elem_id="extensions_installed_html")  # filled by the page's load event
        with gr.Tab("Install from URL", id="install_from_url"):
            url = gr.Textbox(label="URL for extension's git repository", elem_id="extension_install_url")
            branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                                elem_id="extension_install_branch")
            url_name = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                  elem_id="extension_install_dirname")
            install_url = gr.Button("Install", variant="primary", elem_id="extension_install_button",
                                    interactive=tab.changeable)
            url_result = gr.HTML(elem_id="extension_install_result")
        with gr.Tab("Install from a folder", id="install_from_folder",
                    visible=not tab.args.hide_ui_dir_config):
            folder = gr.Textbox(label="Folder of this computer", placeholder="e.g. /home/me/my-extension",
                                elem_id="extension_install_folder")
            folder_name = gr.Textbox(label="Local directory name", placeholder="Leave empty for the folder's name",
                                     elem_id="extension_install_folder_dirname")
            install_folder = gr.Button("Install", variant="primary", elem_id="extension_install_folder_button",
                                       interactive=tab.changeable)
            folder_result = gr.HTML(elem_id="extension_install_folder_result")

    apply.click(tab.apply, inputs=[disabled_list, update_list, disable_all], outputs=[result, restarting],
                js=COLLECT_CHECKBOXES, api_visibility="private"
                ).then(None, inputs=restarting, js=RELOAD_AFTER_RESTART, api_visibility="private")
    check.click(tab.check_updates, outputs=[table, result], api_visibility="private")
    install_url.click(tab.install_from_url, inputs=[url, branch, url_name], outputs=[table, url_result],
                      api_visibility="private")
    install_folder.click(tab.install_from_folder, inputs=[folder, folder_name], outputs=[table, folder_result],
                         api_visibility="private")
    return ExtensionsPage(tab.current, [notes, table, disable_all])
