// Ctrl+Enter in a prompt box presses that tab's Generate button, as in A1111.
document.addEventListener('keydown', (e) => {
  if (!(e.ctrlKey || e.metaKey) || e.key !== 'Enter') return;
  const box = e.target.closest('[id$="_prompt"], [id$="_neg_prompt"]');
  if (!box) return;
  const tab = box.id.startsWith('img2img') ? 'img2img' : 'txt2img';
  document.getElementById(tab + '_generate')?.click();
  e.preventDefault();
});
