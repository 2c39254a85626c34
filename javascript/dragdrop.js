// A picture dropped on a prompt box fills its tab's fields from the parameters it holds, as in A1111. The file goes
// to the tab's hidden upload (#txt2img_prompt_image, #img2img_prompt_image), whose handler reads the infotext
// into the prompt box and pastes it like the ↙️ button.
(() => {
  const promptBox = (target) => target?.closest?.('#txt2img_prompt, #txt2img_neg_prompt, #img2img_prompt, '
                                                  + '#img2img_neg_prompt');
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');

  document.addEventListener('dragover', (e) => {
    if (!promptBox(e.target) || !hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });

  document.addEventListener('drop', (e) => {
    const box = promptBox(e.target);
    if (!box || !hasFiles(e)) return;
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith('image/'));
    if (!file) return;
    e.preventDefault();
    e.stopPropagation();
    const tab = box.id.startsWith('img2img') ? 'img2img' : 'txt2img';
    const input = document.querySelector(`#${tab}_prompt_image input[type=file]`);
    if (!input) return;
    const files = new DataTransfer();
    files.items.add(file);
    input.files = files.files;
    input.dispatchEvent(new Event('change', {bubbles: true}));
  });
})();
