"""Rules files: loading and validating them, watching their directories, and testing them (``worker test``).

:mod:`~worker.rulefiles.loading` parses YAML with line numbers, validates everything and compiles
the table the core evaluates; :mod:`~worker.rulefiles.directories` lists the files rules sources
name and fingerprints them; :mod:`~worker.rulefiles.testfiles` reads rules test files and
:mod:`~worker.rulefiles.testing` runs them through a fresh core.

May use: the core and the pure part of the actions. Loads no network, storage or SDK library, so
``validate``, ``explain`` and ``test`` run anywhere.
"""
