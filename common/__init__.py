"""Small utilities shared by every matscreen package (no science, no ray, no mlflow)."""
from common.atomic import atomic_path, atomic_write_text, atomic_write_bytes, check_writable
from common.errors import InputError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "check_writable", "InputError"]
