// applyLocalization replaces English UI text (text nodes and placeholders) by the chosen translation,
// now and in whatever the page adds later. The page calls it once the translation has loaded.
window.applyLocalization = (dict) => {
  if (!dict || !Object.keys(dict).length) return;
  window.localizationDict = dict;
  document.querySelectorAll('[data-hint-key]').forEach((b) => { b.title = window.hintFor(b.dataset.hintKey); });
  const translate = (text) => {
    const key = text.trim();
    return Object.prototype.hasOwnProperty.call(dict, key) ? text.replace(key, dict[key]) : null;
  };
  const visit = (root) => {
    if (root.nodeType === 3) {
      const t = translate(root.nodeValue);
      if (t !== null) root.nodeValue = t;
      return;
    }
    if (root.nodeType !== 1 || ['SCRIPT', 'STYLE', 'TEXTAREA'].includes(root.tagName)) return;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.parentElement && ['SCRIPT', 'STYLE', 'TEXTAREA'].includes(n.parentElement.tagName)) continue;
      const t = translate(n.nodeValue);
      if (t !== null) n.nodeValue = t;
    }
    [root, ...root.querySelectorAll('[placeholder]')].forEach((e) => {
      if (!e.getAttribute || !e.getAttribute('placeholder')) return;
      const t = translate(e.getAttribute('placeholder'));
      if (t !== null) e.setAttribute('placeholder', t);
    });
  };
  visit(document.body);
  new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(visit)))
    .observe(document.body, {childList: true, subtree: true});
};
