"""The benchmark test sets, prepared from the corpora's official distributions.

``test_sets`` names them (in the paper's column order) and prepares them, ``prepare`` writes a
set's Kaldi data dir, ``audio`` reads any of the corpora's audio formats at 16 kHz mono, and one
module per corpus lists a set's utterances from its on-disk layout.
"""
