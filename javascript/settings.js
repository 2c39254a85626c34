// Settings the page's scripts read (A1111's `opts`): handed over on every page load and after each change.
// `opts` is declared in script.js (loaded before this file); its onOptionsAvailable / onOptionsChanged callbacks
// run here, as A1111's run when its settings arrive.
window.setPageOpts = (o) => {
  const wasEmpty = !Object.keys(window.opts).length;
  window.opts = o || {};
  document.querySelectorAll('[id$="_token_counter"]').forEach((el) => {
    el.style.display = window.opts.disable_token_counters ? 'none' : '';
  });
  // "Hidden UI tabs": their buttons go (Gradio 6 ignores a tab's visibility update)
  const hidden = new Set(window.opts.hidden_tab_ids || []);
  document.querySelectorAll('button[role="tab"][id$="-button"]').forEach((b) => {
    const id = b.id.slice(0, -'-button'.length);
    if (hidden.has(id)) {
      b.style.display = 'none';
      b.dataset.hiddenBySettings = '1';
    } else if (b.dataset.hiddenBySettings) {
      b.style.display = '';
      delete b.dataset.hiddenBySettings;
    }
  });
  if (wasEmpty && Object.keys(window.opts).length) executeCallbacks(optionsAvailableCallbacks);
  executeCallbacks(optionsChangedCallbacks);
};

// The Settings tab's search box: only settings whose label, hint or key contains the words stay visible,
// and sections without one are hidden.
function filterSettings(query) {
  const words = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
  document.querySelectorAll('#settings .settings-section').forEach((section) => {
    let shown = 0;
    section.querySelectorAll('[id^="setting_"]').forEach((item) => {
      const text = (item.textContent + ' ' + item.id.slice('setting_'.length)).toLowerCase();
      const match = words.every((w) => text.includes(w));
      item.style.display = match ? '' : 'none';
      shown += match ? 1 : 0;
    });
    section.style.display = shown ? '' : 'none';
  });
}
document.addEventListener('input', (e) => {
  if (e.target.closest('#settings_search')) filterSettings(e.target.value);
});

// Progress in the window title, and the notification sound when a generation ends (both settings).
(() => {
  let title = null;
  let running = false;
  setInterval(() => {
    const bars = [...document.querySelectorAll('#txt2img_progress, #img2img_progress')];
    const text = bars.map((b) => b.textContent).find((t) => /\d+%/.test(t));
    if (title === null) title = document.title;
    if (text && window.opts.show_progress_in_title !== false) {
      document.title = `[${text.match(/(\d+)%/)[1]}%] ${title}`;
    } else if (document.title !== title) {
      document.title = title;
    }
    if (running && !text && window.opts.notification_audio && window.opts.notification_file) {
      const sound = new Audio('notification.mp3');
      sound.volume = Math.min(Math.max((window.opts.notification_volume ?? 100) / 100, 0), 1);
      sound.play().catch(() => {}); // no notification.mp3, or the browser wants a click first
    }
    running = Boolean(text);
  }, 500);
})();
