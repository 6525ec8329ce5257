"""The meshproxy format's version, apart from the models (config.py), so the
compiler's lowering can name it without building every pydantic model."""

FORMAT_VERSION = 3
