// Ctrl+Up / Ctrl+Down in a prompt box: emphasis of the selection (or the word or (group:w) at the cursor)
// goes up / down by 0.1, written as (text:1.1); at 1.0 the brackets go away.
const EMPHASIS_DELIMITERS = /[\s.,\/!?%^*;:{}=`~()\[\]<>|]/;
window.editEmphasis = (box, up) => {
  const t = box.value;
  let s = box.selectionStart, e = box.selectionEnd;
  const weightAfter = (i) => t.slice(i).match(/^:(-?\d+(?:\.\d+)?)\)/);
  if (s === e) {
    const open = t.lastIndexOf('(', s - 1), close = t.indexOf(')', s);
    if (open >= 0 && close >= 0 && !t.slice(open + 1, s).includes(')') && !t.slice(s, close).includes('(')
        && /:-?\d+(?:\.\d+)?$/.test(t.slice(open + 1, close))) {
      s = open + 1; e = t.lastIndexOf(':', close);
    } else {
      while (s > 0 && !EMPHASIS_DELIMITERS.test(t[s - 1])) s--;
      while (e < t.length && !EMPHASIS_DELIMITERS.test(t[e])) e++;
    }
  }
  while (s < e && /\s/.test(t[s])) s++;
  while (e > s && /\s/.test(t[e - 1])) e--;
  if (s === e) return false;
  const inner = t.slice(s, e);
  let weight = 1.0, from = s, to = e;
  const m = s > 0 && t[s - 1] === '(' ? weightAfter(e) : null;
  if (m) { weight = parseFloat(m[1]); from = s - 1; to = e + m[0].length; }
  weight = Math.round((weight + (up ? 0.1 : -0.1)) * 100) / 100;
  const text = weight === 1 ? inner : '(' + inner + ':' + weight + ')';
  box.setRangeText(text, from, to);
  const innerStart = weight === 1 ? from : from + 1;
  box.setSelectionRange(innerStart, innerStart + inner.length);
  box.dispatchEvent(new Event('input', {bubbles: true}));
  return true;
};
document.addEventListener('keydown', (e) => {
  if (!(e.ctrlKey || e.metaKey) || (e.key !== 'ArrowUp' && e.key !== 'ArrowDown')) return;
  if (e.target.tagName !== 'TEXTAREA' || !e.target.closest('[id$="_prompt"], [id$="_neg_prompt"]')) return;
  if (window.editEmphasis(e.target, e.key === 'ArrowUp')) e.preventDefault();
});
