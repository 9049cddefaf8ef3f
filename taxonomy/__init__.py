"""The taxonomy core, shared by both science cores: hierarchy arrays, paths, pooling, the
taxonomy file parsers and their diff.

Pure Python and numpy, no Django. ``active_learning.core`` and ``quality.core`` import it and
neither reimplements what is here; ``annotation`` imports taxonomies with its parsers and diff.

- :mod:`taxonomy.hierarchy`: the ``parents`` array conventions and the :class:`Hierarchy` view.
- :mod:`taxonomy.paths`: decisions along paths, top-down closure, the most probable path.
- :mod:`taxonomy.pooling`: worst-decision (EMA) pooling of per-decision scores.
- :mod:`taxonomy.formats`: parsing taxonomy files; :mod:`taxonomy.diff`: comparing two versions.
"""
