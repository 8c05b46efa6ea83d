"""The Python-backend models that `export triton` copies into a Triton model repository.

Each file here is copied as it is (``tokenizer_model.py`` -> ``NAME_tokenizer/1/model.py`` with
``wordpiece.py`` beside it; ``postprocess_model.py`` -> ``NAME_postprocess/1/model.py``) and runs in
the stock Triton container's Python backend, which has numpy and ``triton_python_backend_utils``
but not this toolkit: these files import only the standard library, numpy, Triton's module and
each other (relatively; Triton imports a model as the package ``<version>.model``).
"""
