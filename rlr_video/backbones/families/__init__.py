"""One file per model family; each registers itself with ``register_family`` (``../family.py``).

Every module here is imported the first time a family is looked up, so a new family is one new
file here (plus its test builder, a preset and docs).
"""
