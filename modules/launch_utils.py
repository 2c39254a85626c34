"""A1111's `modules.launch_utils`, which newer extensions' install.py import: the same helpers as `launch`."""
from launch import (  # noqa: F401 - re-exported under A1111's module name
    commit_hash,
    dir_repos,
    git,
    git_clone,
    index_url,
    is_installed,
    python,
    repo_dir,
    run,
    run_pip,
    script_path,
)
