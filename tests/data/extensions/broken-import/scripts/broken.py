"""Test extension: broken on purpose. Its import fails; the program must go on without it."""
import this_module_does_not_exist  # noqa: F401
