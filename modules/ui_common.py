"""A1111's `modules.ui_common`: helpers extensions import for their controls."""
from __future__ import annotations

from modules.ui import (  # noqa: F401 - re-exported under A1111's module name
    create_refresh_button,
    detect_image_size_symbol,
    refresh_symbol,
    save_style_symbol,
    switch_values_symbol,
)
from modules.ui_components import ToolButton  # noqa: F401
