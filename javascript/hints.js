// Tooltips for the page's buttons, icon buttons above all (A1111 has one on each). English here; the chosen
// localization translates them like any other text (window.localizationDict, see localization.js).
const HINTS = {
  '⇅': 'Swap width and height',
  '↺': 'Back to the default value',
  '🎲': 'Random seed: set the seed to -1 so that every picture gets a new one',
  '♻️': 'Reuse the seed of the picture shown in the gallery',
  '↙️': 'Fill the fields from generation parameters pasted into the prompt box, or, with an empty prompt, '
    + 'from the last generation',
  '📋': 'Apply the chosen styles to the prompts and clear the style choice',
  '🔄': 'Read the list again from disk',
  '✏️': 'Edit the chosen style, or make a new one from the prompts',
  '📂': 'Open the output folder in the file manager',
  '💾 Save': 'Save the selected picture (or all of them) with its parameters to the Save folder (log/images)',
  '🗃️ Zip': 'Put all pictures of the gallery into one zip file to download',
  'Generate': 'Generate (Ctrl+Enter). Right-click for "Generate forever"',
  'Interrupt': 'Stop now (Esc); the pictures finished so far are kept',
  'Skip': 'Skip the current picture and go on with the next of the batch (Alt+Enter)',
  'Apply settings': 'Check and save the changed settings; they take effect at once',
  'Reload UI': 'Reload the page, showing settings that need a reload',
};

window.hintFor = (text) => {
  const hint = HINTS[text.trim()];
  if (!hint) return null;
  const dict = window.localizationDict || {};
  return Object.prototype.hasOwnProperty.call(dict, hint) ? dict[hint] : hint;
};

(() => {
  const addHints = (root) => {
    if (root.nodeType !== 1) return;
    const buttons = root.tagName === 'BUTTON' ? [root] : root.querySelectorAll('button');
    buttons.forEach((b) => {
      if (b.title || b.getAttribute('role') === 'tab') return;
      const hint = window.hintFor(b.dataset.hintKey || b.textContent);
      if (hint) {
        b.dataset.hintKey = b.dataset.hintKey || b.textContent.trim();
        b.title = hint;
      }
    });
  };
  const start = () => {
    addHints(document.body);
    new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(addHints)))
      .observe(document.body, {childList: true, subtree: true});
  };
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
