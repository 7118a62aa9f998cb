"""Child programs the tests run as real processes, one per file: see each file's docstring.

They find codexauth and support.py through the PYTHONPATH that support.py_env() sets, never
through the working directory.
"""
