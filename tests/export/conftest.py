"""Fixtures for the export tests (artifacts built in code, see tests/export/helpers.py)."""

from tests.export.helpers import text_onnx, tiny_teacher, trained_onnx, trained_teacher  # noqa: F401 - fixtures
