// "Generate forever" from the Generate button's right-click menu, as in A1111; Interrupt also ends it.
window.generateForever = {};
window.generateForeverNext = (tab) => {
  if (window.generateForever[tab]) setTimeout(() => document.getElementById(tab + '_generate')?.click(), 100);
};
window.setGenerateForever = (tab, on) => {
  window.generateForever[tab] = on;
  const button = document.getElementById(tab + '_generate');
  button?.classList.toggle('generate-forever', on);
  if (button) button.title = on ? 'Generating forever: right-click to stop' : '';
};
document.addEventListener('contextmenu', (e) => {
  const button = e.target.closest('#txt2img_generate, #img2img_generate');
  if (!button) return;
  e.preventDefault();
  const tab = button.id.replace('_generate', '');
  document.getElementById('generate_forever_menu')?.remove();
  const menu = document.createElement('div');
  menu.id = 'generate_forever_menu';
  menu.style.cssText = `position:fixed;left:${e.clientX}px;top:${e.clientY}px;z-index:1000`;
  const item = document.createElement('button');
  item.textContent = window.generateForever[tab] ? 'Cancel generate forever' : 'Generate forever';
  item.onclick = () => {
    menu.remove();
    const on = !window.generateForever[tab];
    window.setGenerateForever(tab, on);
    if (on) button.click();
  };
  menu.appendChild(item);
  document.body.appendChild(menu);
  // closed by the user's next press elsewhere; not by a click event, which the next round's own (scripted)
  // Generate click also sends
  const close = (ev) => {
    if (menu.contains(ev.target)) return;
    menu.remove();
    document.removeEventListener('pointerdown', close);
  };
  setTimeout(() => document.addEventListener('pointerdown', close), 0);
});
document.addEventListener('click', (e) => {
  const interrupt = e.target.closest('#txt2img_interrupt, #img2img_interrupt');
  if (interrupt) window.setGenerateForever(interrupt.id.replace('_interrupt', ''), false);
});
