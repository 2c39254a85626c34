// Extra-network cards (modules/ui/networks.py): a click on a LoRA or embedding card adds its text to the prompt
// (a second click takes it out), a checkpoint card hands its title to the page to switch to it; the search box
// filters the cards. The listeners are delegated, so re-rendered cards work too.
window.toggleInPrompt = (box, text) => {
  const value = box.value;
  if (value.includes(text)) {
    box.value = value.replace(text, '').replace(/ {2,}/g, ' ').replace(/,\s*,/g, ',').replace(/^[\s,]+|[\s,]+$/g, '');
  } else {
    const sep = value.trim() === '' ? '' : (/[\s,]$/.test(value) ? '' : ' ');
    box.value = value + sep + text;
  }
  box.dispatchEvent(new Event('input', {bubbles: true}));
};
document.addEventListener('click', (e) => {
  const card = e.target.closest('.extra-network-card');
  if (!card) return;
  const tab = card.dataset.tab;
  if (card.dataset.action === 'checkpoint') {
    const box = document.querySelector('#' + tab + '_extra_checkpoint textarea, #' + tab + '_extra_checkpoint input');
    if (!box) return;
    box.value = card.dataset.value;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    return;
  }
  const prompt = document.querySelector('#' + tab + '_prompt textarea');
  if (prompt) window.toggleInPrompt(prompt, card.dataset.value);
});
document.addEventListener('input', (e) => {
  const search = e.target.closest('.extra-network-search');
  if (!search) return;
  const query = e.target.value.trim().toLowerCase();
  const panel = search.closest('[id$="_extra_networks"]');
  panel.querySelectorAll('.extra-network-card').forEach((card) => {
    card.style.display = !query || card.dataset.search.includes(query) ? '' : 'none';
  });
});
