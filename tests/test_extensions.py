"""The Extensions tab's listing of extensions/: git clones with their remote, branch and commit, plain folders."""
from modules.extensions import list_extensions
from modules.ui.extensions import table_html


def fake_clone(folder, url, branch, commit, packed=False):
    git = folder / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "config").write_text(f'[core]\n\tbare = false\n[remote "origin"]\n\turl = {url}\n'
                                f'\tfetch = +refs/heads/*:refs/remotes/origin/*\n')
    (git / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    if packed:
        (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{commit} refs/heads/{branch}\n")
    else:
        (git / "refs" / "heads" / branch).write_text(commit + "\n")
    (folder / "install.py").write_text("print('never run')\n")


def test_lists_clones_and_plain_folders(tmp_path):
    fake_clone(tmp_path / "sd-webui-controlnet", "https://github.com/Mikubill/sd-webui-controlnet.git", "main",
               "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678")
    fake_clone(tmp_path / "adetailer", "https://github.com/Bing-su/adetailer", "dev", "ffeeddcc" * 5, packed=True)
    (tmp_path / "my-own").mkdir()
    (tmp_path / "my-own" / "scripts").mkdir()
    (tmp_path / "notes.txt").write_text("not an extension")
    found = {e.name: e for e in list_extensions(tmp_path)}
    assert set(found) == {"sd-webui-controlnet", "adetailer", "my-own"}
    assert found["sd-webui-controlnet"].url.endswith("sd-webui-controlnet.git")
    assert (found["sd-webui-controlnet"].branch, found["sd-webui-controlnet"].commit) == ("main", "a1b2c3d4")
    assert (found["adetailer"].branch, found["adetailer"].commit) == ("dev", "ffeeddcc")
    assert found["my-own"].url == "" and found["my-own"].commit == ""
    html = table_html(tmp_path)
    assert "sd-webui-controlnet" in html and "a1b2c3d4" in html and "<script" not in html


def test_names_are_escaped_and_an_empty_folder_says_so(tmp_path):
    assert "No extensions" in table_html(tmp_path / "missing")
    (tmp_path / "<i>odd").mkdir()
    assert "&lt;i&gt;odd" in table_html(tmp_path) and "<i>" not in table_html(tmp_path)
