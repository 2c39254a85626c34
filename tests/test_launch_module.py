"""A1111's `launch` module for extensions' install.py: what is installed, and pip that fails plainly offline."""
import json

from modules import extensions


def make_extension(root, name: str, install_py: str):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "install.py").write_text(install_py, encoding="utf-8")
    return next(e for e in extensions.list_extensions(root) if e.name == name)


def test_an_install_py_using_launch_runs_and_a_failing_pip_disables_its_extension(tmp_path):
    root = tmp_path / "extensions"
    fine = make_extension(root, "fine", (
        "import json, launch\n"
        "found = {'torch': launch.is_installed('torch'), 'gradio>=4': launch.is_installed('gradio>=4'),\n"
        "         'missing': launch.is_installed('no-such-package-xyz')}\n"
        "open('found.json', 'w').write(json.dumps(found))\n"))
    needs_pip = make_extension(root, "needs-pip", (
        "import launch\n"
        "if not launch.is_installed('no-such-package-xyz'):\n"
        "    launch.run_pip('install --no-index no-such-package-xyz', 'no-such-package-xyz')\n"))
    errors = extensions.run_installers([fine, needs_pip], tmp_path / "stamps.json")
    assert json.loads((root / "fine" / "found.json").read_text()) == {"torch": True, "gradio>=4": True,
                                                                       "missing": False}
    assert list(errors) == ["needs-pip"]
    assert "Couldn't install no-such-package-xyz" in errors["needs-pip"]
