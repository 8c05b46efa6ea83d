"""modcompress's command line: the top layer above compress <- export <- serve <- bench.

The four console scripts (``compress``, ``export`` / ``modcompress-export``, ``serve``, ``bench``)
are grouped by what users type, the library packages by what they depend on. ``compress
quantize`` is typed as a compress command but calls ONNX Runtime quantization, which lives in
``export``; ``compress quickstart`` chains every stage. Keeping every command module here, above
all four library packages, lets each handler call the one library function it needs without any
library module importing a package to its right.
"""
