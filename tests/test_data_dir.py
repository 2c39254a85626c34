"""--data-dir moves the user's folders; the shipped demo checkpoint, LoRA and embedding stay available."""
from modules.options import Options
from modules.paths import BUILTIN_EMBEDDINGS_DIR, BUILTIN_LORA_DIR, DEMO_CHECKPOINT


def test_the_built_in_lora_and_embedding_are_found_with_any_data_dir(make_services):
    services = make_services(Options())
    loras = services.context.loras
    assert loras.folders[0].is_relative_to(services.paths.data_dir) and BUILTIN_LORA_DIR in loras.folders
    assert "demo-night" in [f.name for f in loras.refresh()]
    embeddings = services.context.embeddings
    assert embeddings.folder.is_relative_to(services.paths.data_dir)
    assert BUILTIN_EMBEDDINGS_DIR in embeddings.folders and "demo-sunset" in embeddings.all
    assert DEMO_CHECKPOINT in [c.path for c in services.models.checkpoints]
