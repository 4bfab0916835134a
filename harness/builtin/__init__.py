"""The composition root: `plugins.py` fills the registries (the built-in entries of `all_entries.py`,
a grid's `plugins:`, the entry-point group). Importing the package registers nothing, so a job that
only needs `plugins` imports no entry until it loads them."""
