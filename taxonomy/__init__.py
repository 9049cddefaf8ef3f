"""The taxonomy core: hierarchy arrays, paths, pooling, parsers and diff, shared by both science cores.

Pure Python and numpy, no Django. ``active_learning.core`` and ``quality.core`` import it and neither
reimplements what is here; ``annotation`` uses its parsers and diff to import taxonomies.
"""
