// Keys as in A1111, on the txt2img or img2img tab in view: Ctrl+Enter generates, Alt+Enter skips the current
// picture, Esc interrupts a running generation (not while a full-screen view or the Generate-forever menu is
// open, where Esc closes those).
const currentGenerationTab = () => ['txt2img', 'img2img'].find(
  (t) => document.getElementById('tab_' + t)?.offsetParent !== null);
const isGenerating = (tab) => /\d+%|Waiting/.test(document.getElementById(tab + '_progress')?.textContent || '');

document.addEventListener('keydown', (e) => {
  const tab = currentGenerationTab();
  if (!tab) return;
  if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
    document.getElementById(tab + '_generate')?.click();
    e.preventDefault();
  } else if (e.altKey && e.key === 'Enter') {
    document.getElementById(tab + '_skip')?.click();
    e.preventDefault();
  } else if (e.key === 'Escape' && !document.fullscreenElement && !document.getElementById('generate_forever_menu')
             && isGenerating(tab)) {
    document.getElementById(tab + '_interrupt')?.click();
  }
});

// img2img: the inpainting options only on the tabs that have a mask, however the tab got selected (a click,
// "Send to inpaint", a paste).
setInterval(() => {
  const selected = document.querySelector('#mode_img2img button[role="tab"][aria-selected="true"]');
  if (!selected) return;
  const masked = /^img2img_inpaint(_sketch|_upload)?_tab-button$/.test(selected.id);
  document.querySelectorAll('#img2img_inpaint_options').forEach((o) => { o.style.display = masked ? '' : 'none'; });
}, 300);
